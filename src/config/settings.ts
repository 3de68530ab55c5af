// The settings every module gets: the validated environment (schema.ts,
// load.ts) turned into typed sections, once, at start. Every value that needs
// parsing (key lists, rate-limit rules, state keys, OTel lists, egress
// proxies) is parsed here and nowhere else, and the rules over more than one
// variable are checked here, next to the section they shape. What cannot be
// used is a problem (load.ts then exits 78), never a silent default. app.ts
// hands each module its section.
import { resolve } from 'node:path'
import { isLoopbackHost } from '../kernel/loopback.js'
import { egressProxyFor } from './egress-proxy.js'
import { fleetSettings, type FleetSettings } from './fleet-settings.js'
import { frontDoorSettings, type FrontDoorSettings } from './front-door-settings.js'
import { parseKeyList } from './key-list.js'
import { parseKeyValueList } from './key-value-list.js'
import { echo, problemOf, type ConfigProblem, type ProblemList } from './problems.js'
import { RATE_LIMIT_FORMAT, parseRateLimitOverrides, parseRateLimitRule, type RateLimitRule } from './rate-limit-rules.js'
import type { Config } from './schema.js'
import { tracingSettings, type TracingSettings } from './tracing-settings.js'

export type { RateLimitRule }
export type { SamplerName, TracingSettings } from './tracing-settings.js'
export type { FleetSettings } from './fleet-settings.js'
export type { FrontDoorSettings } from './front-door-settings.js'
export type { RedisNodeAddress, RedisSettings } from './redis-settings.js'

export interface Settings {
  readonly server: ServerSettings
  readonly adobe: AdobeSettings
  readonly token: TokenSettings
  readonly upstream: UpstreamSettings
  readonly cache: CacheSettings
  readonly inbound: InboundSettings
  /** Limits on callers' connections, and the Host names served (proxy/front-door.ts). */
  readonly frontDoor: FrontDoorSettings
  /** Undefined without RATE_LIMIT: no limit. */
  readonly rateLimit: RateLimitSettings | undefined
  /** Undefined without Redis (REDIS_URL or REDIS_SENTINELS): one instance, file and memory. */
  readonly fleet: FleetSettings | undefined
  /** Undefined when tracing is off (the default). */
  readonly tracing: TracingSettings | undefined
}

/** The process: where it listens, how it logs, how it stops (main.ts). */
export interface ServerSettings {
  /** HOST, PORT */
  readonly host: string
  readonly port: number
  /** LOG_LEVEL (pino) */
  readonly logLevel: Config['LOG_LEVEL']
  /** SHUTDOWN_GRACE_SECONDS: how long in-flight responses may finish after SIGTERM. */
  readonly shutdownGraceMs: number
}

/** Pre-provisioned client credentials, in Adobe's wire names. */
export interface StaticCredentials { readonly client_id: string, readonly client_secret: string }

/** Adobe's two origins and who this application is there (adobe/). */
export interface AdobeSettings {
  /** ADOBE_AUTH_URL: the base of /o/client/register and /o/client/token. */
  readonly authUrl: string
  /** ADOBE_CMU_URL: GET <pathPrefix>/<rest> goes to <cmuUrl>/<rest>. */
  readonly cmuUrl: string
  /** ADOBE_ESM_URL: GET /esm/<rest> goes to <esmUrl>/<rest>, with the same token. */
  readonly esmUrl: string
  /** ADOBE_SOFTWARE_STATEMENT (or its file); undefined when only static credentials are given. */
  readonly softwareStatement: string | undefined
  /** ADOBE_CLIENT_ID + ADOBE_CLIENT_SECRET: registration is skipped. */
  readonly staticCredentials: StaticCredentials | undefined
  /** CREDENTIALS_FILE, resolved against the working directory. */
  readonly credentialsFile: string
  /** AUTH_TIMEOUT_MS: connecting to, and each call of, the register and token endpoints. */
  readonly authTimeoutMs: number
  /** The Adobe URLs that are plain http:// to another machine: the token would cross in clear (a warning at start). */
  readonly cleartextUrls: ReadonlyArray<{ readonly variable: AdobeUrlVariable, readonly url: string }>
}

