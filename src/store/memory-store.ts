// The store in one process: single-instance mode and tests. Bounded by
// entries and bytes (lru-cache evicts the least recently used; expired values
// are never returned). Several in-process users may share one instance, which
// then behaves like one Redis shared by a fleet, notifications included.
import { randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import { StateValueTooLargeError, StoreUnavailableError } from './errors.js'
import { OperationStats, validTtl, type OperationObserver, type StateStore, type StoreLock, type StoreStats } from './state-store.js'

export interface MemoryStoreOptions {
  maxEntries?: number
  maxBytes?: number
  /** Clock for TTLs (ms); tests may pin it. */
  now?: () => number
  logger?: Pick<Logger, 'warn'>
  onOperation?: OperationObserver
}

type Handler = (message: Buffer) => void

export class MemoryStore implements StateStore {
  readonly #values: LRUCache<string, Buffer>
  readonly #channels = new Map<string, Set<Handler>>()
  readonly #stats: OperationStats
  readonly #logger: Pick<Logger, 'warn'> | undefined
  #closed = false

  constructor (options: MemoryStoreOptions = {}) {
    const now = options.now ?? Date.now
    this.#values = new LRUCache<string, Buffer>({
      max: options.maxEntries ?? 10_000,
      maxSize: options.maxBytes ?? 64 * 1024 * 1024,
      sizeCalculation: (value, key) => value.length + key.length + 64,
      perf: { now },
      ttlResolution: 0
    })
    this.#stats = new OperationStats(options.onOperation)
    this.#logger = options.logger
  }

  async get (key: string, maxBytes?: number): Promise<Buffer | undefined> {
    return this.#run('get', () => {
      const value = this.#values.get(key)
      if (maxBytes !== undefined && value !== undefined && value.length > maxBytes) throw new StateValueTooLargeError(key, value.length, maxBytes)
      return value === undefined ? undefined : Buffer.from(value)
    })
  }

  async set (key: string, value: Buffer, ttlMs?: number): Promise<void> {
    const ttl = validTtl(ttlMs)
    this.#run('set', () => { this.#values.set(key, Buffer.from(value), { ttl: ttl ?? 0 }) })
  }

  async setIfAbsent (key: string, value: Buffer, ttlMs?: number): Promise<boolean> {
    const ttl = validTtl(ttlMs)
    return this.#run('setIfAbsent', () => {
      if (this.#values.has(key)) return false
      this.#values.set(key, Buffer.from(value), { ttl: ttl ?? 0 })
      return true
    })
  }

  async delete (key: string): Promise<boolean> {
    return this.#run('delete', () => this.#values.delete(key))
  }

  async deleteByPrefix (prefix: string): Promise<number> {
    return this.#run('deleteByPrefix', () => {
      const keys = [...this.#values.keys()].filter((key) => key.startsWith(prefix))
      for (const key of keys) this.#values.delete(key)
      return keys.length
    })
  }

  async deleteIf (key: string, expected: Buffer): Promise<boolean> {
    return this.#run('deleteIf', () => this.#values.get(key)?.equals(expected) === true && this.#values.delete(key))
  }

  async replaceIf (key: string, expected: Buffer, value: Buffer): Promise<boolean> {
    return this.#run('replaceIf', () => {
      if (this.#values.get(key)?.equals(expected) !== true) return false
      this.#values.set(key, Buffer.from(value), { noUpdateTTL: true })
      return true
    })
  }

  async increment (key: string, windowMs: number): Promise<{ count: number, ttlMs: number }> {
    const ttl = validTtl(windowMs) as number
    return this.#run('increment', () => {
      const count = Number(this.#values.get(key)?.toString() ?? 0) + 1
      if (count === 1) this.#values.set(key, Buffer.from(String(count)), { ttl })
      else this.#values.set(key, Buffer.from(String(count)), { noUpdateTTL: true })
      return { count, ttlMs: Math.ceil(this.#values.getRemainingTTL(key)) }
    })
  }

  lock (key: string): StoreLock {
    const token = randomBytes(16)
    const holds = (): boolean => this.#values.get(key)?.equals(token) === true
    return {
      key,
      obtain: async (ttlMs) => {
        const ttl = validTtl(ttlMs)
        return this.#run('lock.obtain', () => {
          if (this.#values.has(key)) return false
          this.#values.set(key, token, { ttl })
          return true
        })
      },
      refresh: async (ttlMs) => {
        const ttl = validTtl(ttlMs)
        return this.#run('lock.refresh', () => {
          if (!holds()) return false
          this.#values.set(key, token, { ttl })
          return true
        })
      },
      release: async () => this.#run('lock.release', () => holds() && this.#values.delete(key))
    }
  }

  async subscribe (channel: string, handler: Handler): Promise<() => Promise<void>> {
    return this.#run('subscribe', () => {
      let handlers = this.#channels.get(channel)
      if (handlers === undefined) this.#channels.set(channel, handlers = new Set())
      // A wrapper per subscription: the same function subscribed twice is two subscriptions.
      const subscription: Handler = (message) => { handler(message) }
      handlers.add(subscription)
      return async () => {
        handlers.delete(subscription)
        if (handlers.size === 0 && this.#channels.get(channel) === handlers) this.#channels.delete(channel)
      }
    })
  }

  async publish (channel: string, message: Buffer): Promise<void> {
    this.#run('publish', () => {
      const handlers = [...(this.#channels.get(channel) ?? [])]
      // Delivered later, never inside publish(), as from Redis.
      for (const handler of handlers) {
        setImmediate(() => {
          try {
            handler(Buffer.from(message))
          } catch (err) {
            this.#logger?.warn({ channel, err }, 'state store notification handler failed')
          }
        })
      }
    })
  }

  async ping (): Promise<void> {
    this.#run('ping', () => {})
  }

  async waitUntilUp (): Promise<boolean> {
    return !this.#closed
  }

  /** Memory never disconnects: the listener never runs. */
  onUp (): () => void {
    return () => {}
  }

  stats (): StoreStats {
    return this.#stats.snapshot('memory', !this.#closed)
  }

  async close (): Promise<void> {
    this.#closed = true
    this.#values.clear()
    this.#channels.clear()
  }

  #run<T>(operation: string, fn: () => T): T {
    const startedAt = performance.now()
    if (this.#closed) {
      this.#stats.record(operation, startedAt, false)
      throw new StoreUnavailableError(operation, 'the store is closed')
    }
    const result = fn()
    this.#stats.record(operation, startedAt, true)
    return result
  }
}
