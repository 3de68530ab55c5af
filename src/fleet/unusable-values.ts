// Values the fleet can rebuild (the shared token, cached reports, rest
// markers) that are there but cannot be used: sealed with a key this
// instance does not hold, altered, or larger than their kind may be. Such a
// value is read as absent, so whoever takes the lock next overwrites it.
// Treating it as "Redis is down" instead would make this instance act alone
// for good and never write the shared state back. The credentials are the
// exception (shared-credentials.ts): there an unusable value is
// "unavailable", since they may only need the right key.
//
// Logged as a run: one warning when the first one is met, one line with the
// count once none has been met for a while; never one line per value.
import type { Logger } from 'pino'
import { isUnusableValue } from '../store/errors.js'
import type { StateStore } from '../store/state-store.js'

export const UNUSABLE = Symbol('unusable')

/** Default quiet span that ends a run of unusable values (as sealed-store.ts does for notices). */
const QUIET_AFTER_MS = 60_000

interface Run { since: number, count: number, quiet: NodeJS.Timeout | undefined }

export class RebuildableValues {
  readonly #store: StateStore
  readonly #log: Logger
  readonly #quietAfterMs: number
  #run: Run | undefined
  #total = 0

  constructor (store: StateStore, logger: Logger, options: { quietAfterMs?: number } = {}) {
    this.#store = store
    this.#log = logger
    this.#quietAfterMs = options.quietAfterMs ?? QUIET_AFTER_MS
  }

  /** Unusable values met so far (/admin/status). */
  get total (): number { return this.#total }

  /**
   * The value at `key`, undefined when absent, UNUSABLE when there but unusable;
   * store trouble rejects. `what` names the kind in the run's first line (e.g. 'the shared access token').
   */
  async read (key: string, maxBytes: number, what: string): Promise<Buffer | undefined | typeof UNUSABLE> {
    try {
      return await this.#store.get(key, maxBytes)
    } catch (err) {
      if (!isUnusableValue(err)) throw err
      this.#met(err, what)
      return UNUSABLE
    }
  }

  close (): void {
    clearTimeout(this.#run?.quiet)
  }

  /** Which key and why (the key id it was sealed with), never the value: at the start of a run; counted after. */
  #met (err: Error & { key: string }, what: string): void {
    this.#total++
    let run = this.#run
    if (run === undefined) {
      run = this.#run = { since: Date.now(), count: 0, quiet: undefined }
      this.#log.warn({ key: err.key, reason: err.message, code: 'code' in err ? err.code : undefined }, `${what} in the fleet's store cannot be used here: treated as absent, and overwritten by the next instance that rebuilds it; further ones are counted, not logged`)
    }
    run.count++
    clearTimeout(run.quiet)
    const ended = run
    run.quiet = setTimeout(() => {
      this.#run = undefined
      this.#log.info({ unusable: ended.count, forMs: Date.now() - ended.since }, 'no more values in the fleet\'s store that cannot be used here')
    }, this.#quietAfterMs)
    run.quiet.unref()
  }
}
