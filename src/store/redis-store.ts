// The store over Redis (or Valkey), with node-redis 6: @redis/client, the
// client of the `redis` package that Redis recommends for new projects
// (ioredis is maintained on a best-effort basis). The `redis` package adds
// only the Redis Stack modules (JSON, search, Bloom, time series), which the
// proxy does not use; @redis/client has no dependencies and supports Node 20.
// One node, Sentinel or a Cluster (redis-connection.ts and its siblings).
//
// Redis trouble never blocks or crashes the proxy:
// - every command has a deadline measured on Redis, not on our event loop
//   (redis-deadline.ts), and commands are refused at once while disconnected
//   (no offline queue), so no caller waits on Redis longer than `commandTimeoutMs`;
// - a hung server (the socket open, nothing answering) costs each command one
//   timeout only until timeouts have spanned `downAfterMs` without an answer:
//   from then on commands are refused at once while a background PING probes
//   for its return (one at a time: unanswered probes must not fill the
//   client's queue, whose "queue is full" is no answer either); the socket is
//   made anew every `reconnectAfterMs` of that (redis-health.ts);
// - the client reconnects by itself with capped exponential backoff and
//   jitter; 'error' events are always handled (an unhandled one would kill
//   the process), and an outage is logged when it starts and when it ends;
// - failures reject with StoreUnavailableError, never resolve as "absent".
import { randomBytes } from 'node:crypto'
import { ClientClosedError, ClientOfflineError, ErrorReply } from '@redis/client'
import type { Logger } from 'pino'
import type { RedisSettings } from '../config/settings.js'
import { StateValueTooLargeError, StoreUnavailableError } from './errors.js'
import { ClusterConnection, ClusterNotReadyError } from './redis-cluster-connection.js'
import { StandaloneConnection, type ConnectionOptions, type RedisConnection } from './redis-connection.js'
import { DeadlineError, withinDeadline } from './redis-deadline.js'
import { RedisHealth } from './redis-health.js'
import { describeProblem } from './redis-problems.js'
import { SentinelConnection, SentinelNotReadyError } from './redis-sentinel-connection.js'
import { OperationStats, validTtl, type OperationObserver, type StateStore, type StoreLock, type StoreStats } from './state-store.js'

export interface RedisStoreOptions {
  /** Which Redis and how to reach it (config/redis-settings.ts). */
  redis: Pick<RedisSettings, 'topology' | 'username' | 'password' | 'tls' | 'target'>
  /** Longest wait for any one command (REDIS_COMMAND_TIMEOUT_MS). */
  commandTimeoutMs?: number
  connectTimeoutMs?: number
  /** Reconnect backoff: base * 2^attempt with jitter, capped. */
  reconnectBaseMs?: number
  reconnectMaxMs?: number
  /** Commands waiting for an answer beyond this are refused (bounded memory). */
  maxPendingCommands?: number
  /** Timeouts with no answer for this long: down (default 3 × commandTimeoutMs). */
  downAfterMs?: number
  /** Down this long: the connection is made anew (default 10 × commandTimeoutMs). */
  reconnectAfterMs?: number
  logger?: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'> | undefined
  onOperation?: OperationObserver | undefined
  random?: () => number
}

type Handler = (message: Buffer) => void

// Compare-and-delete and compare-and-extend, atomic in Redis. Sent with EVAL:
// the scripts are tiny and Redis caches their compiled form, and EVALSHA's
// NOSCRIPT fallback would cost a second round trip after a Redis restart.
const COMPARE_AND_DELETE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
const COMPARE_AND_EXTEND = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
// Compare-and-swap keeping the TTL (KEEPTTL: Redis 6.0+, every Valkey).
const COMPARE_AND_SWAP = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') return 1 end return 0"
// GET, unless the value is longer than ARGV[1]: then only its length (STRLEN), so
// an oversized value is refused without crossing the network or being allocated.
const GET_AT_MOST = "local n = redis.call('STRLEN', KEYS[1]) if n > tonumber(ARGV[1]) then return n end return redis.call('GET', KEYS[1])"
// INCR and, for a new counter (or one that somehow lost its expiry), PEXPIRE: one atomic step, as
// @fastify/rate-limit's own Redis store does it.
const INCREMENT = "local n = redis.call('INCR', KEYS[1]) local ttl = redis.call('PTTL', KEYS[1]) if n == 1 or ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) ttl = tonumber(ARGV[1]) end return {n, ttl}"

