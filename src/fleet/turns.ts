// The fleet's one protocol for doing a piece of work once (registration,
// token, a report): take a turn. Look at the shared state; if the work is not
// done, try a small lock (SET NX PX with a random value). The holder looks
// again, does the work, stores the result, releases the lock, and tells the
// others; the others wait for its notice. This is nginx's proxy_cache_lock,
// and the fleet half of two-level single-flight.
//
// The rules that keep one member's trouble from stalling the others:
// - a waiter registers for notices before it tries the lock, so a lock found
//   held means a notice still to come; every release is announced, even one
//   with nothing to tell, so nobody waits on a lock that is gone;
// - a lock attempt whose outcome is unknown (no answer in time) ends with a
//   compare-and-delete of its own value, retried until the lock would have
//   expired anyway: a late reply never leaves a lock held;
// - a member that had to act alone (the store did not answer, or no word
//   came in time) still tells the others what it got: its notice reaches the
//   waiters of a lock it may have taken without knowing;
// - a notice that cannot be opened wakes every waiter at once: they look at
//   the shared state again rather than wait on it (fleet-channel.ts);
// - a member that cannot open the fleet's values takes no turn at all
//   (membership.ts).
// "Stored" is known, not assumed: each user reads a write back when its
// outcome is unknown (writeKnown) before it tells the waiters.
import type { Logger } from 'pino'
import type { StateStore, StoreLock } from '../store/state-store.js'
import { isStoreTrouble, type FleetChannel, type Heard, type Notice } from './fleet-channel.js'
import type { Membership } from './membership.js'

/** The work is done: its result, or the failure the member that did it met. */
export type Found<R, F> = { kind: 'found', value: R } | { kind: 'failed', failure: F }

/** What a notice means to a waiter: the result (or failure), look at the shared state again, or act alone now. */
export type Reading<R, F> = Found<R, F> | { kind: 'look' } | { kind: 'alone' }

export interface TurnRules<R, F> {
  /** The notices' topic. */
  topic: string
  lockKey: string
  lockTtlMs: number
  /** The longest this member waits on others before acting alone. */
  maxWaitMs: number
  /** What the shared state holds that will do, if anything. Store trouble rejects; other errors pass through. */
  look: () => Promise<Found<R, F> | undefined>
  /** The caller looked a moment ago: start with the lock. */
  looked?: boolean
  read: (notice: Notice) => Reading<R, F>
  /** What a holder that found the work done tells its waiters. */
  tell: (found: Found<R, F>) => Notice
  signal?: AbortSignal | undefined
}

/** Why a member acts without the fleet. */
export type AloneReason = 'not-member' | 'store-trouble' | 'no-word' | 'caller-left' | 'not-stored'

/** Tell the others (never throws): the holder releases its lock first. */
export type Finish = (notice?: Notice) => Promise<void>

export type Turn<R, F> =
  | Found<R, F>
  /** This member holds the lock: do the work, store it, then `finish` with the notice. */
  | { kind: 'lead', finish: Finish }
  /** Do the work without the fleet; `finish` still tells the others (unless not a member). */
  | { kind: 'alone', why: AloneReason, finish: Finish }

export interface TurnCounts {
  /** Turns in which this member acted alone (the store did not answer, or no word came in time). */
  alone: number
  /** Lock attempts that got no answer, released afterwards by compare-and-delete. */
  unknownLocks: number
  /** Notices and shared writes skipped because the store could not be asked (counted, not logged one by one). */
  skipped: number
}

export interface TurnsOptions {
  store: StateStore
  channel: FleetChannel
  membership: Membership
  logger: Logger
}

type Step = { kind: 'lead', finish: Finish } | Heard

const RELEASED: Notice = { released: true }
/** A holder keeps its lock alive for at most this many times the longest wait on it. */
const KEEP_ALIVE_WAITS = 4

export class Turns {
  readonly counts: TurnCounts = { alone: 0, unknownLocks: 0, skipped: 0 }
  readonly #store: StateStore
  readonly #channel: FleetChannel
  readonly #membership: Membership
  readonly #log: Logger

  constructor (options: TurnsOptions) {
    this.#store = options.store
    this.#channel = options.channel
    this.#membership = options.membership
    this.#log = options.logger
  }

