// The keep-alive connection pool to the CMU origin, and the one boundary where
// transport failures become caller-facing 502/503/504 problems. Two ways to
// send: request() hands back the whole undici response (the cache reads it
// into memory); streamTo() dispatches straight into the caller's response with
// no intermediate stream, the hot path when nothing is cached. Both are
// admitted only while fewer than maxPending requests wait for Adobe: undici's
// own queue has no bound.
import { Pool, type Dispatcher } from 'undici'
import { ProxyError, overloaded, upstreamBadEncoding, upstreamTimeout, upstreamUnreachable } from '../errors.js'
import { callerResponseHeaders, encodingAcceptable } from './headers.js'

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
  /** Called with the time to response headers, for metrics. */
  onResponse?: ((seconds: number, status: number) => void) | undefined
}

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
  writeHead: (statusCode: number, headers: ExtraHeaders) => unknown
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
  /** Called once the caller's status line is decided, before anything is written (e.g. to take the reply over from Fastify). */
  onStart: () => void
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
}

export class Upstream {
  readonly #pool: Pool
  readonly #basePath: string
  readonly #onResponse: ((seconds: number, status: number) => void) | undefined
  readonly #admission: Admission

  constructor (options: UpstreamOptions) {
    this.#admission = new Admission(options.maxPending)
    const base = new URL(options.baseUrl)
    this.#basePath = base.pathname.replace(/\/+$/, '')
    this.#onResponse = options.onResponse
    // Pool (not fetch): keep-alive sockets, streaming bodies, and redirects are never followed.
    this.#pool = new Pool(base.origin, {
      connections: options.connections,
      connectTimeout: options.connectTimeoutMs,
      headersTimeout: options.headersTimeoutMs,
      bodyTimeout: options.bodyTimeoutMs,
      keepAliveTimeout: 30_000
    })
  }

  /** Sends one GET; resolves when the response headers arrive. Rejects with a ProxyError. */
  async request ({ path, query, headers, signal }: UpstreamRequest & { signal: AbortSignal }): Promise<Dispatcher.ResponseData> {
    this.#admission.admit()
    const started = performance.now()
    try {
      const response = await this.#pool.request({ method: 'GET', path: this.#fullPath(path, query), headers, signal })
      this.#onResponse?.((performance.now() - started) / 1000, response.statusCode)
      return response
    } catch (err) {
      // The caller went away: nobody is left to answer.
      if (signal.aborted) throw callerGone()
      throw transportError(err)
    } finally {
      this.#admission.release()
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
    return await new Promise((resolve, reject) => {
      const handler = new ResponseStreamHandler(res, options, this.#onResponse, this.#admission, resolve, reject)
      this.#pool.dispatch({ method: 'GET', path: this.#fullPath(request.path, request.query), headers: request.headers }, handler)
    })
  }

  async close (): Promise<void> {
    await this.#pool.close()
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
  readonly #reject: (error: ProxyError) => void
  readonly #started = performance.now()
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

  constructor (res: ResponseSink, options: StreamOptions, observe: ((seconds: number, status: number) => void) | undefined, admission: Admission, resolve: (value: void | typeof UNAUTHORIZED) => void, reject: (error: ProxyError) => void) {
    this.#res = res
    this.#options = options
    this.#observe = observe
    this.#admission = admission
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
    this.#options.onStart()
    this.#writing = true
    this.#res.writeHead(statusCode, { ...callerResponseHeaders(headers), ...this.#options.extraHeaders })
    if (this.#options.headOnly) {
      // Adobe serves GET only, so a HEAD is sent as a GET; stop it once the headers are out instead of downloading the report.
      this.#answered = true
      this.#res.end()
      controller.abort(headAnswered())
      return
    }
    this.#res.on('drain', () => { controller.resume() })
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.#unauthorized && !this.#res.write(chunk)) controller.pause()
  }

  onResponseEnd (): void {
    this.#res.off('close', this.#onCallerClose)
    if (!this.#unauthorized) this.#res.end()
    this.#settle(() => { this.#resolve(this.#unauthorized ? UNAUTHORIZED : undefined) })
  }

  onResponseError (_controller: Dispatcher.DispatchController, error: Error): void {
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
    this.#settle(() => { this.#reject(error instanceof ProxyError ? error : transportError(error)) })
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
