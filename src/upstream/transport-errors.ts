// How a failed exchange with Adobe reads to the rest of the proxy: undici's
// transport errors mapped to caller-facing 502/504 problems (the one boundary
// where that happens), the caller leaving (499), and which answers and errors
// came from a retried call (for the request log line).
import { ProxyError, upstreamTimeout, upstreamUnreachable } from '../kernel/errors.js'

/** The caller closed the connection before its answer was complete (nginx's 499). */
export function callerGone (): ProxyError {
  return new ProxyError('CMU_PROXY_CALLER_GONE', 499, 'The caller closed the connection.')
}

/** undici error codes: lib/core/errors.js */
export function transportError (err: unknown): ProxyError {
  // Already one of ours (an abort with our reason, e.g. interim-answers.ts): nothing to map.
  if (err instanceof ProxyError) return err
  const code = (err as { code?: string }).code
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT': return withCause(upstreamTimeout('connect'), err)
    case 'UND_ERR_HEADERS_TIMEOUT': return withCause(upstreamTimeout('response headers'), err)
    case 'UND_ERR_BODY_TIMEOUT': return withCause(upstreamTimeout('response body'), err)
    default: return withCause(upstreamUnreachable(), err)
  }
}

function withCause (error: ProxyError, cause: unknown): ProxyError {
  Object.defineProperty(error, 'cause', { value: cause, enumerable: false })
  return error
}

/** Responses and errors of calls that were retried (marked only when it happens: nothing to pay otherwise). */
const RETRIED = new WeakSet<object>()

/** Whether this response or error came from an upstream call that was retried (for the request log line). */
export function wasRetried (value: object): boolean {
  return RETRIED.has(value)
}

export function markRetried<T extends object> (value: T): T {
  RETRIED.add(value)
  return value
}
