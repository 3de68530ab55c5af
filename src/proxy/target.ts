// Maps a caller's request-target to the upstream one, byte for byte: CMU
// filters (`dim!=v`, repeated keys, bare `dim`) and percent-encoding must reach
// Adobe untouched, so nothing here parses and re-serialises the query.
import { badPath } from '../errors.js'

export interface UpstreamTarget {
  /** The part after the local prefix, starting with '/' (or empty). */
  path: string
  /** The query without '?', with any `access_token` parameter removed; '' when none. */
  query: string
}

const ENCODED_SEPARATOR = /%2f|%5c/i

export function upstreamTarget (rawUrl: string, prefix: string): UpstreamTarget {
  const queryStart = rawUrl.indexOf('?')
  const rawPath = queryStart === -1 ? rawUrl : rawUrl.slice(0, queryStart)
  const rawQuery = queryStart === -1 ? '' : rawUrl.slice(queryStart + 1)
  const path = rawPath.slice(prefix.length)
  if (path.includes('\\')) throw badPath('backslashes are not allowed')
  if (ENCODED_SEPARATOR.test(path)) throw badPath('encoded slashes are not allowed')
  for (const segment of path.split('/')) {
    const decoded = segment.replace(/%2e/gi, '.')
    if (decoded === '.' || decoded === '..') throw badPath('dot segments are not allowed')
  }
  return { path, query: withoutAccessToken(rawQuery) }
}

/** Adobe accepts a token in the query too; a caller's must never reach it (the proxy supplies its own). */
function withoutAccessToken (query: string): string {
  if (!/access(_|%5f)token/i.test(query)) return query
  return query.split('&').filter((pair) => parameterName(pair) !== 'access_token').join('&')
}

function parameterName (pair: string): string {
  const equals = pair.indexOf('=')
  const raw = equals === -1 ? pair : pair.slice(0, equals)
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '))
  } catch {
    return raw
  }
}