type AdobeUrlVariable = 'ADOBE_AUTH_URL' | 'ADOBE_CMU_URL' | 'ADOBE_ESM_URL'

/** When the token is refreshed, and how failed calls back off (adobe/token-broker.ts). */
export interface TokenSettings {
  /** TOKEN_REFRESH_MARGIN_SECONDS: refresh at least this long before expiry. */
  readonly refreshMarginMs: number
  /** TOKEN_RETRY_BASE_MS, TOKEN_RETRY_MAX_MS: full jitter between 0 and base × 2^attempt, capped. */
  readonly retryBaseMs: number
  readonly retryMaxMs: number
}

/** The egress proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) decided per Adobe origin; undefined is direct. */
export interface AdobeEgress {
  /** For ADOBE_AUTH_URL (register, token). */
  readonly auth: string | undefined
  /** For ADOBE_CMU_URL (CMU reports). */
  readonly cmu: string | undefined
  /** For ADOBE_ESM_URL (ESM reports). */
  readonly esm: string | undefined
}

/** The connections to Adobe (upstream/). */
export interface UpstreamSettings {
  /** UPSTREAM_CONNECTIONS to ADOBE_CMU_URL. */
  readonly connections: number
  /** UPSTREAM_CONNECT_TIMEOUT_MS, UPSTREAM_HEADERS_TIMEOUT_MS, UPSTREAM_BODY_TIMEOUT_MS */
  readonly connectTimeoutMs: number
  readonly headersTimeoutMs: number
  readonly bodyTimeoutMs: number
  /** UPSTREAM_MAX_PENDING: requests waiting beyond this are refused at once (503). */
  readonly maxPending: number
  readonly egress: AdobeEgress
}

/** The response cache (cache/); the sizes also bound the fleet's shared copies. */
export interface CacheSettings {
  /** CACHE_ENABLED */
  readonly enabled: boolean
  /** CACHE_MAX_BYTES, CACHE_MAX_ENTRY_BYTES, CACHE_MAX_INFLIGHT_BYTES */
  readonly maxBytes: number
  readonly maxEntryBytes: number
  readonly maxInflightBytes: number
  /** CACHE_TTL_MAX_SECONDS, CACHE_STALE_IF_ERROR_SECONDS */
  readonly ttlMaxSeconds: number
  readonly staleIfErrorSeconds: number
  /** CACHE_STALE_WHILE_REVALIDATE_SECONDS; undefined: 10% of the entry's TTL, at least 30 s. */
  readonly staleWhileRevalidateSeconds: number | undefined
  /** CACHE_IGNORE_ORIGIN_FRESHNESS: the report schedule decides freshness even when Adobe sends its own. */
  readonly ignoreOriginFreshness: boolean
}

/** Who may call, and where (proxy/, ops/admin.ts). */
export interface InboundSettings {
  /** PROXY_PATH_PREFIX: the local prefix that is forwarded to ADOBE_CMU_URL (/cmu). */
  readonly pathPrefix: string
  /** The local prefix that is forwarded to ADOBE_ESM_URL: /esm, fixed (Adobe's own layout, so ESM's HAL links stay valid). */
  readonly esmPathPrefix: string
  /** PROXY_API_KEYS (or its file); empty: /cmu is open (allowed on loopback, or with allowAnonymous). */
  readonly apiKeys: readonly string[]
  /** PROXY_ALLOW_ANONYMOUS */
  readonly allowAnonymous: boolean
  /** ADMIN_API_KEY (or its file); undefined: no /admin/*. */
  readonly adminKey: string | undefined
}

/** RATE_LIMIT and RATE_LIMIT_KEYS (proxy/rate-limit.ts). */
export interface RateLimitSettings {
  /** Every caller's limit. */
  readonly rule: RateLimitRule
  /** Per-key rules, by API key (each one of inbound.apiKeys). */
  readonly overrides: ReadonlyMap<string, RateLimitRule>
}

/** Keys shorter than this are refused: a key is all that stands between a caller and the reports. */
const MIN_KEY_LENGTH = 16

