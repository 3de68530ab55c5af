// When a stored answer may be served: RFC 9111 (with RFC 5861's stale
// extensions) as pure functions of (headers or entry, now). No I/O and no
// clock of their own; the cache layer composes them, and
// test/cache/freshness.test.ts checks them clause by clause.
//
// The origin's explicit freshness wins (§4.2.1), capped by
// CACHE_TTL_MAX_SECONDS; Adobe's recompute schedule ("Data freshness" in
// shared/adobe-api.md) is the heuristic for answers without one (§4.2.2), or
// for every answer when the operator says so (CACHE_IGNORE_ORIGIN_FRESHNESS).
import { MAX_DELTA_SECONDS, originAgeSeconds } from '../upstream/header-policy.js'
import type { UpstreamTarget } from '../upstream/target.js'

type Headers = Record<string, string | string[] | undefined>

/** The response directives this cache acts on (RFC 9111 §5.2.2, RFC 5861). */
export interface Directives {
  noStore: boolean
  private: boolean
  noCache: boolean
  /** must-revalidate or proxy-revalidate (§5.2.2.2, §5.2.2.8): never served stale. */
  mustRevalidate: boolean
  sMaxage?: number | undefined
  maxAge?: number | undefined
  staleWhileRevalidate?: number | undefined
  staleIfError?: number | undefined
}

/** The instants and the rule that decide how an entry may be served, on one clock (ms). */
export interface EntryTimes {
  /** When the answer arrived (response_time). */
  storedAt: number
  /** When its age was 0 (§4.2.3: the arrival less its corrected initial age). */
  bornAt: number
  /** Fresh before this instant (bornAt + freshness lifetime), stale after it. */
  freshUntil: number
  /** Before this instant a stale entry is served at once while one refresh runs (stale-while-revalidate). */
  revalidateUntil: number
  /** Before this instant a stale entry may stand in for a failed fetch (stale-if-error). */
  errorUntil: number
  /** Kept (to revalidate, or to stand in for failures) until this instant; dead from it. */
  staleUntil: number
  /** no-cache (§5.2.2.4): never used without validating it first, and never stale. */
  noCache: boolean
}

export interface FreshnessSettings {
  ttlMaxSeconds: number
  staleIfErrorSeconds: number
  /** undefined: 10% of the lifetime, at least 30 s; 0: off. */
  staleWhileRevalidateSeconds: number | undefined
  /** The schedule decides, whatever the origin says (no-store and private still hold: see cache-policy.ts). */
  ignoreOriginFreshness: boolean
}

/** When the exchange happened: request and response on the deadline clock, the response also on the wall clock (for Expires without a Date). */
export interface ExchangeTimes { requestedAt: number, respondedAt: number, respondedAtWall: number }

const MINUTE = 60
const HOUR = 3600
const DAY = 24 * HOUR

/** Seconds a report stays fresh, by its finest time dimension. */
const SCHEDULE: Array<[string, number]> = [
  ['minute', MINUTE],
  ['hour', HOUR],
  ['day', 3 * HOUR],
  ['month', 2 * DAY],
  ['year', 2 * DAY]
]
/** No time dimension (totals, concurrency-level and activity-level reports): recomputed daily. */
const NO_TIME_DIMENSION = DAY
/** The default stale-while-revalidate window: a tenth of the lifetime, at least this. */
const MIN_REVALIDATE_SECONDS = 30
const NO_DIRECTIVES: Directives = { noStore: false, private: false, noCache: false, mustRevalidate: false }

/** Seconds a report stays fresh by Adobe's recompute schedule, capped by `maxSeconds`. */
export function scheduleSeconds (target: Pick<UpstreamTarget, 'path' | 'query'>, wallNow: number, maxSeconds: number): number {
  const segments = target.path.split('/').map((s) => s.replace(/\.[a-z]+$/i, ''))
  const ttl = SCHEDULE.find(([dimension]) => segments.includes(dimension))?.[1] ?? NO_TIME_DIMENSION
  const end = queryValue(target.query, 'end')
  // A report that ended before Adobe's last recompute will not change again.
  if (end !== undefined) {
    // ISO-8601 prefixes; a time without a zone is UTC here, not the host's local time.
    const endsAt = Date.parse(/T[^Z+-]*$/.test(end) ? `${end}Z` : end)
    if (!Number.isNaN(endsAt) && endsAt + ttl * 1000 <= wallNow) return maxSeconds
  }
  return Math.min(ttl, maxSeconds)
}

