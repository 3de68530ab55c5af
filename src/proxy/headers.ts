// Which headers cross the proxy, in each direction. Allow-lists, so a header
// we have not thought about (Authorization, Cookie, Set-Cookie, hop-by-hop
// headers per RFC 9110 §7.6.1) never crosses by accident.
import type { IncomingHttpHeaders } from 'node:http'

const FORWARDED_REQUEST_HEADERS = [
  'accept', 'accept-encoding', 'accept-language', 'if-none-match', 'if-modified-since', 'user-agent'
] as const

const FORWARDED_RESPONSE_HEADERS = [
  'content-type', 'content-length', 'content-encoding', 'content-disposition', 'content-language',
  'cache-control', 'etag', 'last-modified', 'expires', 'vary', 'location', 'retry-after'
] as const

/** The headers sent to Adobe, minus Authorization (added per attempt). */
export function upstreamRequestHeaders (incoming: IncomingHttpHeaders, requestId: string, callerAddress: string): Record<string, string> {
  const headers: Record<string, string> = {}
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = incoming[name]
    if (value !== undefined) headers[name] = value
  }
  headers['x-request-id'] = requestId
  const forwardedFor = incoming['x-forwarded-for']
  headers['x-forwarded-for'] = forwardedFor === undefined ? callerAddress : `${String(forwardedFor)}, ${callerAddress}`
  return headers
}

/** The upstream response headers a caller may see. */
export function callerResponseHeaders (upstream: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {}
  for (const name of FORWARDED_RESPONSE_HEADERS) {
    const value = upstream[name]
    if (value !== undefined) headers[name] = value
  }
  return headers
}
