// The byte-level store behind fleet mode. The modules that decide (the token
// broker, the cache policy, rate limits) talk to this interface and do not
// know whether state lives in memory or in Redis; sealing is a decorator
// (sealed-store.ts) around any implementation.
//
// Contract, the same for every implementation (test/helpers/store-contract.ts):
// - a resolved `undefined` means absent; a rejection means backend trouble
//   (StoreUnavailableError), never "absent";
// - values are opaque bytes; a TTL is in milliseconds and `set` without one
//   stores the value without expiry (and clears an earlier TTL);
// - keys arrive fully namespaced (namespace.ts builds them): stores add nothing.

export interface StateStore {
  /**
   * The value, or undefined when absent or expired. With `maxBytes`, a larger
   * value rejects with StateValueTooLargeError without being read (for sealed
   * stores: `maxBytes` of plaintext).
   */
  get: (key: string, maxBytes?: number) => Promise<Buffer | undefined>
  /** Store `value`, replacing any earlier value and TTL. `ttlMs` must be a positive number when given. */
  set: (key: string, value: Buffer, ttlMs?: number) => Promise<void>
  /**
   * Store `value` only when `key` holds nothing (SET NX); true when stored.
   * Put-backs use it (a token or credentials restored into a store that lost
   * them): a newer value written meanwhile by another instance is never overwritten.
   */
  setIfAbsent: (key: string, value: Buffer, ttlMs?: number) => Promise<boolean>
  /** True when a value was deleted. */
  delete: (key: string) => Promise<boolean>
  /**
   * Delete every key that starts with `prefix`; how many were deleted. Walks
   * the keyspace in batches (Redis: SCAN + UNLINK): for an operator's purge,
   * never for a caller's path. `prefix` must keep keys in one hash slot
   * (namespace.ts) on a Redis Cluster.
   */
  deleteByPrefix: (prefix: string) => Promise<number>
  /**
   * Compare-and-delete: delete only while the value is still `expected`
   * (for sealed stores: while it still opens to `expected`). True when deleted.
   * An upstream 401 uses it to drop the shared token only if it is still the rejected one.
   */
  deleteIf: (key: string, expected: Buffer) => Promise<boolean>
  /**
   * Compare-and-swap: replace the value only while it is still `expected`
   * (for sealed stores: while it still opens to `expected`), keeping its TTL.
   * True when replaced. The sealed store re-seals values under the first key with it.
   */
  replaceIf: (key: string, expected: Buffer, value: Buffer) => Promise<boolean>
  /**
   * Atomically add one to the counter at `key` (INCR), starting a `windowMs`
   * expiry when this call created it (PEXPIRE); the count and the ms left.
   * Counters are plain integers, never sealed: name them with digest().
   */
  increment: (key: string, windowMs: number) => Promise<{ count: number, ttlMs: number }>
  /** A handle on a small lock at `key` (SET NX PX with a random value). Nothing is sent until `obtain`. */
  lock: (key: string) => StoreLock
  /**
   * Deliver every message published on `channel` to `handler` until the
   * returned function is called. Delivery is at most once: a message sent
   * while this instance is disconnected is lost, so subscribers re-read state
   * after a reconnect instead of relying on notifications alone.
   * `unreadable` (sealed stores only): a message arrived that does not open
   * here; whoever waits on one of the channel's messages should not wait on it.
   */
  subscribe: (channel: string, handler: (message: Buffer) => void, unreadable?: () => void) => Promise<() => Promise<void>>
  publish: (channel: string, message: Buffer) => Promise<void>
  /** Resolves when the backend answers; rejects with StoreUnavailableError otherwise. */
  ping: () => Promise<void>
  /**
   * True once connected (at once if already); false when `timeoutMs` passes
   * first, when the store is closed, or as soon as the backend refused the
   * settings (a wrong password: `stats().lastProblem` says what it answered).
   */
  waitUntilUp: (timeoutMs: number) => Promise<boolean>
  /**
   * `listener` runs each time the backend becomes available: the first
   * connection and every reconnection (notifications sent meanwhile are lost,
   * and a restarted Redis may be empty). Returns a function that stops it.
   */
  onUp: (listener: () => void) => () => void
  stats: () => StoreStats
  /** Releases connections and timers; afterwards every operation rejects. */
  close: () => Promise<void>
}

