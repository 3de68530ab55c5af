// The caching fields of the sandbox's report answers. By default CMU answers
// carry none (like Adobe's documentation, which promises none), so the
// proxy's report schedule decides freshness; ESM answers carry Last-Modified,
// the time their data was computed (ESM's "Data Freshness"). Tests set
// Cache-Control, ETag, Last-Modified and Age through this control (in
// process, or POST /_sandbox/report-headers) and the sandbox then answers
// conditional requests with 304 as an origin would (RFC 9110 §13.1).
import { createHash } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'

export interface ReportHeaders {
  cacheControl?: string
  /** true: a strong ETag from the body's bytes; a string: sent as it is (e.g. `W/"v1"`). */
  etag?: boolean | string
  /** An HTTP date. */
  lastModified?: string
  /** Seconds. */
  age?: number
}

/** Checks a control request's body; the settings, or what is wrong with it. */
export function parseReportHeaders (input: Record<string, unknown>): ReportHeaders | string {
  const { cacheControl, etag, lastModified, age } = input
  if (cacheControl !== undefined && typeof cacheControl !== 'string') return 'cacheControl must be a string'
  if (etag !== undefined && typeof etag !== 'string' && typeof etag !== 'boolean') return 'etag must be true or a string'
  if (lastModified !== undefined && (typeof lastModified !== 'string' || Number.isNaN(Date.parse(lastModified)))) return 'lastModified must be an HTTP date'
  if (age !== undefined && (typeof age !== 'number' || !Number.isInteger(age) || age < 0)) return 'age must be a whole number of seconds'
  return {
    ...(cacheControl === undefined ? {} : { cacheControl }),
    ...(etag === undefined ? {} : { etag }),
    ...(lastModified === undefined ? {} : { lastModified }),
    ...(age === undefined ? {} : { age })
  }
}

/**
 * The fields for an answer whose body is `body` (only read when an ETag is computed from it)
 * and whose data was computed at `computedAt` (ms; when the API says so in Last-Modified).
 */
export function reportFields (settings: ReportHeaders, body: () => string, encoding: string, computedAt?: number): Record<string, string> {
  const fields: Record<string, string> = {}
  if (settings.cacheControl !== undefined) fields['cache-control'] = settings.cacheControl
  if (settings.etag === true) fields.etag = `"${createHash('sha256').update(body()).update(encoding).digest('base64url').slice(0, 22)}"`
  else if (typeof settings.etag === 'string') fields.etag = settings.etag
  const lastModified = settings.lastModified ?? (computedAt === undefined ? undefined : new Date(computedAt).toUTCString())
  if (lastModified !== undefined) fields['last-modified'] = lastModified
  if (settings.age !== undefined) fields.age = String(settings.age)
  return fields
}

/** Whether a conditional GET is answered 304 by an answer with `fields` (If-None-Match first, weak comparison). */
export function notModified (request: IncomingHttpHeaders, fields: Record<string, string>): boolean {
  const ifNoneMatch = request['if-none-match']
  if (ifNoneMatch !== undefined) {
    const etag = fields.etag?.replace(/^W\//, '')
    return ifNoneMatch.split(',').some((tag) => tag.trim() === '*' || (etag !== undefined && tag.trim().replace(/^W\//, '') === etag))
  }
  const since = Date.parse(request['if-modified-since'] ?? '')
  const lastModified = Date.parse(fields['last-modified'] ?? '')
  return !Number.isNaN(since) && !Number.isNaN(lastModified) && lastModified <= since
}
