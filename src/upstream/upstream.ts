// The keep-alive connection pool to the CMU origin, and the one boundary where
// transport failures become caller-facing 502/503/504 problems. Two ways to
// send: request() hands back the whole undici response (the cache reads it
// into memory); streamTo() dispatches straight into the caller's response with
// no intermediate stream, the hot path when nothing is cached. Both are
// admitted only while fewer than maxPending requests wait for Adobe: undici's
// own queue has no bound.
//
// Both also retry here, once, when the connection failed before any response
// header arrived (retry-policy.ts says which failures, and keeps the budget).
// undici's RetryHandler / RetryAgent / interceptors.retry do not fit: once a
// 200 has started, a dropped body is resumed with a Range request (its retry
// callback cannot tell a failure before the headers from one in mid-body, so
// that cannot be turned off), the retry goes back to the same pool and may
// land on another stale keep-alive socket, there is no budget, and every
// request pays for a wrapping handler, a controller proxy and a copy of its
// options even when nothing fails. Here a retry costs nothing until a
// connection actually fails, and it always goes out on a fresh connection.
import type { Dispatcher } from 'undici'
import { ProxyError, overloaded, upstreamBadEncoding, upstreamTimeout, upstreamUnreachable } from '../kernel/errors.js'
import { RetryPolicy } from './retry-policy.js'
import { createDispatcher } from './dispatchers.js'
import { callerResponseHeaderList, encodingAcceptable } from './header-policy.js'
import type { Attempt, AttemptSpans } from '../telemetry/upstream-spans.js'

/** What an attempt returns when Adobe answered 401 (and the attempt discarded that answer). */
export const UNAUTHORIZED = Symbol('upstream 401')

export interface UpstreamOptions {
  /** ADOBE_CMU_URL: origin plus an optional base path, e.g. https://mgmt.auth.adobe.com/cmu */
  baseUrl: string
  connections: number
  connectTimeoutMs: number
  headersTimeoutMs: number
  bodyTimeoutMs: number
  /** UPSTREAM_MAX_PENDING: requests waiting for Adobe's headers beyond this are refused at once (503). */
  maxPending: number
  /** The egress proxy for ADOBE_CMU_URL (decided at start: config/egress-proxy.ts), or undefined for direct. */
  proxy?: string | undefined
  /** Which failures are retried, the budget, and the counters behind the retry metrics. */
  retry?: RetryPolicy | undefined
  /** Called with the time to response headers, for metrics. */
  onResponse?: ((seconds: number, status: number) => void) | undefined
  /** One span per attempt, when tracing is on (proxy/upstream-spans.ts, loaded only then). */
  spans?: AttemptSpans | undefined
}

/** One attempt at Adobe, as a trace sees it. */
export interface UpstreamRequest {
  /** Path after the base path, starting with '/' (or empty) */
  path: string
  /** Raw query without '?', '' when none */
  query: string
  headers: Record<string, string>
}

/**
 * The part of http.ServerResponse that streamTo() writes to (narrow, so the
 * streaming handler cannot reach into Fastify's reply).
 */
export interface ResponseSink {
  readonly destroyed: boolean
  readonly writableFinished: boolean
  writeHead: (statusCode: number, headers: Array<string | number | string[]>) => unknown
  write: (chunk: Buffer) => boolean
  end: () => unknown
  destroy: (error?: Error) => unknown
  on: (event: 'drain', listener: () => void) => unknown
  once: (event: 'close', listener: () => void) => unknown
  off: (event: 'close', listener: () => void) => unknown
}

/** Headers for the caller on top of Adobe's (what Fastify's reply.getHeaders() gives). */
export type ExtraHeaders = Record<string, string | number | string[] | undefined>

export interface StreamOptions {
  /**
   * Called once the caller's status line is decided, before anything is written (e.g. to take
   * the reply over from Fastify); `retried` says whether a dropped connection was retried first.
   */
  onStart: (retried: boolean) => void
  /** Extra headers for the caller (X-Request-Id, X-Cache). */
  extraHeaders: ExtraHeaders
  /** HEAD: send the headers, drop the body. */
  headOnly: boolean
  /** The body failed after the headers were sent (the caller sees a cut connection). */
  onBodyError: (error: Error) => void
  /** Whether the caller accepts a gzip body; any other coding is refused (502), never passed on. */
  gzipAccepted: boolean
}

