// The store over Redis (or Valkey), with node-redis 6: @redis/client, the
// client of the `redis` package that Redis recommends for new projects
// (ioredis is maintained on a best-effort basis). The `redis` package adds
// only the Redis Stack modules (JSON, search, Bloom, time series), which the
// proxy does not use; @redis/client has no dependencies and supports Node 20.
//
// Redis trouble never blocks or crashes the proxy:
// - every command carries a short timeout, and commands are refused at once
//   while disconnected (no offline queue), so no caller waits on Redis longer
//   than `commandTimeoutMs`;
// - a hung server (the socket open, nothing answering) costs each command one
//   timeout only until three in a row have timed out: from then on commands
//   are refused at once while a background PING probes for its return (one
//   at a time: unanswered probes must not fill the client's queue, whose
//   "queue is full" is no answer either); after ten, the socket is dropped
//   and made anew, since a dead peer behind a partition or a failed-over
//   master never answers on the old one;
// - the client reconnects by itself with capped exponential backoff and
//   jitter; 'error' events are always handled (an unhandled one would kill
//   the process) and logged once per outage, not once per retry;
// - failures reject with StoreUnavailableError, never resolve as "absent".
import { randomBytes } from 'node:crypto'
import { createClient, ErrorReply, RESP_TYPES, TimeoutError, type RedisClientType } from '@redis/client'
import type { Logger } from 'pino'
import { StateValueTooLargeError, StoreUnavailableError } from './errors.js'
import { OperationStats, validTtl, type OperationObserver, type StateStore, type StoreLock, type StoreStats } from './state-store.js'

export interface RedisStoreOptions {
  /** redis:// or rediss:// (TLS), optionally with ACL user and password. */
  url: string
  /** REDIS_PASSWORD_FILE's content; wins over a password in the URL. */
  password?: string | undefined
  /** Longest wait for any one command. */
  commandTimeoutMs?: number
  connectTimeoutMs?: number
  /** Reconnect backoff: base * 2^attempt with jitter, capped. */
  reconnectBaseMs?: number
  reconnectMaxMs?: number
  /** Commands waiting for an answer beyond this are refused (bounded memory). */
  maxPendingCommands?: number
  logger?: Pick<Logger, 'info' | 'warn'> | undefined
  onOperation?: OperationObserver | undefined
  random?: () => number
}

/** RESP2: understood by every Redis and Valkey version the proxy may meet. */
type Client = RedisClientType<{}, {}, {}, 2, {}>
type Handler = (message: Buffer) => void

const BUFFERS = { typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } }
/** After this many timeouts in a row the connection counts as down even though the socket is open (a hung server). */
const TIMEOUTS_BEFORE_DOWN = 3
/** After this many (the probe counts one per interval it stays unanswered) the connection is dropped and made anew, and again after as many more. */
const TIMEOUTS_BEFORE_RECONNECT = 10

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

export class RedisStore implements StateStore {
  readonly #client: Client
  #subscriber: Client | undefined
  readonly #channels = new Map<string, Set<Handler>>()
  readonly #options: RedisStoreOptions & { commandTimeoutMs: number }
  readonly #stats: OperationStats
  readonly #logger: RedisStoreOptions['logger']
  /** Where to, for log lines: scheme, host and port, never the credentials. */
  readonly #target: string
  readonly #url: string
  #consecutiveTimeouts = 0
  /** performance.now() of the last answer (a reply or an error reply): a full queue soon after one is a burst, not a hang. */
  #lastAnswerAt = performance.now()
  #probe: NodeJS.Timeout | undefined
  /** The last probe is still in the client's queue: the server has not answered it, nor has the connection dropped. */
  #probeInFlight = false
  #everReady = false
  #outageLogged = false
  #closed = false

