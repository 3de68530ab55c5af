// The one place that reads the environment. loadConfig() merges an optional
// env file, the real environment (which wins) and mounted secret files, then
// validates everything against one schema (env-schema, the validator behind
// @fastify/env). The Config type is derived from that schema.
import { readFileSync, existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseEnv } from 'node:util'
import envSchema from 'env-schema'
import { parseKeyList } from './proxy/api-keys.js'

const ms = (defaultValue: number, minimum = 1) => ({ type: 'integer', minimum, default: defaultValue }) as const

export const configSchema = {
  type: 'object',
  properties: {
    HOST: { type: 'string', minLength: 1, default: '127.0.0.1' },
    PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 8080 },
    LOG_LEVEL: { type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },

    ADOBE_SOFTWARE_STATEMENT: { type: 'string', pattern: '^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]*$' },
    ADOBE_SOFTWARE_STATEMENT_FILE: { type: 'string', minLength: 1 },
    ADOBE_CLIENT_ID: { type: 'string', minLength: 1 },
    ADOBE_CLIENT_SECRET: { type: 'string', minLength: 1 },
    ADOBE_CLIENT_SECRET_FILE: { type: 'string', minLength: 1 },
    ADOBE_AUTH_URL: { type: 'string', pattern: '^https?://', default: 'https://api.auth.adobe.com' },
    ADOBE_CMU_URL: { type: 'string', pattern: '^https?://', default: 'https://mgmt.auth.adobe.com/cmu' },
    CREDENTIALS_FILE: { type: 'string', minLength: 1, default: 'data/credentials.json' },
    CMU_PROXY_ENV_FILE: { type: 'string', minLength: 1 },

    // The local path prefix that is forwarded: GET <prefix>/<rest> -> ADOBE_CMU_URL/<rest>.
    PROXY_PATH_PREFIX: { type: 'string', pattern: '^(/[A-Za-z0-9._~-]+)+$', default: '/cmu' },
    UPSTREAM_CONNECT_TIMEOUT_MS: ms(5_000),
    UPSTREAM_HEADERS_TIMEOUT_MS: ms(60_000),
    UPSTREAM_BODY_TIMEOUT_MS: ms(60_000),
    UPSTREAM_CONNECTIONS: { type: 'integer', minimum: 1, maximum: 1024, default: 64 },
    // Requests waiting for Adobe beyond this are refused at once (503 CMU_PROXY_OVERLOADED): undici's queue has no bound.
    UPSTREAM_MAX_PENDING: { type: 'integer', minimum: 1, default: 1000 },
    AUTH_TIMEOUT_MS: ms(10_000),

    // Refresh at about 2/3 of the token's lifetime, and at least this long before expiry.
    TOKEN_REFRESH_MARGIN_SECONDS: { type: 'integer', minimum: 0, default: 60 },
    // Backoff for failed token/registration calls: full jitter between 0 and base * 2^attempt, capped.
    TOKEN_RETRY_BASE_MS: ms(1_000),
    TOKEN_RETRY_MAX_MS: ms(60_000),

    // Response cache of complete 200 answers (cache/): bounded by total and per-entry bytes.
    CACHE_ENABLED: { type: 'boolean', default: true },
    CACHE_MAX_BYTES: { type: 'integer', minimum: 0, default: 64 * 1024 * 1024 },
    CACHE_MAX_ENTRY_BYTES: { type: 'integer', minimum: 0, default: 4 * 1024 * 1024 },
    // What all answers being read into memory for the cache may hold at once; past it they stream uncached.
    CACHE_MAX_INFLIGHT_BYTES: { type: 'integer', minimum: 0, default: 32 * 1024 * 1024 },
    // Caps every TTL (which otherwise follows Adobe's recompute schedule for the report's granularity).
    CACHE_TTL_MAX_SECONDS: { type: 'integer', minimum: 0, default: 2 * 24 * 3600 },

    // Inbound keys for /cmu (comma-separated, or one per line in the _FILE); unset = open.
    PROXY_API_KEYS: { type: 'string' },
    PROXY_API_KEYS_FILE: { type: 'string', minLength: 1 },
    // Enables /admin/* when set.
    ADMIN_API_KEY: { type: 'string', minLength: 16 },
    ADMIN_API_KEY_FILE: { type: 'string', minLength: 1 },

    // On SIGTERM/SIGINT: stop accepting, let in-flight responses finish for this long, then exit.
    SHUTDOWN_GRACE_SECONDS: { type: 'integer', minimum: 0, default: 10 },

    // Egress proxy for every call to Adobe; lower-case names are read too (proxy/dispatchers.ts).
    HTTPS_PROXY: { type: 'string', pattern: '^https?://[^/?#]' },
    HTTP_PROXY: { type: 'string', pattern: '^https?://[^/?#]' },
    NO_PROXY: { type: 'string' }
  },
  required: ['HOST', 'PORT']
} as const