/** Counts requests waiting for Adobe (dispatched, no response headers yet) and refuses new ones past the bound. */
class Admission {
  waiting = 0
  shed = 0
  constructor (readonly maxPending: number) {}

  admit (): void {
    if (this.waiting >= this.maxPending) {
      this.shed++
      throw overloaded()
    }
    this.waiting++
  }

  release (): void {
    this.waiting--
  }

  /** A retry of a request already admitted: it waits for Adobe again, whatever the count (the retry budget bounds these). */
  readmit (): void {
    this.waiting++
  }
}

/** Responses and errors of calls that were retried (marked only when it happens: nothing to pay otherwise). */
const RETRIED = new WeakSet<object>()

/** Whether this response or error came from an upstream call that was retried (for the request log line). */
export function wasRetried (value: object): boolean {
  return RETRIED.has(value)
}

function markRetried<T extends object> (value: T): T {
  RETRIED.add(value)
  return value
}

export class Upstream {
  readonly #pool: Dispatcher
  /**
   * Where retries go. Every request on it asks for `reset` (Connection: close),
   * so each of its connections carries exactly one request: a retry never
   * meets another stale keep-alive socket of the main pool.
   */
  readonly #fresh: Dispatcher
  readonly #origin: string
  readonly #basePath: string
  readonly #onResponse: ((seconds: number, status: number) => void) | undefined
  readonly #admission: Admission
  readonly #retry: RetryPolicy
  readonly #spans: AttemptSpans | undefined

  constructor (options: UpstreamOptions) {
    this.#admission = new Admission(options.maxPending)
    this.#spans = options.spans
    this.#retry = options.retry ?? new RetryPolicy()
    const base = new URL(options.baseUrl)
    this.#origin = base.origin
    this.#basePath = base.pathname.replace(/\/+$/, '')
    this.#onResponse = options.onResponse
    // undici (not fetch): keep-alive sockets, streaming bodies, and redirects are never followed.
    const connection = {
      connections: options.connections,
      connectTimeoutMs: options.connectTimeoutMs,
      headersTimeoutMs: options.headersTimeoutMs,
      bodyTimeoutMs: options.bodyTimeoutMs,
      keepAliveTimeoutMs: 30_000
    }
    this.#pool = createDispatcher(base.origin, options.proxy, connection)
    this.#fresh = createDispatcher(base.origin, options.proxy, connection)
  }

