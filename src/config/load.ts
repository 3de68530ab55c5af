// The one place that reads the environment. loadConfig() merges an optional
// env file, the real environment (which wins) and mounted secret files, then
// validates everything against one schema (env-schema, the validator behind
// @fastify/env). The Config type is derived from that schema.
import { readFileSync, existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseEnv } from 'node:util'
import envSchema from 'env-schema'
import { parseKeyList } from './key-list.js'
import { parseKeyValueList } from './key-value-list.js'
import { isLoopbackHost } from '../kernel/loopback.js'
import { RATE_LIMIT_PATTERN, parseRateLimitOverrides } from './rate-limit-rules.js'
import { decodeStateKeys } from './state-key-list.js'
import { redisProblems, redisVariable, usesRedis } from './redis-settings.js'

// Durations end up in setTimeout, which fires after 1 ms when given more than
// 2^31-1 ms: every one has a ceiling far below that (an hour).
const MAX_DURATION_MS = 3_600_000
const ms = (defaultValue: number, minimum = 1) => ({ type: 'integer', minimum, maximum: MAX_DURATION_MS, default: defaultValue }) as const

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
    TOKEN_REFRESH_MARGIN_SECONDS: { type: 'integer', minimum: 0, maximum: 86_400, default: 60 },
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
    // An expired entry is kept this long to be served when Adobe fails (stale-if-error, RFC 5861).
    CACHE_STALE_IF_ERROR_SECONDS: { type: 'integer', minimum: 0, default: 24 * 3600 },
    // Past its TTL, an entry answers at once for this long while one background refresh runs
    // (stale-while-revalidate). Unset: 10% of the entry's TTL, at least 30 s. 0 turns it off.
    CACHE_STALE_WHILE_REVALIDATE_SECONDS: { type: 'integer', minimum: 0 },

    // Inbound keys for /cmu (comma-separated, or one per line in the _FILE); unset = open,
    // which is allowed only on a loopback HOST unless PROXY_ALLOW_ANONYMOUS=true.
    PROXY_API_KEYS: { type: 'string' },
    PROXY_API_KEYS_FILE: { type: 'string', minLength: 1 },
    PROXY_ALLOW_ANONYMOUS: { type: 'boolean', default: false },
    // Enables /admin/* when set.
    ADMIN_API_KEY: { type: 'string', minLength: 16 },
    ADMIN_API_KEY_FILE: { type: 'string', minLength: 1 },

    // Per caller: its API key, or its address when no keys are configured. "600/minute", also /second, /hour.
    RATE_LIMIT: { type: 'string', pattern: RATE_LIMIT_PATTERN },
    // Per-key overrides, one "<api key> <rule>" per line (a mounted secret: it holds keys).
    RATE_LIMIT_KEYS: { type: 'string' },
    RATE_LIMIT_KEYS_FILE: { type: 'string', minLength: 1 },

    // Fleet mode: credentials, token, response cache and rate-limit counters shared through Redis.
    // redis:// or rediss:// (TLS); ACL user and password in the URL, or the password in REDIS_PASSWORD(_FILE).
    REDIS_URL: { type: 'string', pattern: '^rediss?://' },
    REDIS_PASSWORD: { type: 'string', minLength: 1 },
    REDIS_PASSWORD_FILE: { type: 'string', minLength: 1 },
    // An ACL user; wins over the one in REDIS_URL (Sentinel has no URL to hold one).
    REDIS_USERNAME: { type: 'string', minLength: 1 },
    // Redis behind Sentinel, instead of REDIS_URL: sentinels as host:port,host:port and the monitored master's name.
    REDIS_SENTINELS: { type: 'string', minLength: 1 },
    REDIS_SENTINEL_NAME: { type: 'string', minLength: 1 },
    // REDIS_URL names one node of a Redis Cluster; every key of the application goes to one hash slot.
    REDIS_CLUSTER: { type: 'boolean', default: false },
    // TLS to Redis (rediss://, or Sentinel with a CA): PEM, each also from a _FILE (read at start).
    REDIS_TLS_CA: { type: 'string', minLength: 1 },
    REDIS_TLS_CA_FILE: { type: 'string', minLength: 1 },
    REDIS_TLS_CERT: { type: 'string', minLength: 1 },
    REDIS_TLS_CERT_FILE: { type: 'string', minLength: 1 },
    REDIS_TLS_KEY: { type: 'string', minLength: 1 },
    REDIS_TLS_KEY_FILE: { type: 'string', minLength: 1 },
    // Every key starts with this, then the statement's fingerprint (or the client id's): applications never share state.
    REDIS_KEY_PREFIX: { type: 'string', pattern: '^[^\\s]*$', maxLength: 64, default: 'cmu-proxy:' },
    // The longest any caller waits on one Redis command; past it, Redis counts as unavailable for that call.
    REDIS_COMMAND_TIMEOUT_MS: ms(250),
    // Fleet-wide locks (one registration, one token call, one upstream call per report) expire after this
    // unless their holder is alive to extend them: how long a crashed holder delays the others.
    REDIS_LOCK_TTL_MS: ms(5_000, 100),
    // Required with REDIS_URL: 32-byte keys, base64 or hex, comma-separated; the first seals, all open.
    STATE_ENCRYPTION_KEY: { type: 'string' },
    STATE_ENCRYPTION_KEY_FILE: { type: 'string', minLength: 1 },

    // On SIGTERM/SIGINT: stop accepting, let in-flight responses finish for this long, then exit.
    SHUTDOWN_GRACE_SECONDS: { type: 'integer', minimum: 0, maximum: MAX_DURATION_MS / 1000, default: 10 },

    // Egress proxy for every call to Adobe; lower-case names are read too (proxy/dispatchers.ts).
    HTTPS_PROXY: { type: 'string', pattern: '^https?://[^/?#]' },
    HTTP_PROXY: { type: 'string', pattern: '^https?://[^/?#]' },
    NO_PROXY: { type: 'string' },

    // OpenTelemetry traces (tracing.ts), by the standard names: on with an OTLP endpoint or
    // OTEL_TRACES_EXPORTER=otlp, exported over OTLP/HTTP.
    OTEL_EXPORTER_OTLP_ENDPOINT: { type: 'string', pattern: '^https?://' },
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: { type: 'string', pattern: '^https?://' },
    OTEL_EXPORTER_OTLP_HEADERS: { type: 'string' },
    OTEL_EXPORTER_OTLP_TRACES_HEADERS: { type: 'string' },
    OTEL_EXPORTER_OTLP_PROTOCOL: { type: 'string', enum: ['http/json', 'http/protobuf'] },
    OTEL_TRACES_EXPORTER: { type: 'string', enum: ['otlp', 'none'] },
    OTEL_SDK_DISABLED: { type: 'boolean', default: false },
    OTEL_SERVICE_NAME: { type: 'string', minLength: 1, default: 'cmu-proxy' },
    OTEL_RESOURCE_ATTRIBUTES: { type: 'string' },
    OTEL_TRACES_SAMPLER: { type: 'string', enum: ['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'] },
    OTEL_TRACES_SAMPLER_ARG: { type: 'string', pattern: '^(0(\\.[0-9]+)?|1(\\.0+)?)$' },
    // Send traceparent on to Adobe (a third party: off unless asked for).
    TRACE_PROPAGATE_TO_ADOBE: { type: 'boolean', default: false }
  },
  required: ['HOST', 'PORT']
} as const

