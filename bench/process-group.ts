// Child processes that never outlive their parent: each starts in its own
// process group (detached), is stopped as a group (an npm whose script left a
// node behind, a shell and its children), and every group still running is
// SIGKILLed, synchronously, when this process exits for any reason, a signal
// included (tap's per-file timeout ends a test file with SIGALRM). Start-up
// waits on readiness (a line of output, an HTTP answer) up to a deadline
// meant for a loaded machine, and fails with what the child printed.
// The tests use this through test/helpers/processes.ts; bench/ may not import
// test/, so it lives here.
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { onExit } from 'signal-exit'

/**
 * How long a child may take to become ready. An idle machine needs well under
 * a second; at load 20 on two cores a node process took 13 s to print one
 * line (issue 18). A deadline only costs time when something is broken.
 */
export const STARTUP_DEADLINE_MS = 90_000
/** How long a stopped group gets between the polite signal and SIGKILL. */
export const STOP_GRACE_MS = 15_000
/**
 * Every child carries this variable (the checkout it was started from), so
 * the suite's last check (test/no-leftover-processes.ts) can find what it left behind,
 * and tell it from what other checkouts on the machine are running.
 */
export const MARKER = 'CMU_PROXY_SPAWNED_BY'
export const CHECKOUT = checkout()

/** The folder with package.json, whether this runs from bench/ (tap) or dist-bench/bench/. */
function checkout (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir)
  return dir
}

export type Output = 'capture' | 'ignore' | 'inherit'

export interface SpawnOptions {
  /** The child's whole environment (default: this process's); MARKER is added. */
  env?: Record<string, string | undefined>
  cwd?: string
  /** capture (default): kept for output(), waitForOutput() and error messages. */
  stdout?: Output
  stderr?: Output
  /** A name for messages (default: the command and its first argument). */
  name?: string
}

export interface ExitStatus { code: number | null, signal: NodeJS.Signals | null }

const KEEP_CHARS = 256 * 1024

/** Groups not yet known to be gone, for the exit hook. */
const live = new Set<ProcessGroup>()
let hooked = false

function killAllNow (): void {
  for (const group of live) group.signal('SIGKILL')
}

/** A child process leading its own process group; see the module comment. */
export class ProcessGroup {
  readonly child: ChildProcess
  readonly pid: number
  readonly name: string
  /** Resolves when the leader exits (its children may live on: stop() waits for the group). */
  readonly exited: Promise<ExitStatus>
  #output = ''
  #stdout = ''
  #stderr = ''
  #status: ExitStatus | undefined