/**
 * The directives of a Cache-Control field (RFC 9111 §5.2): names compare
 * case-insensitively, the first of a repeated directive wins (§4.2.1), and a
 * qualified no-cache or private ("=field-names") counts as the unqualified
 * one (§5.2.2.4: allowed). A value that is not delta-seconds (`-1`, `abc`,
 * `1.5`, none) is present but invalid, never absent: the most restrictive
 * reading (§4.2.1: "consider responses that have invalid freshness
 * information to be stale"): max-age and s-maxage 0, s-maxage's
 * proxy-revalidate kept, and no stale window granted.
 */
export function responseDirectives (cacheControl: string | string[] | undefined): Directives {
  if (cacheControl === undefined) return NO_DIRECTIVES
  const directives: Directives = { ...NO_DIRECTIVES }
  const seen = new Set<string>()
  for (const part of (Array.isArray(cacheControl) ? cacheControl.join(',') : cacheControl).split(',')) {
    const [rawName = '', ...rest] = part.split('=')
    const name = rawName.trim().toLowerCase()
    if (name === '' || seen.has(name)) continue
    seen.add(name)
    const seconds = deltaSeconds(rest.join('=')) ?? 0
    switch (name) {
      case 'no-store': directives.noStore = true; break
      case 'private': directives.private = true; break
      case 'no-cache': directives.noCache = true; break
      case 'must-revalidate': case 'proxy-revalidate': directives.mustRevalidate = true; break
      // s-maxage implies proxy-revalidate (§5.2.2.10), valid or not.
      case 's-maxage': directives.sMaxage = seconds; directives.mustRevalidate = true; break
      case 'max-age': directives.maxAge = seconds; break
      case 'stale-while-revalidate': directives.staleWhileRevalidate = seconds; break
      case 'stale-if-error': directives.staleIfError = seconds; break
    }
  }
  return directives
}

/**
 * RFC 9110 §5.6.7: an HTTP-date in any of its three forms, as ms since the
 * epoch; undefined for anything else (`0`, `-1`, which Date.parse would read
 * as a year: an invalid Expires means "already expired", §5.3).
 */
export function httpDate (value: string | string[] | undefined): number | undefined {
  const text = (Array.isArray(value) ? value[0] : value)?.trim()
  if (text === undefined) return undefined
  const imfOrRfc850 = /^[A-Za-z]{3,9}, \d{2}[ -][A-Za-z]{3}[ -]\d{2,4} \d{2}:\d{2}:\d{2} GMT$/.test(text)
  const asctime = /^[A-Za-z]{3} [A-Za-z]{3} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/.test(text)
  if (!imfOrRfc850 && !asctime) return undefined
  const at = Date.parse(asctime ? `${text} GMT` : text)
  return Number.isNaN(at) ? undefined : at
}

/**
 * §4.2.1: s-maxage, else max-age, else Expires − Date (the arrival when Date
 * is missing; an Expires that is not a date is already past); undefined when
 * the origin gives no explicit freshness.
 */
export function explicitLifetimeSeconds (headers: Headers, directives: Directives, respondedAtWall: number): number | undefined {
  if (directives.sMaxage !== undefined) return directives.sMaxage
  if (directives.maxAge !== undefined) return directives.maxAge
  if (headers.expires === undefined) return undefined
  const expires = httpDate(headers.expires)
  if (expires === undefined) return 0
  return Math.max(0, (expires - (httpDate(headers.date) ?? respondedAtWall)) / 1000)
}

/**
 * §4.2.3: the age the answer already had when it arrived: the origin's Age
 * plus the response delay (corrected_age_value). The apparent age (arrival −
 * Date) is left out on purpose: it measures the skew between Adobe's clock
 * and ours as much as any age, and a host a few minutes off would find every
 * minute report stale on arrival. A cache between us and Adobe says how old
 * its copy is in Age.
 */
export function correctedInitialAgeSeconds (headers: Headers, times: ExchangeTimes): number {
  const ageValue = originAgeSeconds(headers.age) ?? 0
  const responseDelay = Math.max(0, (times.respondedAt - times.requestedAt) / 1000)
  return Math.min(ageValue + responseDelay, MAX_DELTA_SECONDS)
}

/** CACHE_STALE_WHILE_REVALIDATE_SECONDS, or by default a tenth of the lifetime, at least 30 s. */
export function revalidateWindowSeconds (lifetimeSeconds: number, setting: number | undefined): number {
  return setting ?? Math.max(MIN_REVALIDATE_SECONDS, lifetimeSeconds / 10)
}

