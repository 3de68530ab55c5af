// The fleet's notices. One pub/sub channel per application carries every
// notice ("a token landed", "this report is stored", "that attempt failed",
// "the lock is free"), each under a topic; this process subscribes once, so
// a waiter never misses a notice between asking for a lock and subscribing
// (turns.ts registers the waiter before it tries the lock). A notice that
// does not open here (sealed with another key list) cannot say whom it is
// for: every waiter is woken to look at the shared state again, so nobody
// waits on a notice that will never be read.
import type { Logger } from 'pino'
import { StoreUnavailableError } from '../store/errors.js'
import type { StateStore } from '../store/state-store.js'

export type Notice = Record<string, unknown>

/** What a waiter heard: a notice on its topic, one that could not be opened, or nothing within its wait. */
export type Heard = { kind: 'notice', notice: Notice } | { kind: 'unreadable' } | { kind: 'timeout' }

export interface Waiter {
  heard: Promise<Heard>
  cancel: () => void
}

/**
 * Store trouble (down, slow, refusing): the fleet cannot be asked, act on your
 * own. Not a value that is there but cannot be used (unusable-values.ts): the
 * store answered, and each kind of state says what such a value means.
 */
export function isStoreTrouble (err: unknown): boolean {
  return err instanceof StoreUnavailableError
}

/**
 * When this instance last met store trouble (transport only) on a caller's path. A request
 * that met it once (its rate-limit count) does not wait on it again (its
 * cache lookup): calls within one command timeout of a failure skip the store.
 */
export class RecentTrouble {
  #at = -Infinity
  constructor (readonly windowMs: number) {}

  seen (): void { this.#at = performance.now() }
  get recent (): boolean { return performance.now() - this.#at < this.windowMs }
}

const TIMEOUT: Heard = { kind: 'timeout' }
const UNREADABLE: Heard = { kind: 'unreadable' }

export class FleetChannel {
  readonly #store: StateStore
  readonly #channel: string
  readonly #log: Logger
  readonly #waiters = new Map<string, Set<(heard: Heard) => void>>()
  readonly #listeners = new Map<string, (notice: Notice) => void>()
  #subscription: Promise<() => Promise<void>> | undefined
  #unreadable = 0

  constructor (store: StateStore, channel: string, logger: Logger) {
    this.#store = store
    this.#channel = channel
    this.#log = logger
  }

  /** Notices heard that did not open here (the sealed store logs them once per run). */
  get unreadable (): number { return this.#unreadable }

  /** Subscribe (kept across outages by the store); idempotent, also when called concurrently. */
  async start (): Promise<void> {
    const subscription = this.#subscription ??= this.#store.subscribe(this.#channel, (message) => { this.#dispatch(message) }, () => { this.#wakeAll() })
    await subscription.catch((err: unknown) => {
      if (this.#subscription === subscription) this.#subscription = undefined
      throw err
    })
  }

  async close (): Promise<void> {
    const subscription = this.#subscription
    this.#subscription = undefined
    const unsubscribe = await subscription?.catch(() => undefined)
    await unsubscribe?.().catch(() => {})
  }

  /** Every notice on `topic` (for tokens other instances obtain). */
  listen (topic: string, listener: (notice: Notice) => void): void {
    this.#listeners.set(topic, listener)
  }

  /** Rejects on store trouble; callers say what that means for them. */
  async publish (topic: string, notice: Notice): Promise<void> {
    await this.#store.publish(this.#channel, Buffer.from(JSON.stringify({ ...notice, topic })))
  }

  /** Waits up to `waitMs` for the next notice on `topic` (registered now, before the caller tries its lock). */
  waitFor (topic: string, waitMs: number, signal?: AbortSignal): Waiter {
    let settle: (heard: Heard) => void = () => {}
    const heard = new Promise<Heard>((resolve) => { settle = resolve })
    let waiters = this.#waiters.get(topic)
    if (waiters === undefined) this.#waiters.set(topic, waiters = new Set())
    const set = waiters
    const done = (result: Heard): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      set.delete(done)
      if (set.size === 0 && this.#waiters.get(topic) === set) this.#waiters.delete(topic)
      settle(result)
    }
    const onAbort = (): void => { done(TIMEOUT) }
    const timer = setTimeout(done, Math.max(0, waitMs), TIMEOUT)
    timer.unref()
    signal?.addEventListener('abort', onAbort, { once: true })
    set.add(done)
    if (signal?.aborted === true) done(TIMEOUT)
    return { heard, cancel: () => { done(TIMEOUT) } }
  }

  #wakeAll (): void {
    this.#unreadable++
    for (const waiters of [...this.#waiters.values()]) for (const waiter of [...waiters]) waiter(UNREADABLE)
  }

  #dispatch (message: Buffer): void {
    let parsed: unknown
    try {
      parsed = JSON.parse(message.toString('utf8'))
    } catch {
      parsed = undefined
    }
    const notice = typeof parsed === 'object' && parsed !== null ? parsed as Notice : undefined
    const topic = notice?.topic
    if (notice === undefined || typeof topic !== 'string') {
      this.#log.debug('a fleet notice that opened but names no topic: ignored')
      return
    }
    for (const waiter of [...(this.#waiters.get(topic) ?? [])]) waiter({ kind: 'notice', notice })
    this.#listeners.get(topic)?.(notice)
  }
}