/** Keys SCAN looks at per round trip (a hint to Redis); each batch found is one UNLINK. */
const SCAN_BATCH = 1_000

export class RedisStore implements StateStore {
  readonly #connection: RedisConnection
  readonly #health: RedisHealth
  readonly #channels = new Map<string, Set<Handler>>()
  readonly #timeoutMs: number
  readonly #stats: OperationStats
  readonly #logger: RedisStoreOptions['logger']
  #probe: NodeJS.Timeout | undefined
  /** The last probe is still in the client's queue: the server has not answered it, nor has the connection dropped. */
  #probeInFlight = false
  #closed = false

  constructor (options: RedisStoreOptions) {
    const timeoutMs = this.#timeoutMs = options.commandTimeoutMs ?? 250
    this.#stats = new OperationStats(options.onOperation)
    this.#logger = options.logger
    this.#health = new RedisHealth({ target: options.redis.target, commandTimeoutMs: timeoutMs, downAfterMs: options.downAfterMs, reconnectAfterMs: options.reconnectAfterMs, logger: options.logger })
    const connection: ConnectionOptions = {
      settings: { ...options.redis, commandTimeoutMs: timeoutMs },
      health: this.#health,
      connectTimeoutMs: options.connectTimeoutMs ?? 2_000,
      reconnectBaseMs: options.reconnectBaseMs ?? 50,
      reconnectMaxMs: options.reconnectMaxMs ?? 2_000,
      maxPendingCommands: options.maxPendingCommands ?? 1_000,
      random: options.random ?? Math.random
    }
    const { topology } = options.redis
    this.#connection = topology.kind === 'sentinel'
      ? new SentinelConnection(connection, topology.sentinels, topology.masterName)
      : topology.kind === 'cluster' ? new ClusterConnection(connection, topology.seeds) : new StandaloneConnection(connection, topology.node, topology.database)
    // Subscriptions never confirmed (made while down) are made when a subscriber connection comes (back).
    this.#connection.onSubscriberReady(() => {
      for (const channel of this.#channels.keys()) this.#connection.subscribe(channel, this.#dispatch).catch(() => {})
    })
    this.#health.onUp(() => { this.#stopProbing() })
  }

  /** Resolves true once connected (at once if already), false if `timeoutMs` passes first or the settings were refused. */
  async waitUntilUp (timeoutMs: number): Promise<boolean> {
    if (this.#health.up) return true
    if (this.#closed || this.#health.needsOperator) return false
    return await new Promise((resolve) => {
      const done = (up: boolean): void => {
        clearTimeout(timer)
        clearInterval(watch)
        stop()
        resolve(up)
      }
      const stop = this.#health.onUp(() => { done(true) })
      const timer = setTimeout(done, timeoutMs, false)
      // A wrong password will not fix itself: say so now rather than at the end of the wait.
      const watch = setInterval(() => { if (this.#health.needsOperator || this.#closed) done(false) }, 20)
      timer.unref()
      watch.unref()
    })
  }

  async get (key: string, maxBytes?: number): Promise<Buffer | undefined> {
    const reply = await this.#command('get', key, maxBytes === undefined ? ['GET', key] : ['EVAL', GET_AT_MOST, '1', key, String(maxBytes)])
    if (reply === null) return undefined
    if (Buffer.isBuffer(reply)) return reply
    // The script answers a number instead of the value: its length, over the bound.
    if (typeof reply === 'number') throw new StateValueTooLargeError(key, reply, maxBytes ?? 0)
    throw unexpected('get', reply)
  }

  async set (key: string, value: Buffer, ttlMs?: number): Promise<void> {
    const ttl = validTtl(ttlMs)
    await this.#command('set', key, ttl === undefined ? ['SET', key, value] : ['SET', key, value, 'PX', String(ttl)])
  }

  async setIfAbsent (key: string, value: Buffer, ttlMs?: number): Promise<boolean> {
    const ttl = validTtl(ttlMs)
    return await this.#command('setIfAbsent', key, ttl === undefined ? ['SET', key, value, 'NX'] : ['SET', key, value, 'NX', 'PX', String(ttl)]) !== null
  }

  async delete (key: string): Promise<boolean> {
    return await this.#command('delete', key, ['DEL', key]) === 1
  }

  /**
   * SCAN with MATCH in batches, each batch UNLINKed (freed in the background).
   * Every command goes to the node of `prefix`'s hash slot: on a Cluster, the
   * application's keys all live there (namespace.ts).
   */
  async deleteByPrefix (prefix: string): Promise<number> {
    const match = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`
    let cursor = '0'
    let deleted = 0
    do {
      const reply = await this.#command('scan', prefix, ['SCAN', cursor, 'MATCH', match, 'COUNT', String(SCAN_BATCH)])
      if (!Array.isArray(reply) || reply.length !== 2 || !Array.isArray(reply[1])) throw unexpected('scan', reply)
      cursor = String(reply[0])
      const keys = (reply[1] as unknown[]).filter((key): key is Buffer => Buffer.isBuffer(key))
      if (keys.length > 0) deleted += Number(await this.#command('unlink', prefix, ['UNLINK', ...keys]))
    } while (cursor !== '0')
    return deleted
  }

  async deleteIf (key: string, expected: Buffer): Promise<boolean> {
    return await this.#command('deleteIf', key, ['EVAL', COMPARE_AND_DELETE, '1', key, expected]) === 1
  }

  async replaceIf (key: string, expected: Buffer, value: Buffer): Promise<boolean> {
    return await this.#command('replaceIf', key, ['EVAL', COMPARE_AND_SWAP, '1', key, expected, value]) === 1
  }

  async increment (key: string, windowMs: number): Promise<{ count: number, ttlMs: number }> {
    const window = String(validTtl(windowMs))
    const reply = await this.#command('increment', key, ['EVAL', INCREMENT, '1', key, window])
    if (!Array.isArray(reply) || typeof reply[0] !== 'number' || typeof reply[1] !== 'number') throw unexpected('increment', reply)
    return { count: reply[0], ttlMs: reply[1] }
  }

  /** Runs on the first connection and on every return after an outage (notifications sent meanwhile are lost). */
  onUp (listener: () => void): () => void {
    return this.#health.onUp(listener)
  }

  lock (key: string): StoreLock {
    const token = randomBytes(16)
    return {
      key,
      obtain: async (ttlMs) => {
        const ttl = String(validTtl(ttlMs))
        return await this.#command('lock.obtain', key, ['SET', key, token, 'NX', 'PX', ttl]) !== null
      },
      refresh: async (ttlMs) => {
        const ttl = String(validTtl(ttlMs))
        return await this.#command('lock.refresh', key, ['EVAL', COMPARE_AND_EXTEND, '1', key, token, ttl]) === 1
      },
      release: async () => await this.#command('lock.release', key, ['EVAL', COMPARE_AND_DELETE, '1', key, token]) === 1
    }
  }

  /**
   * Subscriptions outlast outages: one that cannot be confirmed now is made
   * when the connection comes (back), so this rejects only when the store is closed.
   */
  async subscribe (channel: string, handler: Handler): Promise<() => Promise<void>> {
    const startedAt = performance.now()
    if (this.#closed) {
      this.#stats.record('subscribe', startedAt, false)
      throw new StoreUnavailableError('subscribe', 'the store is closed')
    }
    let handlers = this.#channels.get(channel)
    if (handlers === undefined) this.#channels.set(channel, handlers = new Set())
    const subscription: Handler = (message) => { handler(message) }
    handlers.add(subscription)
    const confirmed = await this.#bounded(this.#connection.subscribe(channel, this.#dispatch))
    this.#stats.record('subscribe', startedAt, confirmed)
    return async () => {
      handlers.delete(subscription)
      if (handlers.size > 0 || this.#channels.get(channel) !== handlers) return
      this.#channels.delete(channel)
      if (!this.#closed) await this.#bounded(this.#connection.unsubscribe(channel, this.#dispatch))
    }
  }

  async publish (channel: string, message: Buffer): Promise<void> {
    await this.#command('publish', undefined, ['PUBLISH', channel, message])
  }

  async ping (): Promise<void> {
    await this.#command('ping', undefined, ['PING'])
  }

  stats (): StoreStats {
    const health = this.#health
    return this.#stats.snapshot('redis', !this.#closed && health.up, { reconnects: health.returns, outages: health.outages, refused: health.refused, lastProblem: health.lastProblem })
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#health.close()
    this.#stopProbing()
    await this.#connection.close(async (closing) => await this.#bounded(closing))
  }

  readonly #dispatch = (message: Buffer, channel: Buffer): void => {
    for (const handler of this.#channels.get(channel.toString()) ?? []) {
      try {
        handler(message)
      } catch (err) {
        this.#logger?.warn({ channel: channel.toString(), err }, 'state store notification handler failed')
      }
    }
  }

  /** True when `promise` settled successfully within the command timeout. */
  async #bounded (promise: Promise<unknown>): Promise<boolean> {
    return await withinDeadline(promise, this.#timeoutMs).then(() => true, () => false)
  }

  async #command (operation: string, key: string | undefined, args: Array<string | Buffer>, probing = false): Promise<unknown> {
    const startedAt = performance.now()
    const refusal = this.#closed ? 'the store is closed' : probing ? undefined : this.#health.refusal()
    if (refusal !== undefined) {
      // Hung or closed: refuse at once rather than make every caller wait a timeout.
      if (!this.#closed) this.#health.refusedOne(undefined)
      this.#stats.record(operation, startedAt, false)
      throw new StoreUnavailableError(operation, refusal)
    }
    const sent = this.#connection.send(key, args)
    if (probing) {
      this.#probeInFlight = true
      const settled = (): void => { this.#probeInFlight = false }
      sent.then(settled, settled)
    }
    try {
      const reply = await withinDeadline(sent, this.#timeoutMs)
      this.#health.answered()
      this.#stats.record(operation, startedAt, true)
      return reply
    } catch (err) {
      const problem = describeProblem(err, this.#timeoutMs)
      const timedOut = err instanceof DeadlineError
      // An error reply is an answer: Redis is there.
      if (err instanceof ErrorReply) this.#health.answered()
      // Not sent: refused while disconnected.
      else if (isOffline(err)) this.#health.refusedOne(problem)
      // A full queue with no answer for a whole timeout is commands a hung server never answered: no
      // answer either. Soon after an answer it is a burst on a server that answers: this command is shed only.
      else if (timedOut || (isQueueFull(err) && performance.now() - this.#health.lastAnswerAt > this.#timeoutMs)) this.#timedOut(startedAt, problem)
      else if (isQueueFull(err)) this.#health.failed(problem)
      // Offline, or the connection dropped under it.
      else this.#health.lost(problem)
      this.#stats.record(operation, startedAt, false, timedOut)
      throw new StoreUnavailableError(operation, problem.reason, { cause: err })
    }
  }

  #timedOut (startedAt: number, problem: ReturnType<typeof describeProblem>): void {
    if (this.#closed) return
    this.#health.timedOut(startedAt, problem)
    if (!this.#health.hung || this.#probe !== undefined) return
    this.#probe = setInterval(() => {
      if (this.#health.reconnectDue()) this.#reconnect()
      // Still no answer to the last one: no second PING behind it.
      else if (!this.#probeInFlight) this.#command('ping', undefined, ['PING'], true).catch(() => {})
    }, Math.max(this.#timeoutMs, 100))
    this.#probe.unref()
  }

  #stopProbing (): void {
    clearInterval(this.#probe)
    this.#probe = undefined
  }

  /** Drops a connection that stopped answering (its queued commands fail) and connects again; an answer ends the hang. */
  #reconnect (): void {
    this.#probeInFlight = false
    this.#connection.reconnect()
  }
}

function isOffline (err: unknown): boolean {
  return err instanceof ClientOfflineError || err instanceof ClientClosedError || err instanceof SentinelNotReadyError || err instanceof ClusterNotReadyError
}

/** node-redis refuses a command with this when `commandsQueueMaxLength` commands already wait. */
function isQueueFull (err: unknown): boolean {
  return err instanceof Error && err.message === 'The queue is full'
}

function unexpected (operation: string, reply: unknown): StoreUnavailableError {
  return new StoreUnavailableError(operation, `unexpected reply of type ${typeof reply}`)
}
