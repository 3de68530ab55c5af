// When a stored answer may be served, as pure functions of (entry or
// request, now): no I/O, no clock of their own. The cache layer composes them.
// The lifetime follows how often Adobe recomputes a report of that
// granularity ("Data freshness" in shared/adobe-api.md): a cached answer is
// never older than Adobe's own.
import type { UpstreamTarget } from '../upstream/target.js'

/** The instants that decide how an entry may be served, on one clock (ms). */
export interface EntryTimes {
  storedAt: number
  /** Fresh before this instant, stale after it. */
  freshUntil: number
  /** Before this instant a stale entry is served at once while one refresh runs (RFC 5861 stale-while-revalidate). */
  revalidateUntil: number
  /** Before this instant a stale entry may stand in for a failed fetch (RFC 5861 stale-if-error); dead from it. */
  staleUntil: number
}

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

/** Seconds a report stays fresh by Adobe's recompute schedule, capped by `maxSeconds`. */
export function scheduleSeconds (target: UpstreamTarget, wallNow: number, maxSeconds: number): number {
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

/** CACHE_STALE_WHILE_REVALIDATE_SECONDS, or by default a tenth of the lifetime, at least 30 s. */
export function revalidateWindowSeconds (lifetimeSeconds: number, setting: number | undefined): number {
  return setting ?? Math.max(MIN_REVALIDATE_SECONDS, lifetimeSeconds / 10)
}

/**
 * The instants of an entry stored at `now`, fresh for `lifetimeSeconds`, then
 * served while revalidating for `revalidateSeconds` and kept to stand in for
 * failures for `staleIfErrorSeconds` (whichever is longer keeps it).
 */
export function entryTimes (now: number, lifetimeSeconds: number, revalidateSeconds: number, staleIfErrorSeconds: number): EntryTimes {
  const freshUntil = now + lifetimeSeconds * 1000
  return {
    storedAt: now,
    freshUntil,
    revalidateUntil: freshUntil + revalidateSeconds * 1000,
    staleUntil: freshUntil + Math.max(revalidateSeconds, staleIfErrorSeconds) * 1000
  }
}

export function isFresh (entry: EntryTimes, now: number): boolean {
  return entry.freshUntil > now
}

/** Stale, but inside its stale-while-revalidate window: served at once, refreshed in the background. */
export function mayServeWhileRevalidating (entry: EntryTimes, now: number): boolean {
  return entry.revalidateUntil > now
}

/** May stand in for a failed fetch (RFC 5861 stale-if-error): the entry is not dead yet. */
export function mayServeOnError (entry: EntryTimes, now: number): boolean {
  return entry.staleUntil > now
}

/** Age header value (RFC 9111 §5.1): whole seconds since the entry was stored. */
export function ageSeconds (entry: EntryTimes, now: number): number {
  return Math.max(0, Math.floor((now - entry.storedAt) / 1000))
}

/** Whole seconds of freshness left; negative once stale (RFC 9211 `ttl`). */
export function freshnessLeftSeconds (entry: EntryTimes, now: number): number {
  return Math.trunc((entry.freshUntil - now) / 1000)
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