/** The sections, from a validated Config; what is wrong goes to `problems` (and the result is then of no use). */
export function settingsFrom (config: Config, cwd: string, problems: ProblemList): Settings {
  // In this order, so the problems read in the order of the sections.
  const adobe = adobeSettings(config, cwd, problems)
  const token = tokenSettings(config, problems)
  const upstream = upstreamSettings(config, problems)
  const cache = cacheSettings(config, problems)
  const inbound = inboundSettings(config, problems)
  return {
    server: { host: config.HOST, port: config.PORT, logLevel: config.LOG_LEVEL, shutdownGraceMs: config.SHUTDOWN_GRACE_SECONDS * 1000 },
    adobe,
    token,
    upstream,
    cache,
    inbound,
    frontDoor: frontDoorSettings(config, inbound.apiKeys, problems),
    rateLimit: rateLimitSettings(config, inbound.apiKeys, problems),
    fleet: fleetSettings(config, problems),
    tracing: tracingSettings(config, problems)
  }
}

const ADOBE_URLS: readonly AdobeUrlVariable[] = ['ADOBE_AUTH_URL', 'ADOBE_CMU_URL', 'ADOBE_ESM_URL']

function adobeSettings (config: Config, cwd: string, problems: ProblemList): AdobeSettings {
  for (const name of ADOBE_URLS) problems.check([name], () => baseUrlProblem(name, config[name]))
  const { ADOBE_CLIENT_ID: clientId, ADOBE_CLIENT_SECRET: clientSecret } = config
  problems.check(['ADOBE_CLIENT_ID', 'ADOBE_CLIENT_SECRET'], () => (clientId === undefined) === (clientSecret === undefined)
    ? undefined
    : problemOf(clientId === undefined ? 'ADOBE_CLIENT_ID' : 'ADOBE_CLIENT_SECRET', 'is required when the other half of the client credentials is set'))
  problems.check(['ADOBE_SOFTWARE_STATEMENT', 'ADOBE_CLIENT_ID'], () => config.ADOBE_SOFTWARE_STATEMENT !== undefined || clientId !== undefined
    ? undefined
    : problemOf('ADOBE_SOFTWARE_STATEMENT', 'is required (or ADOBE_SOFTWARE_STATEMENT_FILE, or config/software-statement.jwt, or ADOBE_CLIENT_ID + ADOBE_CLIENT_SECRET)'))
  // The schema checks the shape (three base64url parts); a file read half written, or spliced by an in-place
  // writer, can keep it: the header and payload must also decode to JSON objects (RFC 7519 §7.2) before anything registers with it.
  problems.check(['ADOBE_SOFTWARE_STATEMENT'], () => config.ADOBE_SOFTWARE_STATEMENT === undefined || decodesAsJwt(config.ADOBE_SOFTWARE_STATEMENT)
    ? undefined
    : problemOf('ADOBE_SOFTWARE_STATEMENT', 'is not a JWT: its header and payload must be base64url-encoded JSON objects (was the file read while half written? replace it atomically)'))
  return {
    authUrl: config.ADOBE_AUTH_URL,
    cmuUrl: config.ADOBE_CMU_URL,
    esmUrl: config.ADOBE_ESM_URL,
    softwareStatement: config.ADOBE_SOFTWARE_STATEMENT,
    staticCredentials: clientId !== undefined && clientSecret !== undefined ? { client_id: clientId, client_secret: clientSecret } : undefined,
    credentialsFile: resolve(cwd, config.CREDENTIALS_FILE),
    authTimeoutMs: config.AUTH_TIMEOUT_MS,
    cleartextUrls: ADOBE_URLS.filter((name) => isCleartext(config[name])).map((variable) => ({ variable, url: config[variable] }))
  }
}

function decodesAsJwt (token: string): boolean {
  return token.split('.').slice(0, 2).every((part) => {
    try {
      const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'))
      return typeof value === 'object' && value !== null && !Array.isArray(value)
    } catch {
      return false
    }
  })
}

function baseUrlProblem (name: AdobeUrlVariable, value: string): ConfigProblem | undefined {
  if (!URL.canParse(value)) return problemOf(name, `is not a valid URL (got ${echo(value)})`)
  const url = new URL(value)
  return url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== ''
    ? problemOf(name, 'must be a plain base URL without query, fragment or user info')
    : undefined
}

