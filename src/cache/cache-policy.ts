// What may be cached, and under which key (how long: freshness.ts).
import type { IncomingHttpHeaders } from 'node:http'
import type { UpstreamTarget } from '../upstream/target.js'

/**
 * The request headers that choose a representation, and so are part of the
 * key: every forwarded header that can change the body. Accept-Encoding is
 * keyed as it is forwarded, normalised to gzip or identity (proxy/headers.ts).
 */
const KEYED_REQUEST_HEADERS = new Set(['accept', 'accept-encoding', 'accept-language'])

/**
 * The cache and coalescing key: the upstream path and exact query, plus the
 * representation the caller negotiates (RFC 9111 §4.1). Callers under one key
 * send Adobe the same request, so one answer fits them all.
 */
export function cacheKey (target: UpstreamTarget, headers: IncomingHttpHeaders, gzipAccepted: boolean): string {
  return `${gzipAccepted ? 'gzip' : 'identity'}\n${normalised(headers.accept)}\n${normalised(headers['accept-language'])}\n${target.path}?${target.query}`
}

function normalised (value: string | undefined): string {
  return value === undefined ? '' : value.toLowerCase().replace(/\s+/g, '')
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

/** Conditional requests answer per caller (304s); they skip the cache and the coalescing. */
export function isConditional (headers: IncomingHttpHeaders): boolean {
  return headers['if-none-match'] !== undefined || headers['if-modified-since'] !== undefined
}

export function callerSaysNoCache (headers: IncomingHttpHeaders): boolean {
  const cacheControl = headers['cache-control'] ?? ''
  return /(^|,)\s*no-cache\b/i.test(cacheControl) || /\bno-cache\b/i.test(String(headers.pragma ?? ''))
}

/** Only complete, shareable 200s without per-user markers. */
export function isStorable (status: number, headers: Record<string, string | string[] | undefined>): boolean {
  if (status !== 200 || !isShareable(headers)) return false
  if (headers['set-cookie'] !== undefined || headers.authorization !== undefined) return false
  return !/\b(no-store|private)\b/i.test(String(headers['cache-control'] ?? ''))
}