/** The origin's own window when it gives one, never longer than ours (RFC 5861 windows are permissions, ours the bound). */
export function boundedWindowSeconds (origin: number | undefined, ours: number): number {
  return origin === undefined ? ours : Math.min(origin, ours)
}

/**
 * The instants an answer is stored under. Its lifetime: the origin's explicit
 * freshness capped by CACHE_TTL_MAX_SECONDS, else `heuristicSeconds` (the
 * schedule), counted from when its age was 0. Stale windows: ours, or the
 * origin's within ours; none at all for no-cache, must-revalidate,
 * proxy-revalidate and s-maxage (§4.2.4, §5.2.2.10). It is kept as long as
 * our own windows would keep it, so it can still be revalidated.
 */
export function entryTimes (headers: Headers, heuristicSeconds: number, times: ExchangeTimes, settings: FreshnessSettings): EntryTimes {
  const directives = settings.ignoreOriginFreshness ? NO_DIRECTIVES : responseDirectives(headers['cache-control'])
  const explicit = settings.ignoreOriginFreshness ? undefined : explicitLifetimeSeconds(headers, directives, times.respondedAtWall)
  const lifetime = explicit === undefined ? heuristicSeconds : Math.min(explicit, settings.ttlMaxSeconds)
  const bornAt = times.respondedAt - correctedInitialAgeSeconds(headers, times) * 1000
  const freshUntil = bornAt + lifetime * 1000
  const ourRevalidate = revalidateWindowSeconds(lifetime, settings.staleWhileRevalidateSeconds)
  const neverStale = directives.noCache || directives.mustRevalidate || directives.sMaxage !== undefined
  const revalidate = neverStale ? 0 : boundedWindowSeconds(directives.staleWhileRevalidate, ourRevalidate)
  const onError = neverStale ? 0 : boundedWindowSeconds(directives.staleIfError, settings.staleIfErrorSeconds)
  // A no-cache entry is never served unvalidated: its windows close before it arrived.
  const closed = directives.noCache ? bornAt : undefined
  return {
    storedAt: times.respondedAt,
    bornAt,
    freshUntil,
    revalidateUntil: closed ?? freshUntil + revalidate * 1000,
    errorUntil: closed ?? freshUntil + onError * 1000,
    staleUntil: freshUntil + Math.max(ourRevalidate, settings.staleIfErrorSeconds) * 1000,
    noCache: directives.noCache
  }
}

export function isFresh (entry: EntryTimes, now: number): boolean {
  return !entry.noCache && entry.freshUntil > now
}

/** Stale, but inside its stale-while-revalidate window: served at once, refreshed in the background. */
export function mayServeWhileRevalidating (entry: EntryTimes, now: number): boolean {
  return entry.revalidateUntil > now
}

/** May stand in for a failed fetch (stale-if-error; never where the origin forbids stale answers). */
export function mayServeOnError (entry: EntryTimes, now: number): boolean {
  return entry.errorUntil > now
}

/** Still worth keeping: to serve, to revalidate, or to stand in for a failure. */
export function isKept (entry: EntryTimes, now: number): boolean {
  return entry.staleUntil > now
}

/** Age header value (RFC 9111 §4.2.3, §5.1): whole seconds since the answer's age was 0, at most 2^31 (§1.2.2). */
export function ageSeconds (entry: EntryTimes, now: number): number {
  return Math.min(MAX_DELTA_SECONDS, Math.max(0, Math.floor((now - entry.bornAt) / 1000)))
}

/** Whole seconds of freshness left; negative once stale (RFC 9211 `ttl`). */
export function freshnessLeftSeconds (entry: EntryTimes, now: number): number {
  return Math.trunc((entry.freshUntil - now) / 1000)
}

/** delta-seconds (§1.2.2): digits only, at most 2^31; undefined otherwise. */
function deltaSeconds (value: string | undefined): number | undefined {
  const text = value?.trim().replace(/^"(.*)"$/, '$1')
  if (text === undefined || !/^\d+$/.test(text)) return undefined
  return Math.min(Number(text), MAX_DELTA_SECONDS)
}

function queryValue (query: string, name: string): string | undefined {
  for (const pair of query.split('&')) {
    if (!pair.startsWith(`${name}=`)) continue
    try {
      return decodeURIComponent(pair.slice(name.length + 1))
    } catch {
      return undefined
    }
  }
  return undefined
}
