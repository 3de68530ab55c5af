// Every error the proxy reports to a caller. Each has a stable `code` (part of
// the public contract: dashboards and scripts match on it), an HTTP status and
// a message that never contains a secret or an upstream body.
import { STATUS_CODES } from 'node:http'

export class ProxyError extends Error {
  readonly code: string
  readonly statusCode: number
  /** Extra response headers (Allow on 405, Retry-After on 503). */
  readonly headers: Record<string, string>

  constructor (code: string, statusCode: number, message: string, options: { cause?: unknown, headers?: Record<string, string> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'ProxyError'
    this.code = code
    this.statusCode = statusCode
    this.headers = options.headers ?? {}
  }
}

type ErrorFactory<A extends unknown[]> = (...args: A) => ProxyError

function define<A extends unknown[]> (code: string, statusCode: number, message: (...args: A) => string): ErrorFactory<A> & { code: string } {
  const factory = (...args: A): ProxyError => new ProxyError(code, statusCode, message(...args))
  return Object.assign(factory, { code })
}

// Caller mistakes
export const badPath = define('CMU_PROXY_BAD_PATH', 400, (why: string) => `The request path is not allowed: ${why}.`)
export const notFound = define('CMU_PROXY_NOT_FOUND', 404, () => 'No such route. Reports are under the /cmu and /esm prefixes.')
export const unauthorized = define('CMU_PROXY_UNAUTHORIZED', 401, () => 'A valid API key is required (Authorization: Bearer <key> or X-Api-Key).')

/** No route takes a body: a request that announces one is refused before any of it is read, and its connection closed (RFC 9110 §15.5.14). */
export function bodyNotAllowed (): ProxyError {
  return new ProxyError('CMU_PROXY_BODY_NOT_ALLOWED', 413, 'No route takes a request body; send the request without one.', { headers: { connection: 'close' } })
}

/** A Host this proxy does not answer for (DNS rebinding: a web page whose name points at 127.0.0.1). The name is not echoed. */
export const misdirected = define('CMU_PROXY_MISDIRECTED', 421, () => 'This proxy does not serve the host named in the Host header (loopback names, and those in PROXY_ALLOWED_HOSTS).')

/** What Node's HTTP parser refused, before any request existed: the status it calls for, with the connection closed. */
export const badRequest = define('CMU_PROXY_BAD_REQUEST', 400, () => 'The request could not be parsed as HTTP/1.1.')
export const headersTooLarge = define('CMU_PROXY_HEADERS_TOO_LARGE', 431, () => 'The request head is too large.')
export const requestTimeout = define('CMU_PROXY_REQUEST_TIMEOUT', 408, () => 'The request did not arrive in time.')

export function methodNotAllowed (allow: string): ProxyError {
  return new ProxyError('CMU_PROXY_METHOD_NOT_ALLOWED', 405, `Only ${allow} are supported here.`, { headers: { allow } })
}

/** Why no answer could be had from Adobe at all: the failures a cached copy may stand in for (cache/cache-layer.ts reads `reason`). */
export type UnavailableReason = 'unreachable' | 'timeout' | 'overloaded' | 'no_token'

/** Adobe unreachable or slow, no token to send, or us shedding load: a class, so callers classify it by type, not by code. */
export class UpstreamUnavailable extends ProxyError {
  constructor (readonly reason: UnavailableReason, code: string, statusCode: number, message: string, options: { headers?: Record<string, string> } = {}) {
    super(code, statusCode, message, options)
  }
}

// Upstream (CMU) transport, mapped at one boundary in upstream/upstream.ts
export function upstreamTimeout (phase: string): ProxyError {
  return new UpstreamUnavailable('timeout', 'CMU_PROXY_UPSTREAM_TIMEOUT', 504, `Adobe did not answer in time (${phase}).`)
}

export function upstreamUnreachable (): ProxyError {
  return new UpstreamUnavailable('unreachable', 'CMU_PROXY_UPSTREAM_UNREACHABLE', 502, 'Adobe could not be reached.')
}

export function upstreamRejectedToken (): ProxyError {
  return new UpstreamUnavailable('no_token', 'CMU_PROXY_UPSTREAM_REJECTED_TOKEN', 502, 'Adobe rejected a freshly obtained access token.')
}

/** Another instance of the fleet asked Adobe for this report a moment ago and Adobe failed: not asked again before `restMs`. */
export class UpstreamFailingInFleet extends ProxyError {
  constructor (readonly reason: 'revalidating' | 'upstream_5xx' | 'upstream_429' | 'unreachable' | 'timeout' | 'no_token' | 'overloaded', restMs: number) {
    super('CMU_PROXY_UPSTREAM_FAILING', 503, `Adobe failed this report moments ago (${reason}, when another instance of the fleet asked); not asking again yet.`, {
      headers: { 'retry-after': String(Math.max(1, Math.ceil(restMs / 1000))) }
    })
  }
}

export function upstreamFailingInFleet (reason: UpstreamFailingInFleet['reason'], restMs: number): ProxyError {
  return new UpstreamFailingInFleet(reason, restMs)
}

/**
 * An answer that breaks the protocol: a final status outside 200-599 (RFC
 * 9110 §15 defines none), or a 304 to a request that was not conditional. No
 * usable answer, like a dropped connection, so a stale copy may stand in for it.
 */
export function upstreamBadResponse (status: number, why = 'which is not a valid final HTTP status'): UpstreamUnavailable {
  return new UpstreamUnavailable('unreachable', 'CMU_PROXY_UPSTREAM_BAD_RESPONSE', 502, `Adobe answered with status ${Math.trunc(status)}, ${why}.`)
}

/**
 * Adobe's own 5xx answer: passed to the caller unchanged (status, Retry-After,
 * body: callers call the proxy as they would call Adobe), and named with
 * this code in the request line and cmu_proxy_problems_total, so that the
 * upstream-errors alert has a code to point at.
 */
export const UPSTREAM_5XX = 'CMU_PROXY_UPSTREAM_5XX'

/**
 * Adobe's 403 on /esm: the token is good, the application may not read ESM.
 * The status passes through; the body says what it means (Adobe's own body,
 * like every upstream body, does not reach the caller in a problem).
 */
export const esmForbidden = define('CMU_PROXY_ESM_FORBIDDEN', 403, () => 'Adobe answered 403 Forbidden: the access token is valid, but the application registered with this software statement may not read this Entitlement Service Monitoring (ESM) report. Usually the deployment has no ESM access: ask Adobe Pass to enable ESM for it. CMU reports are not affected.')

export const upstreamBadEncoding = define('CMU_PROXY_UPSTREAM_BAD_ENCODING', 502, () => 'Adobe answered with a content encoding the caller did not accept.')

/** UPSTREAM_MAX_PENDING requests already wait for Adobe: shed this one at once rather than queue it without bound. */
export function overloaded (): ProxyError {
  return new UpstreamUnavailable('overloaded', 'CMU_PROXY_OVERLOADED', 503, 'Too many requests are waiting for Adobe; try again shortly.', { headers: { 'retry-after': '1' } })
}

// No usable access token: always 503, with a code that says why.
export const TOKEN_UNAVAILABLE_CODES = {
  notRegistered: 'CMU_PROXY_NOT_REGISTERED',
  statementRejected: 'CMU_PROXY_STATEMENT_REJECTED',
  clientRejected: 'CMU_PROXY_CLIENT_REJECTED',
  tokenEndpointUnreachable: 'CMU_PROXY_TOKEN_ENDPOINT_UNREACHABLE',
  tokenEndpointError: 'CMU_PROXY_TOKEN_ENDPOINT_ERROR',
  throttled: 'CMU_PROXY_TOKEN_THROTTLED',
  starting: 'CMU_PROXY_NO_TOKEN_YET'
} as const

export type TokenUnavailableCode = typeof TOKEN_UNAVAILABLE_CODES[keyof typeof TOKEN_UNAVAILABLE_CODES]

export function tokenUnavailable (code: TokenUnavailableCode, detail: string, retryAfterSeconds?: number): ProxyError {
  const headers: Record<string, string> = retryAfterSeconds === undefined ? {} : { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) }
  return new UpstreamUnavailable('no_token', code, 503, `No access token is available: ${detail}`, { headers })
}