  async take<R, F> (rules: TurnRules<R, F>): Promise<Turn<R, F>> {
    if (await this.#membership.ensure() === 'not-member') return { kind: 'alone', why: 'not-member', finish: async () => {} }
    const deadline = performance.now() + rules.maxWaitMs
    let look = rules.looked !== true
    try {
      for (;;) {
        const found = look ? await rules.look() : undefined
        if (found !== undefined) return found
        look = true
        const left = deadline - performance.now()
        if (rules.signal?.aborted === true) return this.#alone(rules.topic, 'caller-left')
        if (left <= 0) return this.#alone(rules.topic, 'no-word')
        const step = await this.#lockOrWait(rules, Math.min(rules.lockTtlMs, left))
        if (step.kind === 'lead') {
          // Someone may have finished between our look and our lock.
          const again = await rules.look().catch(async (err: unknown) => {
            if (isStoreTrouble(err)) return undefined
            await step.finish()
            throw err
          })
          if (again === undefined) return step
          await step.finish(rules.tell(again))
          return again
        }
        if (step.kind !== 'notice') continue
        const reading = rules.read(step.notice)
        if (reading.kind === 'alone') return this.#alone(rules.topic, 'not-stored')
        if (reading.kind !== 'look') return reading
      }
    } catch (err) {
      if (!isStoreTrouble(err)) throw err
      this.#log.debug({ topic: rules.topic, reason: (err as Error).message }, 'the fleet\'s store could not be asked: acting alone')
      return this.#alone(rules.topic, 'store-trouble')
    }
  }

  /**
   * `work` while holding the lock at `lockKey` (a put-back over a value that
   * cannot be used); undefined when another member holds it. Store trouble rejects.
   */
  async underLock<T> (lockKey: string, ttlMs: number, work: () => Promise<T>): Promise<T | undefined> {
    const lock = this.#store.lock(lockKey)
    try {
      if (!await lock.obtain(ttlMs)) return undefined
    } catch (err) {
      this.#releaseUnknown(lock, ttlMs)
      throw err
    }
    try {
      return await work()
    } finally {
      await lock.release().catch(() => { this.#releaseUnknown(lock, ttlMs) })
    }
  }

  /** Tells the others on `topic`; a store that cannot be asked is counted, not logged. */
  async tell (topic: string, notice: Notice): Promise<void> {
    await this.#channel.publish(topic, notice).catch(() => { this.counts.skipped++ })
  }

  /** Lead with the lock, or hear from the one who holds it. */
  async #lockOrWait<R, F> (rules: TurnRules<R, F>, waitMs: number): Promise<Step> {
    const { topic, lockTtlMs } = rules
    const waiter = this.#channel.waitFor(topic, waitMs, rules.signal)
    const lock = this.#store.lock(rules.lockKey)
    let obtained: boolean
    try {
      obtained = await lock.obtain(lockTtlMs)
    } catch (err) {
      waiter.cancel()
      // The SET may have landed after all: take it back, only if it is still ours (and then say so to whoever waits on it).
      this.#releaseUnknown(lock, lockTtlMs, topic)
      throw err
    }
    if (!obtained) return await waiter.heard
    waiter.cancel()
    // A slow call (a token endpoint at its timeout, a long report body) must not outlive the lock: extend
    // it while working, but not for good should a holder never finish (a safety net: every user finishes).
    const keepUntil = performance.now() + KEEP_ALIVE_WAITS * rules.maxWaitMs
    const keepAlive = setInterval(() => {
      if (performance.now() > keepUntil) { clearInterval(keepAlive); return }
      lock.refresh(lockTtlMs).then((held) => {
        if (held) return
        // Lost for good (another member may hold it now): say so once, and stop asking.
        clearInterval(keepAlive)
        this.#log.warn({ lock: lock.key }, 'a fleet lock expired while its work was still running; another instance may repeat it')
      }, () => {})
    }, Math.max(10, lockTtlMs / 3))
    keepAlive.unref()
    let finished = false
    return {
      kind: 'lead',
      finish: async (notice) => {
        if (finished) return
        finished = true
        clearInterval(keepAlive)
        await lock.release().catch(() => { this.#releaseUnknown(lock, lockTtlMs) })
        await this.tell(topic, notice ?? RELEASED)
      }
    }
  }

  #alone (topic: string, why: Exclude<AloneReason, 'not-member'>): Turn<never, never> {
    this.counts.alone++
    return { kind: 'alone', why, finish: async (notice) => { if (notice !== undefined) await this.tell(topic, notice) } }
  }

  /**
   * Compare-and-delete, retried until the lock would have expired by itself.
   * When it was ours after all, the members waiting on `topic` are told it is
   * released, so they take a turn now rather than at the lock's TTL.
   */
  #releaseUnknown (lock: StoreLock, ttlMs: number, topic?: string): void {
    this.counts.unknownLocks++
    const until = performance.now() + ttlMs
    const pauseMs = Math.max(20, Math.floor(ttlMs / 10))
    const attempt = (): void => {
      lock.release().then((released) => {
        if (released && topic !== undefined) void this.tell(topic, RELEASED)
      }, () => {
        if (performance.now() + pauseMs < until) setTimeout(attempt, pauseMs).unref()
      })
    }
    attempt()
  }
}

/**
 * The turn's work, for a member that leads or acts alone: its failure is told
 * to the waiters, its result shared (`share` stores it and says what to tell),
 * then announced. A member acting alone shares in the background: its
 * caller does not wait on a store that just failed it.
 */
export async function doTheWork<T> (turn: { kind: 'lead' | 'alone', finish: Finish }, work: () => Promise<T>, failureNotice: (err: unknown) => Notice, share: (value: T) => Promise<Notice>): Promise<T> {
  let value: T
  try {
    value = await work()
  } catch (err) {
    await turn.finish(failureNotice(err))
    throw err
  }
  const announce = async (): Promise<void> => { await turn.finish(await share(value)) }
  if (turn.kind === 'lead') await announce()
  else void announce().catch(() => {})
  return value
}

/**
 * Writes `value` at `key`. True when it is there, false when it is not, and
 * undefined when neither is known: when the write got no answer (it may have
 * landed), the value is read back, and only a read that fails too leaves it unknown.
 */
export async function writeKnown (store: StateStore, key: string, value: Buffer, ttlMs: number | undefined, maxBytes: number): Promise<boolean | undefined> {
  try {
    await store.set(key, value, ttlMs)
    return true
  } catch {
    try {
      return (await store.get(key, maxBytes))?.equals(value) === true
    } catch {
      return undefined
    }
  }
}