/**
 * A lock that only saves work (one registration, one token call, one
 * upstream call per report): holders re-read state after obtaining it, and
 * `refresh` while a slow call is still running. Not Redlock: one Redis, and
 * correctness never depends on exclusivity.
 */
export interface StoreLock {
  readonly key: string
  /** True when this handle now holds the lock for `ttlMs`; false when someone holds it (including this handle). */
  obtain: (ttlMs: number) => Promise<boolean>
  /** Extend to `ttlMs` from now, only while this handle still holds it (compare-and-extend). */
  refresh: (ttlMs: number) => Promise<boolean>
  /** Release, only while this handle still holds it (compare-and-delete). True when released. */
  release: () => Promise<boolean>
}

export interface StoreStats {
  backend: 'memory' | 'redis'
  /** The backend is connected and answering (metric cmu_proxy_redis_up). */
  up: boolean
  /** Operations attempted, and how many failed (timeouts, disconnects, error replies). */
  operations: number
  errors: number
  /** Operations that failed because no answer came within the command timeout. */
  timeouts: number
  /** Returns to "up" after an outage (a reconnection, or a hung server answering again). */
  reconnects: number
  /** Times the backend became unavailable; each outage is logged once when it starts and once when it ends. */
  outages: number
  /** Operations refused at once, never sent, because the backend was known to be unavailable. */
  refused: number
  /** The most recent failure, in words for operators (never a secret); absent until one happens. */
  lastProblem?: StoreProblem | undefined
  /** Wall time of operations, answered or failed. */
  latencyMs: { count: number, total: number, max: number }
  /** Values that could not be unsealed (sealed stores only). */
  unsealFailures?: number
  /** Values read under an older key and re-sealed under the first one (sealed stores only). */
  resealed?: number
}

export interface StoreProblem {
  /** What the backend answered (WRONGPASS, MOVED, ...) and what it means, a socket or TLS error code, or a timeout. */
  reason: string
  /** Retrying with the same settings gets the same answer: an operator must act. */
  configuration: boolean
}

/** Called after every operation; metrics feed a latency histogram from it. */
export type OperationObserver = (operation: string, seconds: number, ok: boolean) => void

export function validTtl (ttlMs: number | undefined): number | undefined {
  if (ttlMs === undefined) return undefined
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError(`ttlMs must be a positive number of milliseconds (got ${ttlMs})`)
  return Math.ceil(ttlMs)
}

/** Counters shared by the implementations. */
export class OperationStats {
  operations = 0
  errors = 0
  timeouts = 0
  readonly latencyMs = { count: 0, total: 0, max: 0 }
  readonly #observer: OperationObserver | undefined

  constructor (observer?: OperationObserver) {
    this.#observer = observer
  }

  record (operation: string, startedAt: number, ok: boolean, timedOut = false): void {
    const elapsed = performance.now() - startedAt
    this.operations++
    if (!ok) this.errors++
    if (timedOut) this.timeouts++
    this.latencyMs.count++
    this.latencyMs.total += elapsed
    if (elapsed > this.latencyMs.max) this.latencyMs.max = elapsed
    this.#observer?.(operation, elapsed / 1000, ok)
  }

  snapshot (backend: StoreStats['backend'], up: boolean, availability: Pick<StoreStats, 'reconnects' | 'outages' | 'refused' | 'lastProblem'> = { reconnects: 0, outages: 0, refused: 0 }): StoreStats {
    return { backend, up, operations: this.operations, errors: this.errors, timeouts: this.timeouts, latencyMs: { ...this.latencyMs }, ...availability }
  }
}
