// What may be cached, and under which key (how long: freshness.ts).
import type { IncomingHttpHeaders } from 'node:http'
import type { OriginRequest } from '../upstream/origin.js'
import type { ReportApiName, UpstreamTarget } from '../upstream/target.js'
import { isFresh, responseDirectives, type EntryTimes } from './freshness.js'

/**
 * Why Adobe's answer keeps a report out of the cache, or makes every use ask
 * again (Cache-Status `detail`, the reason label of
 * cmu_proxy_cache_uncacheable_total). CACHE_IGNORE_ORIGIN_FRESHNESS lifts
 * the last two only.
 */
export type UncacheableReason = 'no-store' | 'private' | 'set-cookie' | 'vary' | 'large-headers' | 'no-cache' | 'stale-on-arrival'

/** The reasons the switch does not lift: an answer meant for one caller, never to be kept, or too large to keep. */
export const ALWAYS_REFUSED: ReadonlySet<UncacheableReason> = new Set(['no-store', 'private', 'set-cookie', 'vary', 'large-headers'])

/**
 * The most header bytes one entry keeps: the byte bound counts them, and an
 * answer with more (a huge Content-Disposition or ETag) is not kept at all
 * rather than crowding out reports.
 */
export const MAX_ENTRY_HEADER_BYTES = 16 * 1024

/** The bytes of `headers` as sent (name, value, ": " and CRLF per line). */
export function headerBytes (headers: Record<string, string | string[]>): number {
  let bytes = 0
  for (const name in headers) {
    const value = headers[name]
    for (const line of typeof value === 'string' ? [value] : value ?? []) bytes += name.length + line.length + 4
  }
  return bytes
}

/**
 * The request headers that choose a representation, and so are part of the
 * key: every forwarded header that can change the body, keyed exactly as it
 * is forwarded (upstream/header-policy.ts normalises each once).
 */
const KEYED_REQUEST_HEADERS = new Set(['accept', 'accept-encoding', 'accept-language'])

/**
 * The cache and coalescing key: the upstream path and exact query, plus the
 * representation the caller negotiates (RFC 9111 §4.1), as forwarded. Callers
 * under one key send Adobe the same request, so one answer fits them all.
 */
export function cacheKey (request: OriginRequest): string {
  const { target, accept, acceptLanguage } = request
  return `${request.gzipAccepted ? 'gzip' : 'identity'}\n${accept === undefined ? '' : `=${accept}`}\n${acceptLanguage === undefined ? '' : `=${acceptLanguage}`}\n${reportPath(target)}?${target.query}`
}

/**
 * Each API's namespace in the keys, so /cmu/v2/x and /esm/v2/x never share an
 * entry (here, in the fleet's shared cache, or in a purge). CMU's is empty:
 * its keys stay those of earlier versions, so a fleet mid-upgrade still
 * shares them. Every other API's ends with ':', which no path starts with.
 */
const KEY_SCOPES: Readonly<Record<ReportApiName, string>> = { cmu: '', esm: 'esm:' }

/** One report of one API, whatever its query: the path part of its keys (what a purge names). */
export function reportPath (target: Pick<UpstreamTarget, 'api' | 'path'>): string {
  return `${KEY_SCOPES[target.api]}${target.path}`
}

/**
 * The report a cache key is for (reportPath: the API's scope and the part
 * after the local prefix): what every variant of one report shares, whatever
 * its query, Accept or encoding. A purge of one report drops every key with
 * this path. The path holds neither a newline nor a '?' (upstream/target.ts
 * refuses them).
 */
export function cacheKeyPath (key: string): string {
  const target = key.slice(key.lastIndexOf('\n') + 1)
  const query = target.indexOf('?')
  return query === -1 ? target : target.slice(0, query)
}

/**
 * May an answer fetched for one caller go to another with the same key (a
 * coalesced waiter, or later from the cache)? Not when it varies on a request
 * header the key leaves out, and never with `Vary: *` (RFC 9110 §12.5.5).
 */
export function isShareable (headers: Record<string, string | string[] | undefined>): boolean {
  const vary = headers.vary
  if (vary === undefined) return true
  const names = (Array.isArray(vary) ? vary.join(',') : vary).split(',')
  for (const name of names) {
    const header = name.trim().toLowerCase()
    if (header !== '' && !KEYED_REQUEST_HEADERS.has(header)) return false
  }
  return true
}

/** Conditional requests are never coalesced: a fresh entry answers them 304 when their validator matches, else they pass to Adobe as they are. */
export function isConditional (headers: IncomingHttpHeaders): boolean {
  return headers['if-none-match'] !== undefined || headers['if-modified-since'] !== undefined
}

/** What a caller's request asks of the cache (RFC 9111 §5.2.1). */
export interface RequestDirectives {
  /** An answer fresh from Adobe (a stored one only once Adobe confirms it). */
  noCache: boolean
  /** Nothing Adobe answers to this request is stored (§5.2.1.5); a fresh stored answer may still serve it. */
  noStore: boolean
}

/**
 * The request directives the cache acts on. no-cache; max-age=0, which asks
 * for the same (an answer no older than 0 s: what a browser's reload sends);
 * Pragma: no-cache only without Cache-Control (§5.4); no-store. Other
 * request directives (max-age above 0, max-stale, min-fresh, only-if-cached)
 * are not acted on: the answer is what the origin's freshness allows.
 */
export function requestDirectives (headers: IncomingHttpHeaders): RequestDirectives {
  const cacheControl = headers['cache-control']
  if (cacheControl === undefined) return { noCache: /(^|,)\s*no-cache\s*(,|$)/i.test(String(headers.pragma ?? '')), noStore: false }
  const directives: RequestDirectives = { noCache: false, noStore: false }
  for (const part of cacheControl.split(',')) {
    const [name = '', value] = part.split('=').map((s) => s.trim().toLowerCase())
    if (name === 'no-cache' || (name === 'max-age' && value !== undefined && /^"?0+"?$/.test(value))) directives.noCache = true
    else if (name === 'no-store') directives.noStore = true
  }
  return directives
}

/** Why a 200 must not be kept at all, whatever the switch says: per-user markers, no-store, private (RFC 9111 §3). */
export function refusedStorage (headers: Record<string, string | string[] | undefined>): UncacheableReason | undefined {
  if (!isShareable(headers)) return 'vary'
  if (headers['set-cookie'] !== undefined || headers.authorization !== undefined) return 'set-cookie'
  const directives = responseDirectives(headers['cache-control'])
  if (directives.noStore) return 'no-store'
  if (directives.private) return 'private'
  return undefined
}

/** Why `headers` (as a caller would see them) are not kept: more than MAX_ENTRY_HEADER_BYTES. */
export function oversizedHeaders (headers: Record<string, string | string[]>): UncacheableReason | undefined {
  return headerBytes(headers) > MAX_ENTRY_HEADER_BYTES ? 'large-headers' : undefined
}

/**
 * Why an answer the rules would keep still does Adobe's bidding on every use
 * (no-cache), or is not worth keeping: its freshness was spent before it
 * arrived and it cannot be revalidated.
 */
export function staleOnArrival (entry: EntryTimes, validated: boolean, now: number): UncacheableReason | undefined {
  if (entry.noCache) return 'no-cache'
  return isFresh(entry, now) || validated ? undefined : 'stale-on-arrival'
}