  constructor (options: RedisStoreOptions) {
    this.#options = { ...options, commandTimeoutMs: options.commandTimeoutMs ?? 250 }
    this.#stats = new OperationStats(options.onOperation)
    this.#logger = options.logger
    const url = new URL(options.url)
    this.#target = `${url.protocol}//${url.host}`
    // A password from REDIS_PASSWORD_FILE wins; node-redis would let the URL's win.
    if (options.password !== undefined) url.password = ''
    this.#url = url.href
    this.#client = this.#newClient('main')
    this.#client.on('ready', () => {
      this.#answering()
      if (this.#everReady) this.#stats.reconnects++
      this.#logger?.info({ redis: this.#target }, this.#everReady ? 'redis connection restored' : 'redis connected')
      this.#everReady = true
      this.#outageLogged = false
    })
    this.#connect(this.#client)
  }

  /** Resolves true once connected (at once if already), false if `timeoutMs` passes first. */
  async waitUntilUp (timeoutMs: number): Promise<boolean> {
    if (this.#client.isReady) return true
    if (this.#closed) return false
    return await new Promise((resolve) => {
      const done = (up: boolean): void => {
        clearTimeout(timer)
        this.#client.off('ready', onReady)
        resolve(up)
      }
      const onReady = (): void => { done(true) }
      const timer = setTimeout(done, timeoutMs, false)
      timer.unref()
      this.#client.on('ready', onReady)
    })
  }

  async get (key: string, maxBytes?: number): Promise<Buffer | undefined> {
    const reply = await this.#command('get', maxBytes === undefined ? ['GET', key] : ['EVAL', GET_AT_MOST, '1', key, String(maxBytes)])
    if (reply === null) return undefined
    if (Buffer.isBuffer(reply)) return reply
    // The script answers a number instead of the value: its length, over the bound.
    if (typeof reply === 'number') throw new StateValueTooLargeError(key, reply, maxBytes ?? 0)
    throw unexpected('get', reply)
  }

  async set (key: string, value: Buffer, ttlMs?: number): Promise<void> {
    const ttl = validTtl(ttlMs)
    await this.#command('set', ttl === undefined ? ['SET', key, value] : ['SET', key, value, 'PX', String(ttl)])
  }

  async setIfAbsent (key: string, value: Buffer, ttlMs?: number): Promise<boolean> {
    const ttl = validTtl(ttlMs)
    return await this.#command('setIfAbsent', ttl === undefined ? ['SET', key, value, 'NX'] : ['SET', key, value, 'NX', 'PX', String(ttl)]) !== null
  }

  async delete (key: string): Promise<boolean> {
    return await this.#command('delete', ['DEL', key]) === 1
  }

  async deleteIf (key: string, expected: Buffer): Promise<boolean> {
    return await this.#command('deleteIf', ['EVAL', COMPARE_AND_DELETE, '1', key, expected]) === 1
  }

  async replaceIf (key: string, expected: Buffer, value: Buffer): Promise<boolean> {
    return await this.#command('replaceIf', ['EVAL', COMPARE_AND_SWAP, '1', key, expected, value]) === 1
  }

  async increment (key: string, windowMs: number): Promise<{ count: number, ttlMs: number }> {
    const window = String(validTtl(windowMs))
    const reply = await this.#command('increment', ['EVAL', INCREMENT, '1', key, window])
    if (!Array.isArray(reply) || typeof reply[0] !== 'number' || typeof reply[1] !== 'number') throw unexpected('increment', reply)
    return { count: reply[0], ttlMs: reply[1] }
  }

  onUp (listener: () => void): () => void {
    this.#client.on('ready', listener)
    return () => { this.#client.off('ready', listener) }
  }

  lock (key: string): StoreLock {
    const token = randomBytes(16)
    return {
      key,
      obtain: async (ttlMs) => {
        const ttl = String(validTtl(ttlMs))
        return await this.#command('lock.obtain', ['SET', key, token, 'NX', 'PX', ttl]) !== null
      },
      refresh: async (ttlMs) => {
        const ttl = String(validTtl(ttlMs))
        return await this.#command('lock.refresh', ['EVAL', COMPARE_AND_EXTEND, '1', key, token, ttl]) === 1
      },
      release: async () => await this.#command('lock.release', ['EVAL', COMPARE_AND_DELETE, '1', key, token]) === 1
    }
  }

  /**
   * Subscriptions live on a second connection (a subscribed RESP2 connection
   * takes no other commands). They outlast outages: one that cannot be
   * confirmed now is made when the connection comes (back), so this rejects
   * only when the store is closed.
   */
  async subscribe (channel: string, handler: Handler): Promise<() => Promise<void>> {
    const startedAt = performance.now()
    if (this.#closed) {
      this.#stats.record('subscribe', startedAt, false)
      throw new StoreUnavailableError('subscribe', 'the store is closed')
    }
    const subscriber = this.#subscriberClient()
    let handlers = this.#channels.get(channel)
    if (handlers === undefined) this.#channels.set(channel, handlers = new Set())
    const subscription: Handler = (message) => { handler(message) }
    handlers.add(subscription)
    const confirmed = await this.#within(subscriber.subscribe(channel, this.#dispatch, true))
    this.#stats.record('subscribe', startedAt, confirmed)
    return async () => {
      handlers.delete(subscription)
      if (handlers.size > 0 || this.#channels.get(channel) !== handlers) return
      this.#channels.delete(channel)
      if (!this.#closed) await this.#within(subscriber.unsubscribe(channel, this.#dispatch, true))
    }
  }

  async publish (channel: string, message: Buffer): Promise<void> {
    await this.#command('publish', ['PUBLISH', channel, message])
  }

  async ping (): Promise<void> {
    await this.#command('ping', ['PING'])
  }

  stats (): StoreStats {
    const up = !this.#closed && this.#client.isReady && this.#consecutiveTimeouts < TIMEOUTS_BEFORE_DOWN
    return this.#stats.snapshot('redis', up)
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#answering()
    await Promise.all([this.#shutdown(this.#client), this.#subscriber === undefined ? undefined : this.#shutdown(this.#subscriber)])
  }

  #newClient (role: string): Client {
    const { commandTimeoutMs, connectTimeoutMs = 2_000, reconnectBaseMs = 50, reconnectMaxMs = 2_000, maxPendingCommands = 1_000, random = Math.random } = this.#options
    const client: Client = createClient({
      url: this.#url,
      ...(this.#options.password === undefined ? {} : { password: this.#options.password }),
      RESP: 2,
      name: 'cmu-proxy',
      disableOfflineQueue: true,
      commandsQueueMaxLength: maxPendingCommands,
      commandOptions: { timeout: commandTimeoutMs },
      socket: {
        connectTimeout: connectTimeoutMs,
        // Never give up; half to all of base * 2^n, capped, so a fleet does not reconnect in step.
        reconnectStrategy: (retries) => Math.ceil(Math.min(reconnectMaxMs, reconnectBaseMs * 2 ** Math.min(retries, 20)) * (0.5 + random() / 2))
      }
    })
    client.on('error', (err: unknown) => {
      // Once per outage: the client emits an error on every failed reconnect attempt.
      if (this.#outageLogged || this.#closed) return
      this.#outageLogged = true
      this.#logger?.warn({ redis: this.#target, connection: role, reason: describe(err, commandTimeoutMs) }, 'redis unavailable; serving from local state and retrying')
    })
    return client
  }

  #connect (client: Client): void {
    // Settles when connected or closed; until then commands are refused at once.
    client.connect().catch(() => {})
  }

  #subscriberClient (): Client {
    if (this.#subscriber !== undefined) return this.#subscriber
    const subscriber = this.#subscriber = this.#newClient('subscriber')
    // node-redis re-subscribes confirmed channels after a reconnect; this catches those never confirmed.
    subscriber.on('ready', () => {
      for (const channel of this.#channels.keys()) subscriber.subscribe(channel, this.#dispatch, true).catch(() => {})
    })
    this.#connect(subscriber)
    return subscriber
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
  async #within (promise: Promise<unknown>): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(resolve, this.#options.commandTimeoutMs, false)
      timer.unref()
    })
    try {
      return await Promise.race([promise.then(() => true, () => false), timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  async #command (operation: string, args: Array<string | Buffer>, probing = false): Promise<unknown> {
    const startedAt = performance.now()
    if (this.#closed) {
      this.#stats.record(operation, startedAt, false)
      throw new StoreUnavailableError(operation, 'the store is closed')
    }
    if (!probing && this.#consecutiveTimeouts >= TIMEOUTS_BEFORE_DOWN) {
      // Hung: refuse at once rather than make every caller wait a timeout.
      this.#stats.record(operation, startedAt, false)
      throw new StoreUnavailableError(operation, `not answering (${this.#consecutiveTimeouts} timeouts in a row); probing in the background`)
    }
    let timer: NodeJS.Timeout | undefined
    try {
      // node-redis's own `timeout` ends when the command is written, not when the
      // answer comes: a server that accepts and never answers needs this deadline.
      const deadline = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => { reject(new DeadlineError()) }, this.#options.commandTimeoutMs)
        timer.unref()
      })
      const sent = this.#client.sendCommand(args, BUFFERS)
      if (probing) {
        this.#probeInFlight = true
        const settled = (): void => { this.#probeInFlight = false }
        sent.then(settled, settled)
      }
      const reply: unknown = await Promise.race([sent, deadline])
      this.#answering()
      this.#stats.record(operation, startedAt, true)
      return reply
    } catch (err) {
      const timedOut = err instanceof DeadlineError || err instanceof TimeoutError
      // A full queue with no answer for a whole timeout is commands a hung server never answered: no
      // answer either. Soon after an answer it is a burst on a server that answers: this command is shed only.
      if (timedOut || (isQueueFull(err) && performance.now() - this.#lastAnswerAt > this.#options.commandTimeoutMs)) this.#timedOut()
      // An error reply is an answer. Other failures (offline, closed) leave the count to the
      // connection's own state: 'ready' resets it once connected again.
      else if (err instanceof ErrorReply) this.#answering()
      this.#stats.record(operation, startedAt, false, timedOut)
      throw new StoreUnavailableError(operation, describe(err, this.#options.commandTimeoutMs), { cause: err })
    } finally {
      clearTimeout(timer)
    }
  }

  #answering (): void {
    this.#lastAnswerAt = performance.now()
    this.#consecutiveTimeouts = 0
    clearInterval(this.#probe)
    this.#probe = undefined
  }

  #timedOut (): void {
    if (this.#closed) return
    // Every so many: a new socket may land on a peer that hangs too.
    if (++this.#consecutiveTimeouts % TIMEOUTS_BEFORE_RECONNECT === 0) this.#reconnect()
    if (this.#consecutiveTimeouts < TIMEOUTS_BEFORE_DOWN || this.#probe !== undefined) return
    const interval = Math.max(this.#options.commandTimeoutMs, 100)
    this.#probe = setInterval(() => {
      // Still no answer to the last one: one more timeout, and no second PING behind it. A new socket
      // whose handshake gets no answer (a hung server still accepts connections) is no answer either.
      if (this.#probeInFlight || !this.#client.isReady) this.#timedOut()
      else this.#command('ping', ['PING'], true).catch(() => {})
    }, interval)
    this.#probe.unref()
  }

  /** Drops a connection that stopped answering (its queued commands fail) and connects again; 'ready' ends the hang. */
  #reconnect (): void {
    this.#logger?.warn({ redis: this.#target, timeouts: this.#consecutiveTimeouts }, 'redis is not answering on this connection: connecting again')
    this.#client.destroy()
    this.#connect(this.#client)
    // The subscriber sends no commands, so nothing times out on it; it sits on the same dead peer.
    // Its 'ready' handler subscribes to every channel again.
    const subscriber = this.#subscriber
    if (subscriber !== undefined) {
      subscriber.destroy()
      this.#connect(subscriber)
    }
  }

  /** Close gracefully, but never wait on a hung server longer than one command timeout. */
  async #shutdown (client: Client): Promise<void> {
    if (client.isOpen) {
      await this.#within(client.close())
    }
    client.destroy()
  }
}

/** A reason for logs and errors: what went wrong, without Redis's echo of our arguments. */
class DeadlineError extends Error {}

function describe (err: unknown, timeoutMs: number): string {
  if (err instanceof DeadlineError || err instanceof TimeoutError) return `no answer within ${timeoutMs} ms`
  // Error replies start with a code word (NOAUTH, WRONGPASS, READONLY, OOM, WRONGTYPE, ...).
  if (err instanceof ErrorReply) return `Redis answered ${err.message.split(' ', 1)[0] ?? 'an error'}`
  const { code, message } = err as { code?: unknown, message?: unknown }
  return typeof code === 'string' ? code : typeof message === 'string' ? message : 'unknown error'
}

/** node-redis refuses a command with this when `commandsQueueMaxLength` commands already wait. */
function isQueueFull (err: unknown): boolean {
  return err instanceof Error && err.message === 'The queue is full'
}

function unexpected (operation: string, reply: unknown): StoreUnavailableError {
  return new StoreUnavailableError(operation, `unexpected reply of type ${typeof reply}`)
}