/** Plain http:// to another machine: the token (or client secret) would cross in clear. */
function isCleartext (value: string): boolean {
  if (!URL.canParse(value)) return false
  const url = new URL(value)
  return url.protocol === 'http:' && !isLoopbackHost(url.hostname)
}

function tokenSettings (config: Config, problems: ProblemList): TokenSettings {
  problems.check(['TOKEN_RETRY_MAX_MS', 'TOKEN_RETRY_BASE_MS'], () => config.TOKEN_RETRY_MAX_MS < config.TOKEN_RETRY_BASE_MS
    ? problemOf('TOKEN_RETRY_MAX_MS', 'must not be smaller than TOKEN_RETRY_BASE_MS')
    : undefined)
  return { refreshMarginMs: config.TOKEN_REFRESH_MARGIN_SECONDS * 1000, retryBaseMs: config.TOKEN_RETRY_BASE_MS, retryMaxMs: config.TOKEN_RETRY_MAX_MS }
}

function upstreamSettings (config: Config, problems: ProblemList): UpstreamSettings {
  for (const name of ['HTTPS_PROXY', 'HTTP_PROXY'] as const) {
    // The value may hold a password: never echoed.
    problems.check([name], () => config[name] !== undefined && !URL.canParse(config[name]) ? problemOf(name, 'is not a valid URL') : undefined)
  }
  const egressFor = (url: string): string | undefined => URL.canParse(url) ? egressProxyFor(url, config) : undefined
  return {
    connections: config.UPSTREAM_CONNECTIONS,
    connectTimeoutMs: config.UPSTREAM_CONNECT_TIMEOUT_MS,
    headersTimeoutMs: config.UPSTREAM_HEADERS_TIMEOUT_MS,
    bodyTimeoutMs: config.UPSTREAM_BODY_TIMEOUT_MS,
    maxPending: config.UPSTREAM_MAX_PENDING,
    egress: { auth: egressFor(config.ADOBE_AUTH_URL), cmu: egressFor(config.ADOBE_CMU_URL), esm: egressFor(config.ADOBE_ESM_URL) }
  }
}

function cacheSettings (config: Config, problems: ProblemList): CacheSettings {
  problems.check(['CACHE_MAX_ENTRY_BYTES', 'CACHE_MAX_BYTES'], () => config.CACHE_MAX_ENTRY_BYTES > config.CACHE_MAX_BYTES
    ? problemOf('CACHE_MAX_ENTRY_BYTES', 'must not be larger than CACHE_MAX_BYTES')
    : undefined)
  return {
    enabled: config.CACHE_ENABLED,
    maxBytes: config.CACHE_MAX_BYTES,
    maxEntryBytes: config.CACHE_MAX_ENTRY_BYTES,
    maxInflightBytes: config.CACHE_MAX_INFLIGHT_BYTES,
    ttlMaxSeconds: config.CACHE_TTL_MAX_SECONDS,
    staleIfErrorSeconds: config.CACHE_STALE_IF_ERROR_SECONDS,
    staleWhileRevalidateSeconds: config.CACHE_STALE_WHILE_REVALIDATE_SECONDS,
    ignoreOriginFreshness: config.CACHE_IGNORE_ORIGIN_FRESHNESS
  }
}

