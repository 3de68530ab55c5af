// The keep-alive connection pool to the CMU origin. Two ways to send:
// request() hands back the whole undici response (the cache reads it into
// memory); streamTo() dispatches straight into the caller's response
// (stream-handler.ts), the hot path when nothing is cached. Both are admitted
// only while fewer than maxPending requests wait for Adobe (admission.ts),
// and map transport failures to 502/504 problems (transport-errors.ts).
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
import { ProxyError, UpstreamUnavailable, upstreamBadResponse } from '../kernel/errors.js'
import type { Attempt, AttemptSpans } from '../telemetry/upstream-spans.js'
import { Admission } from './admission.js'
import { createDispatcher } from './dispatchers.js'
import { InterimAnswers } from './interim-answers.js'
import { RetryPolicy } from './retry-policy.js'
import { ResponseStreamHandler, isFinalStatus, type ResponseSink, type StreamOptions, type UNAUTHORIZED } from './stream-handler.js'
import { callerGone, markRetried, transportError } from './transport-errors.js'

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
  /** Called with the time spent when no headers came within the connect or headers timeout, for metrics. */
  onTimeout?: ((seconds: number) => void) | undefined
  /** One span per attempt, when tracing is on (telemetry/upstream-spans.ts, loaded only then). */
  spans?: AttemptSpans | undefined
}

/** One attempt at Adobe, as a trace sees it. */
export interface UpstreamRequest {
  /** Path after the base path, starting with '/' (or empty) */
  path: string
  /** The base path on this origin when not the baseUrl's (another API on the same connections: report-upstreams.ts). */
  basePath?: string | undefined
  /** Raw query without '?', '' when none */
  query: string
  headers: Record<string, string>
}

