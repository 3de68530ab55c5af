// Picks the store, the way @fastify/rate-limit picks its own: Redis (sealed)
// when a URL is configured, else memory. There is no file-backed store: the one
// thing that must outlive the process without Redis, the client credentials,
// already has its file (adobe/credential-store.ts), which stays the durable
// copy in fleet mode too; everything else (token, cache, counters) is cheap to
// rebuild and is kept in memory.
import type { Logger } from 'pino'
import type { StateKey } from './encryption-keys.js'
import { StateKeyError } from './errors.js'
import { MemoryStore } from './memory-store.js'
import { RedisStore, type RedisStoreOptions } from './redis-store.js'
import { SealedStore } from './sealed-store.js'
import type { OperationObserver, StateStore } from './state-store.js'

export interface StoreSettings {
  /** REDIS_URL; absent: one process, memory only. */
  redisUrl?: string | undefined
  /** REDIS_PASSWORD_FILE's content. */
  redisPassword?: string | undefined
  /** STATE_ENCRYPTION_KEY, parsed (encryption-keys.ts); required with a Redis URL. */
  encryptionKeys?: readonly StateKey[] | undefined
  redis?: Omit<RedisStoreOptions, 'url' | 'password' | 'logger' | 'onOperation'>
  logger?: Pick<Logger, 'info' | 'warn'> | undefined
  onOperation?: OperationObserver | undefined
  /** Reads only: nothing read is re-sealed (`cmu-proxy check`). */
  readOnly?: boolean | undefined
}

export function createStore (settings: StoreSettings): StateStore {
  const { redisUrl, logger, onOperation } = settings
  if (redisUrl === undefined) return new MemoryStore({ logger, onOperation })
  const keys = settings.encryptionKeys ?? []
  if (keys.length === 0) throw new StateKeyError('STATE_ENCRYPTION_KEY', 'is required with REDIS_URL (or STATE_ENCRYPTION_KEY_FILE): nothing is written to Redis unsealed')
  const redis = new RedisStore({ ...settings.redis, url: redisUrl, password: settings.redisPassword, logger, onOperation })
  return new SealedStore(redis, keys, { logger, readOnly: settings.readOnly })
}