  /** Sends one GET; resolves when the response headers arrive. Rejects with a ProxyError. */
  async request ({ path, query, headers, signal }: UpstreamRequest & { signal: AbortSignal }): Promise<Dispatcher.ResponseData> {
    this.#admission.admit()
    const started = performance.now()
    this.#retry.record(started)
    const options: Dispatcher.RequestOptions = { origin: this.#origin, method: 'GET', path: this.#fullPath(path, query), headers, signal }
    try {
      let response: Dispatcher.ResponseData
      const attempt = this.#spans?.start(options.path, headers, false)
      try {
        response = await this.#pool.request(attempt === undefined ? options : { ...options, headers: attempt.headers })
        attempt?.finish(response.statusCode)
      } catch (err) {
        attempt?.finish(undefined, err)
        response = await this.#requestAgain(err, options, signal)
      }
      this.#onResponse?.((performance.now() - started) / 1000, response.statusCode)
      return response
    } finally {
      this.#admission.release()
    }
  }

  /** request()'s first attempt failed with `err`: retry it once if the policy allows, else map the failure. */
  async #requestAgain (err: unknown, options: Dispatcher.RequestOptions, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    // The caller went away: nobody is left to answer.
    if (signal.aborted) throw callerGone()
    if (!this.#retry.retryReport(err, performance.now())) throw transportError(err)
    await this.#retry.pause()
    const attempt = this.#spans?.start(options.path, options.headers as Record<string, string>, true)
    try {
      const response = markRetried(await this.#fresh.request({ ...options, ...(attempt === undefined ? {} : { headers: attempt.headers }), reset: true }))
      attempt?.finish(response.statusCode)
      return response
    } catch (again) {
      attempt?.finish(undefined, again)
      if (signal.aborted) throw callerGone()
      throw markRetried(transportError(again))
    }
  }

  /** Requests waiting for Adobe now, and how many were refused for overload so far (metrics). */
  get load (): { waiting: number, shed: number } {
    return { waiting: this.#admission.waiting, shed: this.#admission.shed }
  }

  /**
   * Sends one GET and streams the answer into `res`. Resolves when the body is
   * complete (or the caller left), or with UNAUTHORIZED when Adobe answered 401
   * (nothing written: the caller may retry). Rejects with a ProxyError when
   * the exchange failed before anything was written.
   */
  async streamTo (res: ResponseSink, request: UpstreamRequest, options: StreamOptions): Promise<void | typeof UNAUTHORIZED> {
    this.#admission.admit()
    const started = performance.now()
    this.#retry.record(started)
    const dispatch: Dispatcher.DispatchOptions = { origin: this.#origin, method: 'GET', path: this.#fullPath(request.path, request.query), headers: request.headers }
    try {
      return await this.#streamAttempt(this.#pool, dispatch, res, options, started, false)
    } catch (err) {
      // A ProxyError is a failure with a meaning of its own (caller gone, refused encoding, a body cut after a 401): never retried.
      if (err instanceof ProxyError) throw err
      if (res.destroyed) throw callerGone()
      if (!this.#retry.retryReport(err, performance.now())) throw transportError(err)
    }
    await this.#retry.pause()
    if (res.destroyed) throw callerGone()
    this.#admission.readmit()
    try {
      return await this.#streamAttempt(this.#fresh, { ...dispatch, reset: true }, res, options, started, true)
    } catch (again) {
      throw markRetried(again instanceof ProxyError ? again : transportError(again))
    }
  }

  async close (): Promise<void> {
    await Promise.all([this.#pool.close(), this.#fresh.close()])
  }

  /** One exchange into `res`; rejects with the raw transport error when it failed before Adobe's headers. */
  #streamAttempt (dispatcher: Dispatcher, dispatch: Dispatcher.DispatchOptions, res: ResponseSink, options: StreamOptions, started: number, retried: boolean): Promise<void | typeof UNAUTHORIZED> {
    // An attempt nobody records (tracing off, or not sampled) takes the plain path.
    const attempt = this.#spans?.start(dispatch.path, dispatch.headers as Record<string, string>, retried)
    if (attempt !== undefined) return this.#tracedStreamAttempt(attempt, dispatcher, dispatch, res, options, started, retried)
    // Not async: the hot path keeps a single promise per exchange.
    return new Promise((resolve, reject) => {
      dispatcher.dispatch(dispatch, new ResponseStreamHandler(res, options, this.#onResponse, this.#admission, started, retried, resolve, reject))
    })
  }

  /** #streamAttempt inside a client span, ended when the exchange is (tracing on only). */
  async #tracedStreamAttempt (attempt: Attempt, dispatcher: Dispatcher, dispatch: Dispatcher.DispatchOptions, res: ResponseSink, options: StreamOptions, started: number, retried: boolean): Promise<void | typeof UNAUTHORIZED> {
    let status: number | undefined
    const observe = (seconds: number, code: number): void => {
      status = code
      this.#onResponse?.(seconds, code)
    }
    try {
      const result = await new Promise<void | typeof UNAUTHORIZED>((resolve, reject) => {
        dispatcher.dispatch({ ...dispatch, headers: attempt.headers }, new ResponseStreamHandler(res, options, observe, this.#admission, started, retried, resolve, reject))
      })
      attempt.finish(status)
      return result
    } catch (err) {
      attempt.finish(status, err)
      throw err
    }
  }

  #fullPath (path: string, query: string): string {
    return `${this.#basePath}${path === '' && this.#basePath === '' ? '/' : path}${query === '' ? '' : `?${query}`}`
  }
}

/** Moves one upstream response into a ServerResponse with back-pressure, and aborts upstream when the caller leaves. */
class ResponseStreamHandler implements Dispatcher.DispatchHandler {
  readonly #res: ResponseSink
  readonly #options: StreamOptions
  readonly #observe: ((seconds: number, status: number) => void) | undefined
  readonly #admission: Admission
  readonly #resolve: (value: void | typeof UNAUTHORIZED) => void
  readonly #reject: (error: unknown) => void
  readonly #started: number
  /** This exchange is the retry of one whose connection failed. */
  readonly #retried: boolean
  #controller: Dispatcher.DispatchController | undefined
  /** Still counted as waiting for Adobe (until the response headers or a failure). */
  #admitted = true
  /** true once the caller's status line is written; then failures can only cut the body. */
  #writing = false
  /** A 401: its body is read and dropped, so the connection can be reused for the retry. */
  #unauthorized = false
  /** The caller's response is complete (a HEAD after its headers); what upstream does next does not matter. */
  #answered = false
  #settled = false

  constructor (res: ResponseSink, options: StreamOptions, observe: ((seconds: number, status: number) => void) | undefined, admission: Admission, started: number, retried: boolean, resolve: (value: void | typeof UNAUTHORIZED) => void, reject: (error: unknown) => void) {
    this.#res = res
    this.#options = options
    this.#observe = observe
    this.#admission = admission
    this.#started = started
    this.#retried = retried
    this.#resolve = resolve
    this.#reject = reject
  }

  #onCallerClose = (): void => {
    if (!this.#res.writableFinished) this.#controller?.abort(callerGone())
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.#controller = controller
    if (this.#res.destroyed) controller.abort(callerGone())
    else this.#res.once('close', this.#onCallerClose)
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    this.#release()
    this.#observe?.((performance.now() - this.#started) / 1000, statusCode)
    if (statusCode === 401) {
      this.#unauthorized = true
      return
    }
    if (!encodingAcceptable(headers['content-encoding'], this.#options.gzipAccepted)) {
      controller.abort(upstreamBadEncoding())
      return
    }
    this.#options.onStart(this.#retried)
    this.#writing = true
    this.#res.writeHead(statusCode, callerResponseHeaderList(headers, this.#options.extraHeaders))
    if (this.#options.headOnly) {
      // Adobe serves GET only, so a HEAD is sent as a GET. A small body is read
      // and dropped, which keeps the keep-alive connection; a large one (or one
      // of unknown length) is cut once the headers are out rather than downloaded.
      this.#answered = true
      this.#res.end()
      if (!(Number(headers['content-length']) <= HEAD_DRAIN_MAX_BYTES)) controller.abort(headAnswered())
      return
    }
    this.#res.on('drain', () => { controller.resume() })
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.#unauthorized && !this.#answered && !this.#res.write(chunk)) controller.pause()
  }

  onResponseEnd (): void {
    this.#res.off('close', this.#onCallerClose)
    if (!this.#unauthorized && !this.#answered) this.#res.end()
    this.#settle(() => { this.#resolve(this.#unauthorized ? UNAUTHORIZED : undefined) })
  }

  onResponseError (_controller: Dispatcher.DispatchController, error: Error): void {
    const beforeHeaders = this.#admitted
    this.#release()
    this.#res.off('close', this.#onCallerClose)
    if (this.#writing) {
      // Headers are out: the only honest signal left is a cut connection.
      if (!this.#answered && !this.#res.writableFinished) {
        this.#options.onBodyError(error)
        this.#res.destroy(error)
      }
      this.#settle(() => { this.#resolve(undefined) })
      return
    }
    // Before Adobe's headers the raw error goes back, so that streamTo() can decide on a retry;
    // after them (a 401 whose body was cut) it is final.
    this.#settle(() => { this.#reject(error instanceof ProxyError || beforeHeaders ? error : transportError(error)) })
  }

  #release (): void {
    if (!this.#admitted) return
    this.#admitted = false
    this.#admission.release()
  }

  #settle (done: () => void): void {
    if (this.#settled) return
    this.#settled = true
    done()
  }
}

/** A HEAD's upstream GET with a body up to this size is read and dropped rather than cut: the connection stays open. */
const HEAD_DRAIN_MAX_BYTES = 64 * 1024

/** Why a HEAD's upstream GET is cut after its headers (never reaches a caller or a log). */
function headAnswered (): ProxyError {
  return new ProxyError('CMU_PROXY_HEAD_ANSWERED', 200, 'The HEAD was answered from the response headers.')
}

/** The caller closed the connection before its answer was complete (nginx's 499). */
export function callerGone (): ProxyError {
  return new ProxyError('CMU_PROXY_CALLER_GONE', 499, 'The caller closed the connection.')
}

/** undici error codes: lib/core/errors.js */
export function transportError (err: unknown): ProxyError {
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
