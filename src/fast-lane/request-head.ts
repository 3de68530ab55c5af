// A deliberately narrow HTTP/1.1 request-head parser for the fast lane. It
// accepts only the plainest form of a GET/HEAD without a body, and returns
// undefined for anything else, which then goes to Node's own parser (llhttp)
// unchanged. So every request this accepts is one llhttp reads the same way:
// no body framing to disagree about, no folded or duplicate headers, no bare
// CR/LF, no bytes outside visible ASCII.

export interface RequestHead {
  method: 'GET' | 'HEAD'
  /** The request-target exactly as sent (origin-form). */
  url: string
  /** Lower-cased names, values trimmed; each name at most once. */
  headers: Record<string, string>
}

/** Node's default --max-http-header-size: a longer head goes to Node, which answers 431. */
export const MAX_HEAD_BYTES = 16 * 1024

const REQUEST_LINE = /^(GET|HEAD) (\/[!-~]*) HTTP\/1\.1$/
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/
/** Anything but HTAB, visible ASCII and space, once CRLFs are gone (bare CR/LF included). */
const FORBIDDEN_BYTE = /[^\t\x20-\x7e]/
/** Headers whose presence means a body, a protocol switch or connection handling the fast lane leaves to Node. */
const LEAVE_TO_NODE = new Set(['content-length', 'transfer-encoding', 'expect', 'upgrade', 'te', 'trailer'])

/**
 * Parses the head in `text` (latin1, without the final CRLFCRLF).
 * Returns undefined when the request is not one the fast lane takes.
 */
export function parseRequestHead (text: string): RequestHead | undefined {
  const lines = text.split('\r\n')
  const requestLine = REQUEST_LINE.exec(lines[0] ?? '')
  if (requestLine === null) return undefined
  const headers: Record<string, string> = Object.create(null) as Record<string, string>
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string
    if (FORBIDDEN_BYTE.test(line)) return undefined
    const header = HEADER_LINE.exec(line)
    if (header === null) return undefined
    const name = (header[1] as string).toLowerCase()
    if (name in headers || LEAVE_TO_NODE.has(name)) return undefined
    headers[name] = header[2] as string
  }
  // HTTP/1.1 requires Host; "Connection: close" and friends are Node's to honour.
  if (headers.host === undefined) return undefined
  if (headers.connection !== undefined && headers.connection.toLowerCase() !== 'keep-alive') return undefined
  return { method: requestLine[1] as 'GET' | 'HEAD', url: requestLine[2] as string, headers }
}