type Schema = typeof configSchema
type Props = Schema['properties']
type ValueOf<P> = P extends { type: 'integer' | 'number' } ? number : P extends { type: 'boolean' } ? boolean : string
type WithDefault = { [K in keyof Props]: Props[K] extends { default: unknown } ? K : never }[keyof Props]

/** The validated configuration: exactly the variables of the schema, with defaults applied. */
export type Config = { readonly [K in WithDefault]: ValueOf<Props[K]> } & { readonly [K in Exclude<keyof Props, WithDefault>]?: ValueOf<Props[K]> }

/** EX_CONFIG from sysexits.h: lets supervisors tell "fix your settings" from a crash. */
export const EXIT_CONFIG = 78

/** One bad or missing setting: `problem` completes a sentence that starts with the variable's name. */
export interface ConfigProblem { variable: string, problem: string }

/** Every bad or missing setting found; `message` has one line per problem, each naming its variable. */
export class ConfigError extends Error {
  readonly problems: readonly ConfigProblem[]
  /** The first variable named. */
  readonly variable: string
  constructor (problems: readonly ConfigProblem[]) {
    super(problems.map(({ variable, problem }) => `${variable} ${problem}`).join('\n'))
    this.name = 'ConfigError'
    this.problems = problems
    this.variable = problems[0]?.variable ?? 'configuration'
  }