/** Called with the time to response headers and the status. */
type Observe = (seconds: number, status: number) => void

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
  readonly #onTimeout: ((seconds: number) => void) | undefined
  readonly #admission: Admission
  readonly #retry: RetryPolicy
  readonly #spans: AttemptSpans | undefined
  readonly #headersTimeoutMs: number

  constructor (options: UpstreamOptions) {
    this.#admission = new Admission(options.maxPending)
    this.#headersTimeoutMs = options.headersTimeoutMs
    this.#spans = options.spans
    this.#retry = options.retry ?? new RetryPolicy()
    const base = new URL(options.baseUrl)
    this.#origin = base.origin
    this.#basePath = base.pathname.replace(/\/+$/, '')
    this.#onResponse = options.onResponse
    this.#onTimeout = options.onTimeout
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
  async request ({ path, basePath, query, headers, signal }: UpstreamRequest & { signal: AbortSignal }): Promise<Dispatcher.ResponseData> {
    this.#admission.admit()
    const started = performance.now()
    this.#retry.record(started)
    const options: Dispatcher.RequestOptions = { origin: this.#origin, method: 'GET', path: this.#fullPath(path, query, basePath), headers, signal }
    try {
      let response: Dispatcher.ResponseData
      const attempt = this.#spans?.start(options.path, headers, false)
      try {
        response = await this.#pool.request(this.#interimBounded(attempt === undefined ? options : { ...options, headers: attempt.headers }, signal))
        attempt?.finish(response.statusCode)
      } catch (err) {
        attempt?.finish(undefined, err)
        response = await this.#requestAgain(err, options, signal)
      }
      // undici's request() skips 1xx answers itself; a final status outside 200-599 is no answer at all.
      if (!isFinalStatus(response.statusCode)) {
        response.body.on('error', () => {}).destroy()
        throw upstreamBadResponse(response.statusCode)
      }
      this.#onResponse?.((performance.now() - started) / 1000, response.statusCode)
      return response
    } catch (err) {
      this.#observeTimeout(err, started)
      throw err
    } finally {
      this.#admission.release()
    }
  }

  /** A call that ended without headers for a timeout counts in the latency histogram too, at the time it took: a slow Adobe shows there. */
  #observeTimeout (err: unknown, started: number): void {
    if (err instanceof UpstreamUnavailable && err.reason === 'timeout') this.#onTimeout?.((performance.now() - started) / 1000)
  }

  /** `options` for one attempt, its informational answers bounded (interim-answers.ts): past the bound, the attempt is aborted with that error. */
  #interimBounded (options: Dispatcher.RequestOptions, signal: AbortSignal): Dispatcher.RequestOptions {
    const interim = new InterimAnswers(this.#headersTimeoutMs)
    const stop = new AbortController()
    return {
      ...options,
      signal: AbortSignal.any([signal, stop.signal]),
      onInfo: ({ statusCode }) => {
        const exceeded = interim.exceeded(statusCode)
        if (exceeded !== undefined) stop.abort(exceeded)
      }
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
      const response = markRetried(await this.#fresh.request(this.#interimBounded({ ...options, ...(attempt === undefined ? {} : { headers: attempt.headers }), reset: true }, signal)))
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
    // Headers observed: a later failure (a 401's body that timed out) is not a call without headers.
    let answered = false
    const observe = (seconds: number, status: number): void => {
      answered = true
      this.#onResponse?.(seconds, status)
    }
    try {
      return await this.#streamWithRetry(res, request, options, started, observe)
    } catch (err) {
      if (!answered) this.#observeTimeout(err, started)
      throw err
    }
  }

  async #streamWithRetry (res: ResponseSink, request: UpstreamRequest, options: StreamOptions, started: number, observe: Observe): Promise<void | typeof UNAUTHORIZED> {
    const dispatch: Dispatcher.DispatchOptions = { origin: this.#origin, method: 'GET', path: this.#fullPath(request.path, request.query, request.basePath), headers: request.headers }
    try {
      return await this.#streamAttempt(this.#pool, dispatch, res, options, started, false, observe)
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
      return await this.#streamAttempt(this.#fresh, { ...dispatch, reset: true }, res, options, started, true, observe)
    } catch (again) {
      throw markRetried(again instanceof ProxyError ? again : transportError(again))
    }
  }

  async close (): Promise<void> {
    await Promise.all([this.#pool.close(), this.#fresh.close()])
  }

  /** One exchange into `res`; rejects with the raw transport error when it failed before Adobe's headers. */
  #streamAttempt (dispatcher: Dispatcher, dispatch: Dispatcher.DispatchOptions, res: ResponseSink, options: StreamOptions, started: number, retried: boolean, observe: Observe): Promise<void | typeof UNAUTHORIZED> {
    // An attempt nobody records (tracing off, or not sampled) takes the plain path.
    const attempt = this.#spans?.start(dispatch.path, dispatch.headers as Record<string, string>, retried)
    if (attempt !== undefined) return this.#tracedStreamAttempt(attempt, dispatcher, dispatch, res, options, started, retried, observe)
    // Not async: the hot path keeps a single promise per exchange.
    return new Promise((resolve, reject) => {
      dispatcher.dispatch(dispatch, new ResponseStreamHandler(res, options, observe, this.#admission, started, retried, new InterimAnswers(this.#headersTimeoutMs), resolve, reject))
    })
  }

  /** #streamAttempt inside a client span, ended when the exchange is (tracing on only). */
  async #tracedStreamAttempt (attempt: Attempt, dispatcher: Dispatcher, dispatch: Dispatcher.DispatchOptions, res: ResponseSink, options: StreamOptions, started: number, retried: boolean, observeResponse: Observe): Promise<void | typeof UNAUTHORIZED> {
    let status: number | undefined
    const observe = (seconds: number, code: number): void => {
      status = code
      observeResponse(seconds, code)
    }
    try {
      const result = await new Promise<void | typeof UNAUTHORIZED>((resolve, reject) => {
        dispatcher.dispatch({ ...dispatch, headers: attempt.headers }, new ResponseStreamHandler(res, options, observe, this.#admission, started, retried, new InterimAnswers(this.#headersTimeoutMs), resolve, reject))
      })
      attempt.finish(status)
      return result
    } catch (err) {
      attempt.finish(status, err)
      throw err
    }
  }

  #fullPath (path: string, query: string, basePath = this.#basePath): string {
    return `${basePath}${path === '' && basePath === '' ? '/' : path}${query === '' ? '' : `?${query}`}`
  }
}
