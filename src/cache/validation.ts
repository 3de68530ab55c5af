// Validation as pure functions: which validators a stored answer has, whether
// a caller's conditional request is answered by it (RFC 9111 §4.3.2 with the
// comparisons of RFC 9110 §13.1), what a 304 sent from it carries (RFC 9110
// §15.4.5), and how a 304 from Adobe updates it (RFC 9111 §3.2, §4.3.4).
import type { IncomingHttpHeaders } from 'node:http'
import type { Validators } from '../upstream/header-policy.js'
import { httpDate } from './freshness.js'

type StoredHeaders = Record<string, string | string[]>

/** The validators a stored answer can be revalidated with; undefined when it has none. */
export function validatorsOf (headers: StoredHeaders): Validators | undefined {
  const etag = single(headers.etag)
  const lastModified = single(headers['last-modified'])
  if (etag === undefined && lastModified === undefined) return undefined
  return { ...(etag === undefined ? {} : { etag }), ...(lastModified === undefined ? {} : { lastModified }) }
}

/**
 * Whether a caller's conditional GET is answered 304 by the stored answer:
 * If-None-Match by weak comparison (`*` matches any); If-Modified-Since only
 * without If-None-Match, when Last-Modified is not after it.
 */
export function notModifiedFor (request: IncomingHttpHeaders, stored: StoredHeaders): boolean {
  const ifNoneMatch = request['if-none-match']
  if (ifNoneMatch !== undefined) {
    const etag = single(stored.etag)
    return ifNoneMatch.split(',').some((tag) => {
      const candidate = tag.trim()
      return candidate === '*' || (etag !== undefined && weakly(candidate) === weakly(etag))
    })
  }
  const since = httpDate(request['if-modified-since'])
  const lastModified = httpDate(single(stored['last-modified']))
  return since !== undefined && lastModified !== undefined && lastModified <= since
}

/** RFC 9110 §15.4.5: the fields a 304 carries that its 200 would have (Date: Adobe's, stored with it). */
const NOT_MODIFIED_FIELDS = ['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary'] as const

export function notModifiedHeaders (stored: StoredHeaders): StoredHeaders {
  const headers: StoredHeaders = {}
  for (const name of NOT_MODIFIED_FIELDS) {
    const value = stored[name]
    if (value !== undefined) headers[name] = value
  }
  return headers
}

/**
 * Whether Adobe's 304 describes the stored answer whose validators were sent
 * (RFC 9111 §4.3.4): a strong ETag must be the stored one (strong
 * comparison), a weak one must match it weakly; without an ETag, a
 * Last-Modified must be the stored date. A 304 that carries no validator at
 * all answers the only stored answer for the key, the one asked about, and
 * confirms it (as nginx and browsers take it). Anything else is another
 * representation's 304: it must not relabel the stored body.
 */
export function confirms (stored: StoredHeaders, notModified: Record<string, string | string[] | undefined>): boolean {
  const etag = single(notModified.etag)?.trim()
  if (etag !== undefined) {
    const kept = single(stored.etag)
    if (kept === undefined) return false
    return etag.startsWith('W/') ? weakly(etag) === weakly(kept) : !kept.startsWith('W/') && etag === kept
  }
  const lastModified = notModified['last-modified']
  if (lastModified === undefined) return true
  const keptDate = httpDate(single(stored['last-modified']))
  return keptDate !== undefined && keptDate === httpDate(lastModified)
}

/** Fields a 304 never replaces: they describe the stored body, which the 304 does not carry (RFC 9111 §3.2). */
const DESCRIBE_THE_BODY: ReadonlySet<string> = new Set(['content-length', 'content-encoding', 'content-type'])

/** The stored fields updated with those of a 304 (already passed through the caller header filter). */
export function updatedHeaders (stored: StoredHeaders, fromNotModified: StoredHeaders): StoredHeaders {
  const headers = { ...stored }
  for (const [name, value] of Object.entries(fromNotModified)) {
    if (!DESCRIBE_THE_BODY.has(name)) headers[name] = value
  }
  return headers
}

function weakly (tag: string): string {
  return tag.startsWith('W/') ? tag.slice(2) : tag
}

function single (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}
