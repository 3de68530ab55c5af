// Maps a caller's request-target to the upstream one. The query goes byte for
// byte: CMU filters (`dim!=v`, repeated keys, bare `dim`) and percent-encoding
// must reach Adobe untouched, so nothing here parses and re-serialises it. The
// path is checked, and its percent-encoding normalised (RFC 3986 §6.2.2).
import { badPath, notFound } from '../kernel/errors.js'
import { isCredential, mayHoldCredential } from '../kernel/query-parameters.js'

/** Adobe's report APIs behind the one token (proxy/report-apis.ts routes them). */
export type ReportApiName = 'cmu' | 'esm'

export interface UpstreamTarget {
  /** Which API: the upstream it goes to, and its namespace in cache keys. */
  api: ReportApiName
  /** The part after the local prefix, starting with '/' (or empty). */
  path: string
  /** The query without '?', with any credential parameter (`access_token`, `api_key`…) removed; '' when none. */
  query: string
}

const ENCODED_SEPARATOR = /%2f|%5c/i
const LONE_PERCENT = /%(?![0-9a-f]{2})/i
/**
 * Anything but RFC 3986 path characters (unreserved, sub-delims, ':', '@',
 * '/', '%'). Node's parser lets '#' and a few others through; the router cuts
 * at '#' (so `/cmu/..#/x` routes) while an upstream that parses URLs drops
 * what follows it (so Adobe would see `/cmu/..`).
 */
const NOT_A_PATH_CHARACTER = /[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]/
/** `%25` (a percent, encoded: double encoding) and encoded bytes above 0x7f: no report path needs them, and a back end that decodes twice or folds Unicode would read them as something else. */
const ENCODED_SURPRISE = /%25|%[89a-f][0-9a-f]/i
/** NUL and other control characters, encoded: no report path has them, and back ends read them in surprising ways. */
const ENCODED_CONTROL = /%[01][0-9a-f]|%7f/i

/**
 * The router matches a decoded path (`/%63mu` routes like `/cmu`); the upstream
 * path is cut from the raw one, so the raw path itself must start with the
 * literal prefix, or the cut would land elsewhere (`/%63mu/v2` -> `/cmumu/v2`).
 */
export function upstreamTarget (rawUrl: string, prefix: string, api: ReportApiName): UpstreamTarget {
  // A fragment never belongs in a request-target; the router and an upstream would read it differently.
  if (rawUrl.includes('#')) throw badPath('a fragment (#) is not allowed')
  const queryStart = rawUrl.indexOf('?')
  const rawPath = queryStart === -1 ? rawUrl : rawUrl.slice(0, queryStart)
  const rawQuery = queryStart === -1 ? '' : rawUrl.slice(queryStart + 1)
  if (!rawPath.startsWith(prefix) || (rawPath.length > prefix.length && rawPath[prefix.length] !== '/')) throw notFound()
  const raw = rawPath.slice(prefix.length)
  if (raw.includes('\\')) throw badPath('backslashes are not allowed')
  if (NOT_A_PATH_CHARACTER.test(raw)) throw badPath('only RFC 3986 path characters are allowed')
  // Every check below needs a '%' or a '.' in the path: most report paths have neither.
  const encoded = raw.includes('%')
  // A lone '%' means what its decoder makes of it: `%%32%65` is `%2e` to one that decodes once.
  if (encoded && LONE_PERCENT.test(raw)) throw badPath('a % must start a percent-encoded byte (%XX)')
  // The checks read the path as Adobe will get it.
  const path = encoded ? normalizedEncoding(raw) : raw
  if (encoded && ENCODED_SEPARATOR.test(path)) throw badPath('encoded slashes are not allowed')
  if (encoded && ENCODED_CONTROL.test(path)) throw badPath('encoded control characters are not allowed')
  if (encoded && ENCODED_SURPRISE.test(path)) throw badPath('double encoding and encoded non-ASCII bytes are not allowed')
  if (encoded || path.includes('.')) {
    for (const segment of path.split('/')) {
      // `..;jsessionid=x` is `..` to servlet containers, which drop the path parameter.
      const decoded = segment.replace(/%2e/gi, '.').replace(/(%3b|;).*$/i, '')
      if (decoded === '.' || decoded === '..') throw badPath('dot segments are not allowed')
    }
  }
  return { api, path, query: withoutCredentials(rawQuery) }
}

const UNRESERVED = /^[A-Za-z0-9\-._~]$/

/**
 * RFC 3986 §6.2.2: a percent-encoded unreserved character is that character,
 * and hex digits are case-insensitive. One spelling for Adobe, the cache key
 * and a purge, so `/v2/%79ear` is neither a way around the cache nor an entry
 * a purge of `/v2/year` misses. Reserved characters stay encoded (upper case).
 */
function normalizedEncoding (path: string): string {
  return path.replace(/%[0-9a-f]{2}/gi, (triplet) => {
    const character = String.fromCharCode(parseInt(triplet.slice(1), 16))
    return UNRESERVED.test(character) ? character : triplet.toUpperCase()
  })
}

/**
 * Adobe accepts a token in the query too; a caller's must never reach it (the
 * proxy supplies its own), nor an API key or secret a caller put there: Adobe
 * would log it, and the cache would key on it. Removed rather than refused,
 * as access_token always was.
 */
function withoutCredentials (query: string): string {
  if (!mayHoldCredential(query)) return query
  return query.split('&').filter((pair) => !isCredential(pair)).join('&')
}
