// Watches the mounted secret files (PROXY_API_KEYS_FILE and the others that
// reload.ts applies) and says when one may have changed. Kubernetes updates a
// Secret volume in place by writing a new timestamped directory and swapping
// the `..data` symlink to it: the file's own name never changes, so the
// directory is watched, and a change to the file or to a `..`-entry of the
// atomic writer counts. A burst of events (a swap, an editor's write and
// rename) is one change, reported once the directory has been quiet for
// `debounceMs`, or at the latest after MAX_WAIT_FACTOR times that.
// A writer that edits a file in place can still be read mid-write: the quiet
// time narrows that, load.ts and settings.ts refuse what is visibly cut (an
// empty file, a statement that does not decode), and docs/operations.md asks
// for atomic replacement (rename), as the kubelet does.
// https://kubernetes.io/docs/concepts/configuration/secret/#mounted-secrets-are-updated-automatically
import { watch, type FSWatcher } from 'node:fs'
import { basename, dirname } from 'node:path'
import type { Logger } from 'pino'

export interface SecretFileWatchOptions {
  /** Called once per burst of changes, with one of the files that changed (or the directory). */
  onChange: (file: string) => void
  logger: Logger
  /** Quiet time before a burst counts as done (default 500 ms). */
  debounceMs?: number
}

/** A burst that never ends (a file appended to non-stop) is still reported, this many quiet times after it began. */
const MAX_WAIT_FACTOR = 10

export class SecretFileWatch {
  readonly #options: SecretFileWatchOptions
  readonly #debounceMs: number
  /** One watcher per directory, with the names in it that matter. */
  readonly #watched = new Map<string, { watcher: FSWatcher, names: Set<string> }>()
  #timer: NodeJS.Timeout | undefined
  #burstStartedAt = 0
  #changed = ''
  #closed = false

  constructor (options: SecretFileWatchOptions) {
    this.#options = options
    this.#debounceMs = options.debounceMs ?? 500
  }

  /** Watches exactly `files` from now on (after a reload, their paths may have changed). */
  watch (files: readonly string[]): void {
    if (this.#closed) return
    const wanted = new Map<string, Set<string>>()
    for (const file of files) {
      const names = wanted.get(dirname(file)) ?? new Set<string>()
      names.add(basename(file))
      wanted.set(dirname(file), names)
    }
    for (const [dir, entry] of this.#watched) {
      if (wanted.has(dir)) continue
      entry.watcher.close()
      this.#watched.delete(dir)
    }
    for (const [dir, names] of wanted) {
      const entry = this.#watched.get(dir)
      if (entry !== undefined) {
        entry.names = names
        continue
      }
      try {
        // persistent: false: a watch alone never keeps the process alive.
        const watcher = watch(dir, { persistent: false }, (_event, name) => { this.#seen(dir, name) })
        watcher.on('error', (err) => { this.#lost(dir, err) })
        this.#watched.set(dir, { watcher, names })
      } catch (err) {
        this.#options.logger.warn({ dir, reason: (err as NodeJS.ErrnoException).code }, 'cannot watch a secret file\'s directory: changes there apply on SIGHUP only')
      }
    }
  }

  close (): void {
    this.#closed = true
    clearTimeout(this.#timer)
    for (const { watcher } of this.#watched.values()) watcher.close()
    this.#watched.clear()
  }

  #seen (dir: string, name: string | Buffer | null): void {
    const entry = this.#watched.get(dir)
    const file = name === null ? undefined : name.toString()
    if (entry === undefined || (file !== undefined && !entry.names.has(file) && !file.startsWith('..'))) return
    const now = performance.now()
    if (this.#timer === undefined) {
      this.#burstStartedAt = now
      this.#changed = file !== undefined && entry.names.has(file) ? `${dir}/${file}` : dir
    }
    clearTimeout(this.#timer)
    const left = Math.max(0, Math.min(this.#debounceMs, this.#burstStartedAt + MAX_WAIT_FACTOR * this.#debounceMs - now))
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      if (!this.#closed) this.#options.onChange(this.#changed)
    }, left)
    this.#timer.unref()
  }

  /** The directory went away (or cannot be watched any more): stop; the next reload watches it again if it is back. */
  #lost (dir: string, err: Error): void {
    this.#watched.get(dir)?.watcher.close()
    this.#watched.delete(dir)
    this.#options.logger.warn({ dir, reason: (err as NodeJS.ErrnoException).code ?? err.name }, 'stopped watching a secret file\'s directory: changes there apply on SIGHUP only')
  }
}