  constructor (command: string, args: string[], options: SpawnOptions = {}) {
    this.name = options.name ?? [command.split('/').at(-1), args[0]?.split('/').at(-1)].filter((s) => s !== undefined).join(' ')
    const mode = (output: Output | undefined): 'pipe' | 'ignore' | 'inherit' => output === 'capture' || output === undefined ? 'pipe' : output
    this.child = spawn(command, args, {
      cwd: options.cwd,
      env: { ...(options.env ?? process.env), [MARKER]: CHECKOUT },
      stdio: ['ignore', mode(options.stdout), mode(options.stderr)],
      detached: true
    })
    const failed = once(this.child, 'error').then(([err]) => { throw err as Error })
    failed.catch(() => {})
    if (this.child.pid === undefined) {
      // spawn failed (ENOENT, EACCES): 'error' follows; nothing to kill.
      this.pid = -1
      this.exited = failed.catch((err: Error) => { this.#output += `${err.message}\n`; return { code: null, signal: null } })
      return
    }
    this.pid = this.child.pid
    live.add(this)
    if (!hooked) {
      onExit(killAllNow, { alwaysLast: true })
      hooked = true
    }
    const tail = (text: string, chunk: Buffer): string => (text + chunk.toString()).slice(-KEEP_CHARS)
    this.child.stdout?.on('data', (chunk: Buffer) => { this.#stdout = tail(this.#stdout, chunk); this.#output = tail(this.#output, chunk) })
    this.child.stderr?.on('data', (chunk: Buffer) => { this.#stderr = tail(this.#stderr, chunk); this.#output = tail(this.#output, chunk) })
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.#status = { code, signal }
        // Nothing left of the group: the exit hook has nothing to kill (and no pgid to reach once reused).
        if (groupMembers(this.pid) === 0) live.delete(this)
        resolve(this.#status)
      })
    })
  }

  /** What the child wrote to its captured streams so far, interleaved (the last 256 KB). */
  output (): string {
    return this.#output
  }

  stdout (): string {
    return this.#stdout
  }

  stderr (): string {
    return this.#stderr
  }

  running (): boolean {
    return this.pid > 0 && this.#status === undefined
  }

  /** Sends `signal` to every process of the group; a group already gone is no error. */
  signal (signal: NodeJS.Signals): void {
    if (this.pid <= 0) return
    try {
      process.kill(-this.pid, signal)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
      if (this.#status !== undefined) live.delete(this)
    }
  }

  /**
   * Signals the group, waits until the leader and every other member are
   * gone, SIGKILLs the group after `graceMs`; resolves with the leader's exit.
   */
  async stop (signal: NodeJS.Signals = 'SIGTERM', graceMs = STOP_GRACE_MS): Promise<ExitStatus> {
    this.signal(signal)
    const timer = setTimeout(() => { this.signal('SIGKILL') }, graceMs)
    try {
      const status = await this.exited
      await this.#groupGone(graceMs)
      return status
    } finally {
      clearTimeout(timer)
    }
  }

  /** Resolves with the first match of `pattern` in the output; rejects, with the output, if the child exits or the deadline passes first. */
  async waitForOutput (pattern: RegExp, deadlineMs = STARTUP_DEADLINE_MS): Promise<RegExpExecArray> {
    const streams = [this.child.stdout, this.child.stderr].filter((s) => s !== null)
    let onData = (): void => {}
    try {
      return await this.waitUntil(new Promise<RegExpExecArray>((resolve) => {
        onData = () => {
          const match = pattern.exec(this.#output)
          if (match !== null) resolve(match)
        }
        for (const stream of streams) stream.on('data', onData)
        onData()
      }), `printed ${String(pattern)}`, deadlineMs)
    } finally {
      for (const stream of streams) stream.off('data', onData)
    }
  }

  /** Resolves once GET `url` answers 2xx (or `accept(status)`); rejects, with the output, if the child exits or the deadline passes first. */
  async waitForHttp (url: string, { deadlineMs = STARTUP_DEADLINE_MS, accept = (status: number) => status >= 200 && status < 300 } = {}): Promise<void> {
    let polling = true
    try {
      await this.waitUntil((async () => {
        while (polling) {
          const status = await fetch(url, { signal: AbortSignal.timeout(5_000) }).then(async (r) => { await r.body?.cancel(); return r.status }, () => 0)
          if (accept(status)) return
          await new Promise((resolve) => setTimeout(resolve, 50))
        }
      })(), `answered GET ${url}`, deadlineMs)
    } finally {
      polling = false
    }
  }

  /** The leader's exit; rejects, with the output, if `deadlineMs` passes first. */
  async exitedWithin (deadlineMs = STARTUP_DEADLINE_MS): Promise<ExitStatus> {
    return await this.#within(this.exited, 'exited', deadlineMs, false)
  }

  /** Resolves with `work`; rejects, with the output, if the child exits or `deadlineMs` passes first (`what` it has not done, for the message). */
  async waitUntil<T> (work: Promise<T>, what: string, deadlineMs = STARTUP_DEADLINE_MS): Promise<T> {
    return await this.#within(work, what, deadlineMs, true)
  }

  async #within<T> (work: Promise<T>, what: string, deadlineMs: number, failOnExit: boolean): Promise<T> {
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(this.#failure(`has not ${what} within ${deadlineMs / 1000} s`)) }, deadlineMs)
    })
    const exit = failOnExit
      ? this.exited.then((status): never => { throw this.#failure(`exited (code ${String(status.code)}, signal ${String(status.signal)}) before it ${what}`) })
      : deadline
    try {
      return await Promise.race([work, deadline, exit])
    } finally {
      clearTimeout(timer)
    }
  }

  #failure (what: string): Error {
    const output = this.#output.trim()
    return new Error(`${this.name} (pid ${this.pid}) ${what}; its output:\n${output === '' ? '(none)' : output}`)
  }

  /** Polls until no process of the group is left (zombies do not count), SIGKILLing it once `graceMs` have passed. */
  async #groupGone (graceMs: number): Promise<void> {
    const started = Date.now()
    let killed = false
    while (groupMembers(this.pid) > 0) {
      if (!killed && Date.now() - started > graceMs) {
        this.signal('SIGKILL')
        killed = true
      }
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    live.delete(this)
  }
}

/** How many live (not zombie) processes are in group `pgid`. */
function groupMembers (pgid: number): number {
  try {
    process.kill(-pgid, 0)
  } catch {
    return 0
  }
  // kill(2) also reaches zombies, which no signal removes: count from /proc (Linux) when there is one.
  const all = listProcesses()
  return all === undefined ? 1 : all.filter((p) => p.pgid === pgid && p.state !== 'Z').length
}

export interface ProcessInfo { pid: number, ppid: number, pgid: number, state: string, args: string }

/** Every process on the machine, from /proc (`args` only `withArgs`); undefined where there is no /proc. */
export function listProcesses (withArgs = false): ProcessInfo[] | undefined {
  let entries: string[]
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e))
  } catch {
    return undefined
  }
  const found: ProcessInfo[] = []
  for (const entry of entries) {
    try {
      // After the command, which may hold spaces and parentheses: state ppid pgrp ...
      const [state = '', ppid, pgid] = readFileSync(join('/proc', entry, 'stat'), 'utf8').split(') ').at(-1)?.split(' ') ?? []
      const args = withArgs ? readFileSync(join('/proc', entry, 'cmdline'), 'utf8').split('\0').join(' ').trim() : ''
      found.push({ pid: Number(entry), ppid: Number(ppid), pgid: Number(pgid), state, args })
    } catch {
      // Gone between the listing and the read.
    }
  }
  return found
}

/** Starts `command` in its own process group. */
export function spawnGroup (command: string, args: string[], options: SpawnOptions = {}): ProcessGroup {
  return new ProcessGroup(command, args, options)
}

/** Runs `command` to its end (in its own group), stopping it if it outlasts `deadlineMs`. */
export async function runToEnd (command: string, args: string[], options: SpawnOptions & { deadlineMs?: number } = {}): Promise<ExitStatus & { stdout: string, stderr: string }> {
  const group = spawnGroup(command, args, options)
  const closed = once(group.child, 'close').catch(() => {})
  try {
    const status = await group.exitedWithin(options.deadlineMs)
    // Whatever it left running goes too; then its streams end and the last output is in.
    await group.stop('SIGKILL')
    await closed
    return { ...status, stdout: group.stdout(), stderr: group.stderr() }
  } finally {
    await group.stop('SIGKILL')
  }
}
