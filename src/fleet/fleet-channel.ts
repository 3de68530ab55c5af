// The fleet's notices and turns. One pub/sub channel per application carries
// every notice ("a token landed", "this report is stored", "that attempt
// failed"), each under a topic; this process subscribes once, so a waiter
// never misses a notice between asking for a lock and subscribing.
//
// A turn is the fleet half of two-level single-flight (nginx's
// proxy_cache_lock, Kong's shared token): take a small lock (SET NX PX) and
// lead, or wait for the leader's notice. The leader keeps its lock alive
// while it works (compare-and-extend every third of the TTL), then releases
// it and publishes, in that order: a waiter is registered before it tries
// the lock, so a lock it found held means a notice still to come. Notices
// are lost while disconnected, so waiters also wake after a TTL and look
// again; a crashed leader's lock simply expires.
import type { Logger } from 'pino'
import { StoreUnavailableError } from '../store/errors.js'
import type { StateStore, StoreLock } from '../store/state-store.js'

export type Notice = Record<string, unknown>

export type Turn =
  /** This instance holds the lock: do the work, then `finish` (never throws) releases it and tells the others. */
  | { kind: 'lead', finish: (notice?: Notice) => Promise<void> }
  /** The leader's notice. */
  | { kind: 'notice', notice: Notice }
  /** No word within the wait (or the caller left): look at the shared state again. */
  | { kind: 'timeout' }

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

export class FleetChannel {
  readonly #store: StateStore
  readonly #channel: string
  readonly #log: Logger
  readonly #waiters = new Map<string, Set<(notice: Notice) => void>>()
  readonly #listeners = new Map<string, (notice: Notice) => void>()
  #unsubscribe: (() => Promise<void>) | undefined

  constructor (store: StateStore, channel: string, logger: Logger) {
    this.#store = store
    this.#channel = channel
    this.#log = logger
  }

  /** Subscribe (kept across outages by the store); idempotent. */
  async start (): Promise<void> {
    this.#unsubscribe ??= await this.#store.subscribe(this.#channel, (message) => { this.#dispatch(message) })
  }

  async close (): Promise<void> {
    const unsubscribe = this.#unsubscribe
    this.#unsubscribe = undefined
    await unsubscribe?.().catch(() => {})
  }

  /** Every notice on `topic` (for tokens other instances obtain). */
  listen (topic: string, listener: (notice: Notice) => void): void {
    this.#listeners.set(topic, listener)
  }

  async publish (topic: string, notice: Notice): Promise<void> {
    await this.#store.publish(this.#channel, Buffer.from(JSON.stringify({ ...notice, topic })))
  }

  /** Lead with `lock`, or wait up to `waitMs` for the leader's notice on `topic`. Store trouble rejects. */
  async turn (topic: string, lock: StoreLock, ttlMs: number, waitMs: number, signal?: AbortSignal): Promise<Turn> {
    const waiter = this.#next(topic, waitMs, signal)
    let obtained: boolean
    try {
      obtained = await lock.obtain(ttlMs)
    } catch (err) {
      waiter.cancel()
      throw err
    }
    if (!obtained) {
      const notice = await waiter.promise
      return notice === undefined ? { kind: 'timeout' } : { kind: 'notice', notice }
    }
    waiter.cancel()
    // A slow call (a token endpoint at its timeout) must not outlive the lock: extend it while working.
    const keepAlive = setInterval(() => {
      lock.refresh(ttlMs).then((held) => {
        if (!held) this.#log.warn({ lock: lock.key }, 'a fleet lock expired while its work was still running; another instance may repeat it')
      }, () => {})
    }, Math.max(10, ttlMs / 3))
    keepAlive.unref()
    return {
      kind: 'lead',
      finish: async (notice) => {
        clearInterval(keepAlive)
        await lock.release().catch(() => {})
        if (notice !== undefined) {
          await this.publish(topic, notice).catch((err: unknown) => {
            this.#log.debug({ topic, reason: (err as Error).message }, 'could not notify the fleet; the others look again when their wait ends')
          })
        }
      }
    }
  }

  #next (topic: string, waitMs: number, signal?: AbortSignal): { promise: Promise<Notice | undefined>, cancel: () => void } {
    let settle: (notice: Notice | undefined) => void = () => {}
    const promise = new Promise<Notice | undefined>((resolve) => { settle = resolve })
    let waiters = this.#waiters.get(topic)
    if (waiters === undefined) this.#waiters.set(topic, waiters = new Set())
    const set = waiters
    const done = (notice: Notice | undefined): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      set.delete(done)
      if (set.size === 0 && this.#waiters.get(topic) === set) this.#waiters.delete(topic)
      settle(notice)
    }
    const onAbort = (): void => { done(undefined) }
    const timer = setTimeout(done, Math.max(0, waitMs), undefined)
    timer.unref()
    signal?.addEventListener('abort', onAbort, { once: true })
    set.add(done)
    if (signal?.aborted === true) done(undefined)
    return { promise, cancel: () => { done(undefined) } }
  }

  #dispatch (message: Buffer): void {
    let notice: Notice
    try {
      notice = JSON.parse(message.toString('utf8')) as Notice
    } catch {
      return
    }
    const topic = notice.topic
    if (typeof topic !== 'string') return
    for (const waiter of [...(this.#waiters.get(topic) ?? [])]) waiter(notice)
    this.#listeners.get(topic)?.(notice)
  }
}