type Schema = typeof configSchema
type Props = Schema['properties']
type ValueOf<P> = P extends { type: 'integer' | 'number' } ? number : P extends { type: 'boolean' } ? boolean : string
type WithDefault = { [K in keyof Props]: Props[K] extends { default: unknown } ? K : never }[keyof Props]

/** The validated configuration: exactly the variables of the schema, with defaults applied. */
export type Config = { readonly [K in WithDefault]: ValueOf<Props[K]> } & { readonly [K in Exclude<keyof Props, WithDefault>]?: ValueOf<Props[K]> }

/** A bad or missing setting; `message` is one line that names the variable. */
export class ConfigError extends Error {
  readonly variable: string
  constructor (variable: string, problem: string) {
    super(`${variable} ${problem}`)
    this.name = 'ConfigError'
    this.variable = variable
  }
}

// Values of these are never echoed in an error message.
const SECRET_VARIABLES = new Set(['ADOBE_SOFTWARE_STATEMENT', 'ADOBE_CLIENT_SECRET', 'PROXY_API_KEYS', 'ADMIN_API_KEY', 'HTTPS_PROXY', 'HTTP_PROXY'])
/** Read in either case, lower case first (as curl and undici do); an empty value means unset. */
const PROXY_VARIABLES = ['HTTPS_PROXY', 'HTTP_PROXY', 'NO_PROXY'] as const
const MIN_KEY_LENGTH = 16

type Env = Record<string, string | undefined>

export interface LoadConfigOptions {
  /** Defaults to process.env; tests pass their own. */
  env?: Env
  /** Directory that relative default paths (config/...) are resolved from. */
  cwd?: string
}

export function loadConfig ({ env = process.env, cwd = process.cwd() }: LoadConfigOptions = {}): Config {
  const merged: Env = { ...readEnvFile(env, cwd), ...definedOnly(env) }
  for (const name of PROXY_VARIABLES) {
    const value = [merged[name.toLowerCase()], merged[name]].find((v) => v !== undefined && v !== '')
    if (value === undefined) delete merged[name]
    else merged[name] = value
  }
  readSecretFile(merged, 'ADOBE_SOFTWARE_STATEMENT', resolve(cwd, 'config/software-statement.jwt'))
  readSecretFile(merged, 'ADOBE_CLIENT_SECRET')
  readSecretFile(merged, 'PROXY_API_KEYS')
  readSecretFile(merged, 'ADMIN_API_KEY')

  let config: Config
  try {
    config = envSchema({ schema: structuredClone(configSchema) as object, data: merged, env: false }) as unknown as Config
  } catch (err) {
    throw toConfigError(err, merged)
  }
  checkCrossFieldRules(config)
  return config
}

function definedOnly (env: Env): Env {
  const out: Env = {}
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v
  return out
}

function readEnvFile (env: Env, cwd: string): Env {
  const explicit = env.CMU_PROXY_ENV_FILE
  const path = explicit !== undefined ? resolve(cwd, explicit) : resolve(cwd, 'config/cmu-proxy.env')
  if (explicit === undefined && !existsSync(path)) return {}
  try {
    return parseEnv(readFileSync(path, 'utf8'))
  } catch (err) {
    throw new ConfigError('CMU_PROXY_ENV_FILE', `cannot be read (${describeFsError(err)}): ${path}`)
  }
}