/**
 * Adobe failed this report for this instance moments ago, there is no stored
 * copy that may stand in, and the rest it said (Retry-After, or a few
 * seconds) is not over: not asked again yet (cache/cache-layer.ts).
 */
export function upstreamResting (reason: string, restMs: number): ProxyError {
  return new ProxyError('CMU_PROXY_UPSTREAM_FAILING', 503, `Adobe failed this report moments ago (${reason}); not asking again yet.`, {
    headers: { 'retry-after': String(Math.max(1, Math.ceil(restMs / 1000))) }
  })
}

export const internalError = define('CMU_PROXY_INTERNAL', 500, () => 'Internal error.')

/** Headers of every problem answer. */
export const PROBLEM_HEADERS = { 'content-type': 'application/problem+json; charset=utf-8', 'cache-control': 'no-store' } as const

/** RFC 9457 problem details with a stable `code`; never a stack, never an upstream body. */
export function problemBody (problem: ProxyError, requestId: string): string {
  return JSON.stringify({
    type: 'about:blank',
    title: STATUS_CODES[problem.statusCode] ?? 'Error',
    status: problem.statusCode,
    code: problem.code,
    detail: problem.message,
    requestId
  })
}

/** What a log line says about the cause of a 5xx: codes and names from the transport, no secrets. */
export function describeCause (cause: unknown): string {
  const { code, name, message } = cause as { code?: string, name?: string, message?: string }
  return [code, name, message].filter(Boolean).join(': ')
}
