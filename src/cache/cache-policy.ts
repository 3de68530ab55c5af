// What may be cached, and under which key (how long: freshness.ts).
import type { IncomingHttpHeaders } from 'node:http'
import type { OriginRequest } from '../upstream/origin.js'
import { isFresh, responseDirectives, type EntryTimes } from './freshness.js'

/**
 * Why Adobe's answer keeps a report out of the cache, or makes every use ask
 * again (Cache-Status `detail`, the reason label of
 * cmu_proxy_cache_uncacheable_total). CACHE_IGNORE_ORIGIN_FRESHNESS lifts
 * the last two only.
 */
export type UncacheableReason = 'no-store' | 'private' | 'set-cookie' | 'vary' | 'no-cache' | 'stale-on-arrival'

/** The reasons the switch does not lift: an answer meant for one caller, or never to be kept. */
export const ALWAYS_REFUSED: ReadonlySet<UncacheableReason> = new Set(['no-store', 'private', 'set-cookie', 'vary'])

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
  return `${request.gzipAccepted ? 'gzip' : 'identity'}\n${accept === undefined ? '' : `=${accept}`}\n${acceptLanguage === undefined ? '' : `=${acceptLanguage}`}\n${target.path}?${target.query}`
}

/**
 * The upstream path a cache key is for (the part after the local prefix):
 * what every variant of one report shares, whatever its query, Accept or
 * encoding. A purge of one report drops every key with this path. The path
 * holds neither a newline nor a '?' (upstream/target.ts refuses them).
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

export function callerSaysNoCache (headers: IncomingHttpHeaders): boolean {
  const cacheControl = headers['cache-control'] ?? ''
  return /(^|,)\s*no-cache\b/i.test(cacheControl) || /\bno-cache\b/i.test(String(headers.pragma ?? ''))
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

/**
 * Why an answer the rules would keep still does Adobe's bidding on every use
 * (no-cache), or is not worth keeping: its freshness was spent before it
 * arrived and it cannot be revalidated.
 */
export function staleOnArrival (entry: EntryTimes, validated: boolean, now: number): UncacheableReason | undefined {
  if (entry.noCache) return 'no-cache'
  return isFresh(entry, now) || validated ? undefined : 'stale-on-arrival'
}
