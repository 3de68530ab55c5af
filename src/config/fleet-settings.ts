// Fleet mode's section: where Redis is (redis-settings.ts), the key prefix,
// the lock and command timings, and the state keys that seal everything the
// fleet writes. Defined only when some Redis is configured.
import { createSecretKey, type KeyObject } from 'node:crypto'
import { problemOf, type ProblemList } from './problems.js'
import { redisProblems, redisSettings, redisVariable, usesRedis, type RedisSettings } from './redis-settings.js'
import type { Config } from './schema.js'
import { decodeStateKeys } from './state-key-list.js'

/** Fleet mode: the state shared through Redis (fleet/, store/). */
export interface FleetSettings {
  /** Topology, authentication and TLS; `redis.target` says where without a credential. */
  readonly redis: RedisSettings
  /** REDIS_KEY_PREFIX */
  readonly keyPrefix: string
  /** REDIS_COMMAND_TIMEOUT_MS, REDIS_LOCK_TTL_MS */
  readonly commandTimeoutMs: number
  readonly lockTtlMs: number
  /** STATE_ENCRYPTION_KEY (or its file), decoded: AES-256 keys, the first seals. A KeyObject never prints its bytes. */
  readonly stateKeys: readonly KeyObject[]
}

const REDIS_VARIABLES = ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_SENTINEL_NAME', 'REDIS_CLUSTER', 'REDIS_TLS_CA', 'REDIS_TLS_CA_FILE', 'REDIS_TLS_CERT', 'REDIS_TLS_CERT_FILE', 'REDIS_TLS_KEY', 'REDIS_TLS_KEY_FILE'] as const

export function fleetSettings (config: Config, problems: ProblemList): FleetSettings | undefined {
  const { REDIS_URL: redisUrl } = config
  // Never echoed: it may hold a password.
  problems.check(['REDIS_URL'], () => {
    if (redisUrl === undefined) return undefined
    if (!URL.canParse(redisUrl)) return problemOf('REDIS_URL', 'is not a valid URL')
    return new URL(redisUrl).hostname === '' ? problemOf('REDIS_URL', 'names no host') : undefined
  })
  problems.check(REDIS_VARIABLES, () => redisProblems(config))
  const stateKeys = stateKeySettings(config, problems)
  // A lock holder's few commands (read, write, publish) must fit in
  // its lock even when each one takes its full timeout; a shorter lock would
  // expire mid-work and let a second instance register or fetch.
  problems.check(['REDIS_LOCK_TTL_MS', 'REDIS_COMMAND_TIMEOUT_MS', 'REDIS_URL', 'REDIS_SENTINELS'], () => usesRedis(config) && config.REDIS_LOCK_TTL_MS < 3 * config.REDIS_COMMAND_TIMEOUT_MS
    ? problemOf('REDIS_LOCK_TTL_MS', `must be at least 3 × REDIS_COMMAND_TIMEOUT_MS (${3 * config.REDIS_COMMAND_TIMEOUT_MS} ms)`)
    : undefined)
  if (problems.size > 0 || !usesRedis(config)) return undefined
  const redis = redisSettings(config)
  if (redis === undefined) return undefined
  return {
    redis,
    keyPrefix: config.REDIS_KEY_PREFIX,
    commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS,
    lockTtlMs: config.REDIS_LOCK_TTL_MS,
    stateKeys
  }
}

/** Required in fleet mode (nothing is written to Redis unsealed) and, when set, well-formed. */
function stateKeySettings (config: Config, problems: ProblemList): KeyObject[] {
  const variable = config.STATE_ENCRYPTION_KEY_FILE === undefined ? 'STATE_ENCRYPTION_KEY' : 'STATE_ENCRYPTION_KEY_FILE'
  const uses = ['STATE_ENCRYPTION_KEY', 'STATE_ENCRYPTION_KEY_FILE', 'REDIS_URL', 'REDIS_SENTINELS'] as const
  if (config.STATE_ENCRYPTION_KEY === undefined) {
    problems.check(uses, () => usesRedis(config)
      ? problemOf(variable, `is required with ${redisVariable(config)} (or STATE_ENCRYPTION_KEY_FILE): nothing is written to Redis unsealed; generate a key with: openssl rand -base64 32`)
      : undefined)
    return []
  }
  const decoded = decodeStateKeys(config.STATE_ENCRYPTION_KEY)
  if ('problem' in decoded) {
    problems.check(uses, () => problemOf(variable, decoded.problem))
    return []
  }
  // Secret KeyObjects hold their own copy; the decoded bytes are wiped.
  const keys = usesRedis(config) ? decoded.keys.map((bytes) => createSecretKey(bytes)) : []
  for (const bytes of decoded.keys) bytes.fill(0)
  return keys
}
