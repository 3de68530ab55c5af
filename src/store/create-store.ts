// Picks the store, the way @fastify/rate-limit picks its own: Redis (sealed)
// when Redis is configured, else memory. There is no file-backed store: the one
// thing that must outlive the process without Redis, the client credentials,
// already has its file (adobe/credential-store.ts), which stays the durable
// copy in fleet mode too; everything else (token, cache, counters) is cheap to
// rebuild and is kept in memory.
import type { Logger } from 'pino'
import type { RedisSettings } from '../config/settings.js'
import type { StateKey } from './encryption-keys.js'
import { StateKeyError } from './errors.js'
import { MemoryStore } from './memory-store.js'
import { RedisStore, type RedisStoreOptions } from './redis-store.js'
import { SealedStore } from './sealed-store.js'
import type { OperationObserver, StateStore } from './state-store.js'

export interface StoreSettings {
  /** The Redis section of the settings (config/redis-settings.ts); absent: one process, memory only. */
  redis?: RedisSettings | undefined
  /** STATE_ENCRYPTION_KEY, parsed (encryption-keys.ts); required with Redis. */
  encryptionKeys?: readonly StateKey[] | undefined
  /** Timings beyond the settings (tests shorten reconnects). */
  tuning?: Omit<RedisStoreOptions, 'redis' | 'logger' | 'onOperation'>
  logger?: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'> | undefined
  onOperation?: OperationObserver | undefined
  /** Reads only: nothing read is re-sealed (`cmu-proxy check`). */
  readOnly?: boolean | undefined
}

export function createStore (settings: StoreSettings): StateStore {
  const { redis, logger, onOperation } = settings
  if (redis === undefined) return new MemoryStore({ logger, onOperation })
  const keys = settings.encryptionKeys ?? []
  if (keys.length === 0) throw new StateKeyError('STATE_ENCRYPTION_KEY', `is required with ${redis.variable} (or STATE_ENCRYPTION_KEY_FILE): nothing is written to Redis unsealed`)
  const store = new RedisStore({ commandTimeoutMs: redis.commandTimeoutMs, ...settings.tuning, redis, logger, onOperation })
  return new SealedStore(store, keys, { logger, readOnly: settings.readOnly })
}