function inboundSettings (config: Config, problems: ProblemList): InboundSettings {
  const apiKeys = parseKeyList(config.PROXY_API_KEYS)
  const keysVariable = config.PROXY_API_KEYS_FILE === undefined ? 'PROXY_API_KEYS' : 'PROXY_API_KEYS_FILE'
  // Set but empty (or only comments) would leave /cmu open on a loopback HOST without a word.
  if (config.PROXY_API_KEYS !== undefined && apiKeys.length === 0) problems.refuse(problemOf(keysVariable, 'holds no key: list keys separated by commas (one per line in a file), or unset it'))
  problems.check(['PROXY_API_KEYS', 'PROXY_API_KEYS_FILE'], () => apiKeys.some((key) => key.length < MIN_KEY_LENGTH)
    ? problemOf(keysVariable, `must hold keys of at least ${MIN_KEY_LENGTH} characters each`)
    : undefined)
  // Secure by default, like Redis's protected mode: reachable from other
  // machines without keys only when someone said so.
  problems.check(['HOST', 'PROXY_API_KEYS', 'PROXY_API_KEYS_FILE', 'PROXY_ALLOW_ANONYMOUS'], () => isLoopbackHost(config.HOST) || config.PROXY_ALLOW_ANONYMOUS || apiKeys.length > 0
    ? undefined
    : problemOf('PROXY_API_KEYS', `is required when HOST (${config.HOST}) is not a loopback address: set PROXY_API_KEYS or PROXY_API_KEYS_FILE, or PROXY_ALLOW_ANONYMOUS=true to let anyone who reaches the port read CMU reports`))
  problems.check(['PROXY_PATH_PREFIX'], () => overlaps(config.PROXY_PATH_PREFIX, ESM_PATH_PREFIX) || overlaps(ESM_PATH_PREFIX, config.PROXY_PATH_PREFIX)
    ? problemOf('PROXY_PATH_PREFIX', `must not be ${ESM_PATH_PREFIX} or overlap it: ${ESM_PATH_PREFIX}/* is the ESM route (got ${echo(config.PROXY_PATH_PREFIX)})`)
    : undefined)
  return { pathPrefix: config.PROXY_PATH_PREFIX, esmPathPrefix: ESM_PATH_PREFIX, apiKeys, allowAnonymous: config.PROXY_ALLOW_ANONYMOUS, adminKey: config.ADMIN_API_KEY }
}

/** ESM's local prefix: Adobe's, as /cmu is CMU's. */
const ESM_PATH_PREFIX = '/esm'

/** `prefix` is `other` or a path under it. */
function overlaps (prefix: string, other: string): boolean {
  return prefix === other || prefix.startsWith(`${other}/`)
}

function rateLimitSettings (config: Config, apiKeys: readonly string[], problems: ProblemList): RateLimitSettings | undefined {
  const rule = config.RATE_LIMIT === undefined ? undefined : parseRateLimitRule(config.RATE_LIMIT)
  if (config.RATE_LIMIT !== undefined && rule === undefined) problems.refuse(problemOf('RATE_LIMIT', `${RATE_LIMIT_FORMAT} (got ${echo(config.RATE_LIMIT)})`))
  let overrides: ReadonlyMap<string, RateLimitRule> = new Map()
  if (config.RATE_LIMIT_KEYS !== undefined) {
    const variable = config.RATE_LIMIT_KEYS_FILE === undefined ? 'RATE_LIMIT_KEYS' : 'RATE_LIMIT_KEYS_FILE'
    const parsed = parseRateLimitOverrides(config.RATE_LIMIT_KEYS)
    problems.check(['RATE_LIMIT', 'RATE_LIMIT_KEYS', 'RATE_LIMIT_KEYS_FILE', 'PROXY_API_KEYS', 'PROXY_API_KEYS_FILE'], () => {
      if (config.RATE_LIMIT === undefined) return problemOf(variable, 'needs RATE_LIMIT, the limit for every other key')
      // The line number, never the line: it holds a key.
      if ('badLine' in parsed) return problemOf(variable, `line ${parsed.badLine} is not "<api key> <requests>/<second|minute|hour>"`)
      const known = new Set(apiKeys)
      return [...parsed.keys()].every((key) => known.has(key)) ? undefined : problemOf(variable, 'names a key that is not one of PROXY_API_KEYS')
    })
    if (!('badLine' in parsed)) overrides = parsed
  }
  return rule === undefined ? undefined : { rule, overrides }
}

/**
 * The secrets a reload applies without a restart (config/reload.ts), each
 * from its variable or its _FILE; every other setting waits for a restart.
 */
export type ReloadableSecret = 'PROXY_API_KEYS' | 'ADMIN_API_KEY' | 'RATE_LIMIT_KEYS' | 'ADOBE_SOFTWARE_STATEMENT' | 'STATE_ENCRYPTION_KEY'