/** NAME_FILE points at a mounted secret; its trimmed content becomes NAME. */
function readSecretFile (env: Env, name: string, defaultPath?: string): void {
  const fileVar = `${name}_FILE`
  const explicit = env[fileVar]
  if (explicit !== undefined && env[name] !== undefined) {
    throw new ConfigError(fileVar, `and ${name} are both set; set only one of them`)
  }
  if (env[name] !== undefined) return
  const path = explicit ?? defaultPath
  if (path === undefined || (explicit === undefined && !existsSync(path))) return
  let content: string
  try {
    content = readFileSync(path, 'utf8').trim()
  } catch (err) {
    throw new ConfigError(fileVar, `cannot be read (${describeFsError(err)}): ${path}`)
  }
  if (content === '') throw new ConfigError(fileVar, `points at an empty file: ${path}`)
  env[fileVar] = path
  env[name] = content
}

function describeFsError (err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'unreadable'
}

interface AjvError { instancePath: string, message?: string, params: Record<string, unknown> }

function toConfigError (err: unknown, merged: Env): ConfigError {
  const first = (err as { errors?: AjvError[] }).errors?.[0]
  if (first === undefined) return new ConfigError('configuration', String((err as Error).message))
  const variable = first.instancePath.replace(/^\//, '') || String(first.params.missingProperty ?? 'configuration')
  let problem = first.message ?? 'is invalid'
  if (Array.isArray(first.params.allowedValues)) problem += `: ${first.params.allowedValues.join(', ')}`
  if (variable === 'ADOBE_SOFTWARE_STATEMENT' && first.params.pattern !== undefined) {
    problem = 'is not a JWT (three base64url parts separated by dots)'
  }
  if (variable.endsWith('_PROXY') && first.params.pattern !== undefined) problem = 'must be an http:// or https:// URL such as http://proxy.example:3128'
  const value = merged[variable]
  const shown = value === undefined || SECRET_VARIABLES.has(variable) ? '' : ` (got ${JSON.stringify(value.slice(0, 80))})`
  return new ConfigError(variable, `${problem}${shown}`)
}

function checkCrossFieldRules (config: Config): void {
  for (const name of ['HTTPS_PROXY', 'HTTP_PROXY'] as const) {
    // The value may hold a password: never echoed.
    if (config[name] !== undefined && !URL.canParse(config[name])) throw new ConfigError(name, 'is not a valid URL')
  }
  for (const name of ['ADOBE_AUTH_URL', 'ADOBE_CMU_URL'] as const) {
    let url: URL
    try {
      url = new URL(config[name])
    } catch {
      throw new ConfigError(name, `is not a valid URL (got ${JSON.stringify(config[name])})`)
    }
    if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
      throw new ConfigError(name, 'must be a plain base URL without query, fragment or user info')
    }
  }
  if ((config.ADOBE_CLIENT_ID === undefined) !== (config.ADOBE_CLIENT_SECRET === undefined)) {
    throw new ConfigError(config.ADOBE_CLIENT_ID === undefined ? 'ADOBE_CLIENT_ID' : 'ADOBE_CLIENT_SECRET',
      'is required when the other half of the client credentials is set')
  }
  if (config.ADOBE_SOFTWARE_STATEMENT === undefined && config.ADOBE_CLIENT_ID === undefined) {
    throw new ConfigError('ADOBE_SOFTWARE_STATEMENT',
      'is required (or ADOBE_SOFTWARE_STATEMENT_FILE, or config/software-statement.jwt, or ADOBE_CLIENT_ID + ADOBE_CLIENT_SECRET)')
  }
  if (parseKeyList(config.PROXY_API_KEYS).some((key) => key.length < MIN_KEY_LENGTH)) {
    throw new ConfigError(config.PROXY_API_KEYS_FILE === undefined ? 'PROXY_API_KEYS' : 'PROXY_API_KEYS_FILE', `must hold keys of at least ${MIN_KEY_LENGTH} characters each`)
  }
  if (config.CACHE_MAX_ENTRY_BYTES > config.CACHE_MAX_BYTES) {
    throw new ConfigError('CACHE_MAX_ENTRY_BYTES', 'must not be larger than CACHE_MAX_BYTES')
  }
  if (config.TOKEN_RETRY_MAX_MS < config.TOKEN_RETRY_BASE_MS) {
    throw new ConfigError('TOKEN_RETRY_MAX_MS', 'must not be smaller than TOKEN_RETRY_BASE_MS')
  }
}