  get lines (): string[] { return this.message.split('\n') }
}

// Values of these are never echoed in an error message.
// The proxy URLs and REDIS_URL may hold a password.
const SECRET_VARIABLES = new Set(['ADOBE_SOFTWARE_STATEMENT', 'ADOBE_CLIENT_SECRET', 'PROXY_API_KEYS', 'ADMIN_API_KEY', 'RATE_LIMIT_KEYS', 'HTTPS_PROXY', 'HTTP_PROXY', 'OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS', 'REDIS_URL', 'REDIS_PASSWORD', 'REDIS_TLS_KEY', 'STATE_ENCRYPTION_KEY'])
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

/**
 * The validated configuration, or a ConfigError listing every problem at once
 * (fixing one bad variable per start is slow), without echoing a secret.
 */
export function loadConfig ({ env = process.env, cwd = process.cwd() }: LoadConfigOptions = {}): Config {
  const problems: ConfigProblem[] = []
  const merged: Env = { ...readEnvFile(env, cwd, problems), ...definedOnly(env) }
  for (const name of PROXY_VARIABLES) {
    const value = [merged[name.toLowerCase()], merged[name]].find((v) => v !== undefined && v !== '')
    if (value === undefined) delete merged[name]
    else merged[name] = value
  }
  readSecretFile(merged, problems, 'ADOBE_SOFTWARE_STATEMENT', resolve(cwd, 'config/software-statement.jwt'))
  readSecretFile(merged, problems, 'ADOBE_CLIENT_SECRET')
  readSecretFile(merged, problems, 'PROXY_API_KEYS')
  readSecretFile(merged, problems, 'ADMIN_API_KEY')
  readSecretFile(merged, problems, 'RATE_LIMIT_KEYS')
  readSecretFile(merged, problems, 'REDIS_PASSWORD')
  for (const name of ['REDIS_TLS_CA', 'REDIS_TLS_CERT', 'REDIS_TLS_KEY']) readSecretFile(merged, problems, name)
  readSecretFile(merged, problems, 'STATE_ENCRYPTION_KEY')
  // A variable whose file could not be read is not reported again as missing.
  const bad = new Set(problems.flatMap(({ variable }) => [variable, variable.replace(/_FILE$/, '')]))

  let config: Config
  try {
    config = validate(merged)
  } catch (err) {
    const schemaProblems = toProblems(err, merged)
    problems.push(...schemaProblems)
    for (const { variable } of schemaProblems) bad.add(variable)
    // Validate again with defaults in place of the bad values, so the rules
    // that do not involve them are still checked and reported now.
    try {
      config = validate(Object.fromEntries(Object.entries(merged).filter(([name]) => !bad.has(name))))
    } catch {
      throw new ConfigError(problems)
    }
  }
  for (const rule of CROSS_FIELD_RULES) {
    if (rule.uses.some((name) => bad.has(name))) continue
    const problem = rule.check(config)
    if (Array.isArray(problem)) problems.push(...problem)
    else if (problem !== undefined) problems.push(problem as ConfigProblem)
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return config
}

function validate (data: Env): Config {
  return envSchema({ schema: structuredClone(configSchema) as object, data, env: false }) as unknown as Config
}

function definedOnly (env: Env): Env {
  const out: Env = {}
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v
  return out
}

function readEnvFile (env: Env, cwd: string, problems: ConfigProblem[]): Env {
  const explicit = env.CMU_PROXY_ENV_FILE
  const path = explicit !== undefined ? resolve(cwd, explicit) : resolve(cwd, 'config/cmu-proxy.env')
  if (explicit === undefined && !existsSync(path)) return {}
  try {
    return parseEnv(readFileSync(path, 'utf8'))
  } catch (err) {
    problems.push({ variable: 'CMU_PROXY_ENV_FILE', problem: `cannot be read (${describeFsError(err)}): ${path}` })
    return {}
  }
}

/** NAME_FILE points at a mounted secret; its trimmed content becomes NAME. */
function readSecretFile (env: Env, problems: ConfigProblem[], name: string, defaultPath?: string): void {
  const fileVar = `${name}_FILE`
  const explicit = env[fileVar]
  if (explicit !== undefined && env[name] !== undefined) {
    problems.push({ variable: fileVar, problem: `and ${name} are both set; set only one of them` })
    return
  }
  if (env[name] !== undefined) return
  const path = explicit ?? defaultPath
  if (path === undefined || (explicit === undefined && !existsSync(path))) return
  let content: string
  try {
    content = readFileSync(path, 'utf8').trim()
  } catch (err) {
    problems.push({ variable: fileVar, problem: `cannot be read (${describeFsError(err)}): ${path}` })
    return
  }
  if (content === '') {
    problems.push({ variable: fileVar, problem: `points at an empty file: ${path}` })
    return
  }
  env[fileVar] = path
  env[name] = content
}

function describeFsError (err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'unreadable'
}

interface AjvError { instancePath: string, message?: string, params: Record<string, unknown> }

/** One problem per variable (ajv may find several in one value: the first says enough). */
function toProblems (err: unknown, merged: Env): ConfigProblem[] {
  const errors = (err as { errors?: AjvError[] }).errors ?? []
  if (errors.length === 0) return [{ variable: 'configuration', problem: String((err as Error).message) }]
  const problems = new Map<string, string>()
  for (const error of errors) {
    const variable = error.instancePath.replace(/^\//, '') || String(error.params.missingProperty ?? 'configuration')
    if (problems.has(variable)) continue
    let problem = error.message ?? 'is invalid'
    if (Array.isArray(error.params.allowedValues)) problem += `: ${error.params.allowedValues.join(', ')}`
    if (variable === 'ADOBE_SOFTWARE_STATEMENT' && error.params.pattern !== undefined) {
      problem = 'is not a JWT (three base64url parts separated by dots)'
    }
    if (variable.endsWith('_PROXY') && error.params.pattern !== undefined) problem = 'must be an http:// or https:// URL such as http://proxy.example:3128'
    if (variable === 'RATE_LIMIT' && error.params.pattern !== undefined) {
      problem = 'must be a number of requests per second, minute or hour, e.g. 600/minute'
    }
    const value = merged[variable]
    const shown = value === undefined || SECRET_VARIABLES.has(variable) ? '' : ` (got ${echo(value)})`
    problems.set(variable, `${problem}${shown}`)
  }
  return [...problems].map(([variable, problem]) => ({ variable, problem }))
}

interface CrossFieldRule {
  /** Not checked when one of these already has a problem: it would only repeat it. */
  uses: ReadonlyArray<keyof Props>
  check: (config: Config) => ConfigProblem | readonly ConfigProblem[] | undefined
}

const problemOf = (variable: string, text: string): ConfigProblem => ({ variable, problem: text })

function baseUrlRule (name: 'ADOBE_AUTH_URL' | 'ADOBE_CMU_URL'): CrossFieldRule {
  return {
    uses: [name],
    check: (config) => {
      let url: URL
      try {
        url = new URL(config[name])
      } catch {
        return problemOf(name, `is not a valid URL (got ${echo(config[name])})`)
      }
      if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
        return problemOf(name, 'must be a plain base URL without query, fragment or user info')
      }
      return undefined
    }
  }
}

/** Rules over more than one variable, or beyond what the schema can say; each independent of the others. */
const CROSS_FIELD_RULES: readonly CrossFieldRule[] = [
  // OTel's key=value lists: a bad one would otherwise crash the start of tracing. Values may be secrets: never echoed.
  ...(['OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS', 'OTEL_RESOURCE_ATTRIBUTES'] as const).map((name): CrossFieldRule => ({
    uses: [name],
    check: (config) => config[name] !== undefined && parseKeyValueList(config[name]) === undefined
      ? problemOf(name, 'must be key=value pairs separated by commas, with percent-encoded values')
      : undefined
  })),
  // The value may hold a password: never echoed.
  ...(['HTTPS_PROXY', 'HTTP_PROXY'] as const).map((name): CrossFieldRule => ({
    uses: [name],
    check: (config) => config[name] !== undefined && !URL.canParse(config[name]) ? problemOf(name, 'is not a valid URL') : undefined
  })),
  baseUrlRule('ADOBE_AUTH_URL'),
  baseUrlRule('ADOBE_CMU_URL'),
  {
    uses: ['ADOBE_CLIENT_ID', 'ADOBE_CLIENT_SECRET'],
    check: (config) => (config.ADOBE_CLIENT_ID === undefined) === (config.ADOBE_CLIENT_SECRET === undefined)
      ? undefined
      : problemOf(config.ADOBE_CLIENT_ID === undefined ? 'ADOBE_CLIENT_ID' : 'ADOBE_CLIENT_SECRET', 'is required when the other half of the client credentials is set')
  },
  {
    uses: ['ADOBE_SOFTWARE_STATEMENT', 'ADOBE_CLIENT_ID'],
    check: (config) => config.ADOBE_SOFTWARE_STATEMENT !== undefined || config.ADOBE_CLIENT_ID !== undefined
      ? undefined
      : problemOf('ADOBE_SOFTWARE_STATEMENT', 'is required (or ADOBE_SOFTWARE_STATEMENT_FILE, or config/software-statement.jwt, or ADOBE_CLIENT_ID + ADOBE_CLIENT_SECRET)')
  },
  {
    uses: ['PROXY_API_KEYS', 'PROXY_API_KEYS_FILE'],
    check: (config) => parseKeyList(config.PROXY_API_KEYS).some((key) => key.length < MIN_KEY_LENGTH)
      ? problemOf(config.PROXY_API_KEYS_FILE === undefined ? 'PROXY_API_KEYS' : 'PROXY_API_KEYS_FILE', `must hold keys of at least ${MIN_KEY_LENGTH} characters each`)
      : undefined
  },
  {
    // Secure by default, like Redis's protected mode: reachable from other
    // machines without keys only when someone said so.
    uses: ['HOST', 'PROXY_API_KEYS', 'PROXY_API_KEYS_FILE', 'PROXY_ALLOW_ANONYMOUS'],
    check: (config) => isLoopbackHost(config.HOST) || config.PROXY_ALLOW_ANONYMOUS || parseKeyList(config.PROXY_API_KEYS).length > 0
      ? undefined
      : problemOf('PROXY_API_KEYS', `is required when HOST (${config.HOST}) is not a loopback address: set PROXY_API_KEYS or PROXY_API_KEYS_FILE, or PROXY_ALLOW_ANONYMOUS=true to let anyone who reaches the port read CMU reports`)
  },
  {
    uses: ['CACHE_MAX_ENTRY_BYTES', 'CACHE_MAX_BYTES'],
    check: (config) => config.CACHE_MAX_ENTRY_BYTES > config.CACHE_MAX_BYTES ? problemOf('CACHE_MAX_ENTRY_BYTES', 'must not be larger than CACHE_MAX_BYTES') : undefined
  },
  {
    uses: ['RATE_LIMIT', 'RATE_LIMIT_KEYS', 'RATE_LIMIT_KEYS_FILE', 'PROXY_API_KEYS', 'PROXY_API_KEYS_FILE'],
    check: rateLimitOverridesProblem
  },
  {
    uses: ['REDIS_URL'],
    check: (config) => {
      if (config.REDIS_URL === undefined) return undefined
      try {
        const url = new URL(config.REDIS_URL)
        return url.hostname === '' ? problemOf('REDIS_URL', 'names no host') : undefined
      } catch {
        // Never echoed: it may hold a password.
        return problemOf('REDIS_URL', 'is not a valid URL')
      }
    }
  },
  {
    uses: ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_SENTINEL_NAME', 'REDIS_CLUSTER', 'REDIS_TLS_CA', 'REDIS_TLS_CA_FILE', 'REDIS_TLS_CERT', 'REDIS_TLS_CERT_FILE', 'REDIS_TLS_KEY', 'REDIS_TLS_KEY_FILE'],
    check: (config) => redisProblems(config)
  },
  {
    uses: ['STATE_ENCRYPTION_KEY', 'STATE_ENCRYPTION_KEY_FILE', 'REDIS_URL', 'REDIS_SENTINELS'],
    check: stateEncryptionKeyProblem
  },
  {
    // A lock holder's few commands (read, write, publish) must fit in
    // its lock even when each one takes its full timeout; a shorter lock would
    // expire mid-work and let a second instance register or fetch.
    uses: ['REDIS_LOCK_TTL_MS', 'REDIS_COMMAND_TIMEOUT_MS', 'REDIS_URL', 'REDIS_SENTINELS'],
    check: (config) => usesRedis(config) && config.REDIS_LOCK_TTL_MS < 3 * config.REDIS_COMMAND_TIMEOUT_MS
      ? problemOf('REDIS_LOCK_TTL_MS', `must be at least 3 × REDIS_COMMAND_TIMEOUT_MS (${3 * config.REDIS_COMMAND_TIMEOUT_MS} ms)`)
      : undefined
  },
  {
    uses: ['TOKEN_RETRY_MAX_MS', 'TOKEN_RETRY_BASE_MS'],
    check: (config) => config.TOKEN_RETRY_MAX_MS < config.TOKEN_RETRY_BASE_MS ? problemOf('TOKEN_RETRY_MAX_MS', 'must not be smaller than TOKEN_RETRY_BASE_MS') : undefined
  }
]

/** The Adobe URLs that are plain http:// to another machine: the token (or client secret) would cross in clear. */
export function cleartextAdobeUrls (config: Config): Array<'ADOBE_AUTH_URL' | 'ADOBE_CMU_URL'> {
  return (['ADOBE_AUTH_URL', 'ADOBE_CMU_URL'] as const).filter((name) => {
    const url = new URL(config[name])
    return url.protocol === 'http:' && !isLoopbackHost(url.hostname)
  })
}

/** Required in fleet mode (nothing is written to Redis unsealed) and, when set, well-formed. */
function stateEncryptionKeyProblem (config: Config): ConfigProblem | undefined {
  const variable = config.STATE_ENCRYPTION_KEY_FILE === undefined ? 'STATE_ENCRYPTION_KEY' : 'STATE_ENCRYPTION_KEY_FILE'
  if (config.STATE_ENCRYPTION_KEY === undefined) {
    return usesRedis(config) ? problemOf(variable, `is required with ${redisVariable(config)} (or STATE_ENCRYPTION_KEY_FILE): nothing is written to Redis unsealed; generate a key with: openssl rand -base64 32`) : undefined
  }
  const decoded = decodeStateKeys(config.STATE_ENCRYPTION_KEY)
  if ('problem' in decoded) return problemOf(variable, decoded.problem)
  for (const key of decoded.keys) key.fill(0)
  return undefined
}

function rateLimitOverridesProblem (config: Config): ConfigProblem | undefined {
  if (config.RATE_LIMIT_KEYS === undefined) return undefined
  const variable = config.RATE_LIMIT_KEYS_FILE === undefined ? 'RATE_LIMIT_KEYS' : 'RATE_LIMIT_KEYS_FILE'
  if (config.RATE_LIMIT === undefined) return problemOf(variable, 'needs RATE_LIMIT, the limit for every other key')
  const overrides = parseRateLimitOverrides(config.RATE_LIMIT_KEYS)
  // The line number, never the line: it holds a key.
  if ('badLine' in overrides) return problemOf(variable, `line ${overrides.badLine} is not "<api key> <requests>/<second|minute|hour>"`)
  const keys = new Set(parseKeyList(config.PROXY_API_KEYS))
  for (const key of overrides.keys()) {
    if (!keys.has(key)) return problemOf(variable, 'names a key that is not one of PROXY_API_KEYS')
  }
  return undefined
}

/** A bad value as shown in an error: quoted, cut short, and with any user:password@ in it masked. */
function echo (value: string): string {
  return JSON.stringify(value.slice(0, 80).replace(/\/\/[^/@\s]*@/, '//***@'))
}
