// Which headers cross the proxy, in each direction. Allow-lists, so a header
// we have not thought about (Authorization, Cookie, Set-Cookie, hop-by-hop
// headers per RFC 9110 §7.6.1) never crosses by accident.
import type { IncomingHttpHeaders } from 'node:http'

/** Forwarded as the caller sent them. Accept, Accept-Language and Accept-Encoding are forwarded normalised (see below). */
const FORWARDED_REQUEST_HEADERS = [
  'if-none-match', 'if-modified-since', 'user-agent'
] as const

/**
 * Age too: a cache downstream must not take an answer Adobe sent already aged
 * as new (RFC 9111 §5.1); it crosses as a valid delta-seconds only (ageField).
 * Date too: an intermediary forwards the origin's (RFC 9110 §6.6.1), so that
 * Date and Age downstream describe the same answer; Node adds one only when
 * Adobe sent none.
 */
const FORWARDED_RESPONSE_HEADERS = [
  'content-type', 'content-length', 'content-encoding', 'content-disposition', 'content-language',
  'cache-control', 'etag', 'last-modified', 'expires', 'vary', 'location', 'retry-after', 'age', 'date'
] as const

/** RFC 9111 §1.2.2: delta-seconds past 2^31 are taken as 2^31, and sent as that. */
export const MAX_DELTA_SECONDS = 2_147_483_648

/**
 * The seconds of an Age field (RFC 9111 §5.1): the first member of a list,
 * digits only, at most 2^31; undefined when invalid (the field is then
 * ignored, and never passed on as it came).
 */
export function originAgeSeconds (value: string | string[] | undefined): number | undefined {
  const first = (Array.isArray(value) ? value[0] : value)?.split(',')[0]?.trim()
  if (first === undefined || !/^\d+$/.test(first)) return undefined
  return Math.min(Number(first), MAX_DELTA_SECONDS)
}

/** What crosses of Adobe's `name: value`: Age as checked delta-seconds, any other field when sendable; undefined: nothing. */
function forwardedValue (name: string, value: string | string[]): string | string[] | undefined {
  if (name !== 'age') return sendable(name, value) ? value : undefined
  const seconds = originAgeSeconds(value)
  return seconds === undefined ? undefined : String(seconds)
}

/** A caller's request as the header policy forwards it: its headers, and what was read from them once (proxy/routes.ts). */
export interface CallerRequest {
  headers: IncomingHttpHeaders
  /** X-Request-Id */
  id: string
  /** The caller's address, appended to X-Forwarded-For. */
  ip: string
  /** Whether the caller accepts gzip (acceptsGzip of its Accept-Encoding). */
  gzipAccepted: boolean
  /** Accept and Accept-Language as forwarded (normalisedList): the cache keys on exactly these. */
  accept: string | undefined
  acceptLanguage: string | undefined
}

/** A stored answer's validators, sent instead of the caller's to revalidate it (RFC 9111 §4.3.1). */
export interface Validators { etag?: string, lastModified?: string }

/**
 * A list-valued request field (Accept, Accept-Language) in one spelling:
 * lower case (media types, parameter names and language tags are
 * case-insensitive, RFC 9110 §8.3.1, §12.5.1, §12.5.4) and without the
 * optional whitespace around `,` and `;`. Whitespace inside an element stays,
 * so `text/ht ml` remains another request than `text/html`: what is forwarded
 * and what the cache keys on are the same string, so callers whose fields
 * differ only in spelling share an answer and no others do.
 */
export function normalisedList (value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  return value.toLowerCase().replace(/[ \t]*([,;])[ \t]*/g, '$1').trim()
}

/**
 * The headers sent to Adobe, minus Authorization (added per attempt).
 * Accept-Encoding becomes exactly `gzip` or `identity`: Adobe asks for gzip,
 * and callers whose offers differ only in codings we never pass on (br,
 * deflate, q-values) then send the same request, so one answer fits them all.
 */
export function upstreamRequestHeaders (call: CallerRequest, validators?: Validators): Record<string, string> {
  const incoming = call.headers
  const headers: Record<string, string> = {}
  if (call.accept !== undefined) headers.accept = call.accept
  if (call.acceptLanguage !== undefined) headers['accept-language'] = call.acceptLanguage
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = incoming[name]
    if (value !== undefined) headers[name] = value
  }
  if (validators !== undefined) {
    // The cache revalidates its own copy: its validators, never a caller's.
    delete headers['if-none-match']
    delete headers['if-modified-since']
    if (validators.etag !== undefined) headers['if-none-match'] = validators.etag
    if (validators.lastModified !== undefined) headers['if-modified-since'] = validators.lastModified
  }
  headers['accept-encoding'] = call.gzipAccepted ? 'gzip' : 'identity'
  headers['x-request-id'] = call.id
  const forwardedFor = incoming['x-forwarded-for']
  headers['x-forwarded-for'] = forwardedFor === undefined ? call.ip : `${String(forwardedFor)}, ${call.ip}`
  return headers
}

