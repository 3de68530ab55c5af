// What may be cached, under which key, for how long. The TTL follows how
// often Adobe recomputes a report of that granularity ("Data freshness" in
// shared/adobe-api.md): a cached answer is never older than Adobe's own.
import type { IncomingHttpHeaders } from 'node:http'
import type { UpstreamTarget } from '../proxy/target.js'

const MINUTE = 60
const HOUR = 3600
const DAY = 24 * HOUR

/** Seconds a report stays fresh, by its finest time dimension. */
const FRESHNESS: Array<[string, number]> = [
  ['minute', MINUTE],
  ['hour', HOUR],
  ['day', 3 * HOUR],
  ['month', 2 * DAY],
  ['year', 2 * DAY]
]
/** No time dimension (totals, concurrency-level and activity-level reports): recomputed daily. */
const NO_TIME_DIMENSION = DAY

export function ttlSeconds (target: UpstreamTarget, now: number, maxSeconds: number): number {
  const segments = target.path.split('/').map((s) => s.replace(/\.[a-z]+$/i, ''))
  const ttl = FRESHNESS.find(([dimension]) => segments.includes(dimension))?.[1] ?? NO_TIME_DIMENSION
  const end = queryValue(target.query, 'end')
  // A report that ended before Adobe's last recompute will not change again.
  if (end !== undefined) {
    // ISO-8601 prefixes; a time without a zone is UTC here, not the host's local time.
    const endsAt = Date.parse(/T[^Z+-]*$/.test(end) ? `${end}Z` : end)
    if (!Number.isNaN(endsAt) && endsAt + ttl * 1000 <= now) return maxSeconds
  }
  return Math.min(ttl, maxSeconds)
}

/**
 * The cache key: the upstream path and exact query, plus the representation
 * the caller negotiates. An extension or `format=` in the URL already decides
 * the format; otherwise the Accept header does. Gzip and identity bodies are
 * kept apart so a caller that does not accept gzip never gets one.
 */
export function cacheKey (target: UpstreamTarget, headers: IncomingHttpHeaders): string {
  const lastSegment = target.path.slice(target.path.lastIndexOf('/') + 1)
  const formatInUrl = lastSegment.includes('.') || queryValue(target.query, 'format') !== undefined
  const accept = formatInUrl ? '' : (headers.accept ?? '').toLowerCase().replace(/\s+/g, '')
  return `${acceptsGzip(headers['accept-encoding']) ? 'gzip' : 'identity'} ${accept} ${target.path}?${target.query}`
}

export function acceptsGzip (acceptEncoding: string | undefined): boolean {
  if (acceptEncoding === undefined) return false
  return acceptEncoding.split(',').some((part) => {
    const [coding = '', ...params] = part.trim().toLowerCase().split(';')
    return (coding.trim() === 'gzip' || coding.trim() === '*') && !params.some((p) => /^\s*q=0(\.0*)?\s*$/.test(p))
  })
}

/** Conditional requests answer per caller (304s); they skip the cache and the coalescing. */
export function isConditional (headers: IncomingHttpHeaders): boolean {
  return headers['if-none-match'] !== undefined || headers['if-modified-since'] !== undefined
}

export function callerSaysNoCache (headers: IncomingHttpHeaders): boolean {
  const cacheControl = headers['cache-control'] ?? ''
  return /(^|,)\s*no-cache\b/i.test(cacheControl) || /\bno-cache\b/i.test(String(headers.pragma ?? ''))
}

/** Only complete 200s without per-user markers; and never a gzip body under an identity key. */
export function isStorable (status: number, headers: Record<string, string | string[] | undefined>, key: string): boolean {
  if (status !== 200) return false
  if (headers['set-cookie'] !== undefined || headers.authorization !== undefined) return false
  if (/\b(no-store|private)\b/i.test(String(headers['cache-control'] ?? ''))) return false
  const encoding = String(headers['content-encoding'] ?? 'identity').toLowerCase()
  return key.startsWith('gzip ') ? encoding === 'gzip' || encoding === 'identity' : encoding === 'identity'
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