/**
 * Header values are passed on only when they are printable ASCII (and tab).
 * undici hands Adobe's header bytes over as latin1 characters, and Node's
 * ServerResponse refuses some of those (the bytes of a UTF-8 `filename="r€.csv"`)
 * after the status is chosen, which would cut the answer: such a value is
 * dropped instead. Every header Adobe sends us is ASCII.
 */
const NOT_PRINTABLE_ASCII = /[^\t\x20-\x7e]/

/** The forwarded fields that are lists (RFC 9110 §5.3): several lines of one are one value. Any other is single. */
const LIST_FIELDS: ReadonlySet<string> = new Set(['content-encoding', 'content-language', 'cache-control', 'vary'])

/**
 * Whether `value` may cross as `name`: printable, and one line for a field
 * that takes one value (two Content-Type lines are a broken answer; which
 * one Adobe meant is not ours to guess, so neither crosses).
 */
function sendable (name: string, value: string | string[]): boolean {
  if (typeof value === 'string') return !NOT_PRINTABLE_ASCII.test(value)
  return LIST_FIELDS.has(name) && value.every((v) => !NOT_PRINTABLE_ASCII.test(v))
}

/** What undici nearly always sees in Connection: it names no field we pass on. */
const PLAIN_CONNECTION = /^\s*(?:keep-alive|close)\s*$/i

/**
 * The fields a Connection header names are hop-by-hop for this response
 * (RFC 9110 §7.6.1): a proxy never passes them on, even ones it would
 * otherwise forward. Undefined when it names none. Content-Encoding is never
 * one: naming it is invalid, and dropping it would hand out gzip bytes
 * unlabelled (the encoding checks read Adobe's own header).
 */
function connectionOptions (connection: string | string[] | undefined): ReadonlySet<string> | undefined {
  if (connection === undefined) return undefined
  const value = typeof connection === 'string' ? connection : connection.join(',')
  if (PLAIN_CONNECTION.test(value)) return undefined
  const options = new Set(value.toLowerCase().split(',').map((option) => option.trim()))
  options.delete('content-encoding')
  return options
}

/** The upstream response headers a caller may see. */
export function callerResponseHeaders (upstream: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {}
  const hopByHop = connectionOptions(upstream.connection)
  for (const name of FORWARDED_RESPONSE_HEADERS) {
    const value = upstream[name]
    const forwarded = value === undefined || hopByHop?.has(name) === true ? undefined : forwardedValue(name, value)
    if (forwarded !== undefined) headers[name] = forwarded
  }
  return headers
}

/**
 * The same headers as a flat [name, value, ...] list with `extra` (the
 * caller's own: request id, cache, rate limits) after them, winning over an
 * upstream header of the same name. ServerResponse.writeHead takes this form
 * without building a headers object first: the streamed hot path.
 */
export function callerResponseHeaderList (upstream: Record<string, string | string[] | undefined>, extra: Record<string, string | number | string[] | undefined>): Array<string | number | string[]> {
  const list: Array<string | number | string[]> = []
  const hopByHop = connectionOptions(upstream.connection)
  for (const name of FORWARDED_RESPONSE_HEADERS) {
    const value = upstream[name]
    const forwarded = value === undefined || extra[name] !== undefined || hopByHop?.has(name) === true ? undefined : forwardedValue(name, value)
    if (forwarded !== undefined) list.push(name, forwarded)
  }
  for (const name in extra) {
    const value = extra[name]
    if (value !== undefined) list.push(name, value)
  }
  return list
}

/**
 * Whether an Accept-Encoding value accepts gzip (RFC 9110 §12.5.3): as
 * `gzip` (or `x-gzip`) with a q-value above 0; failing a mention of gzip, as
 * `*` with one. An explicit `gzip;q=0` wins over `*`.
 */
export function acceptsGzip (acceptEncoding: string | undefined): boolean {
  if (acceptEncoding === undefined || acceptEncoding === '') return false
  // The values real clients send, without splitting.
  if (acceptEncoding === 'gzip' || acceptEncoding === 'gzip, deflate' || acceptEncoding === 'gzip, deflate, br' || acceptEncoding === 'gzip, deflate, br, zstd') return true
  let gzip: boolean | undefined
  let any: boolean | undefined
  for (const part of acceptEncoding.split(',')) {
    const [coding = '', ...params] = part.trim().toLowerCase().split(';')
    const name = coding.trim()
    const accepted = !params.some((p) => /^\s*q=0(\.0*)?\s*$/.test(p))
    if (name === 'gzip' || name === 'x-gzip') gzip = (gzip ?? false) || accepted
    else if (name === '*') any = accepted
  }
  return gzip ?? any ?? false
}

/** A response body a caller may receive: identity always, gzip only when it accepts gzip, nothing else ever. */
export function encodingAcceptable (contentEncoding: string | string[] | undefined, gzipAccepted: boolean): boolean {
  if (contentEncoding === undefined) return true
  if (typeof contentEncoding !== 'string') return false
  const coding = contentEncoding.trim().toLowerCase()
  return coding === '' || coding === 'identity' || (gzipAccepted && coding === 'gzip')
}
