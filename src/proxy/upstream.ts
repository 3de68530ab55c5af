// The keep-alive connection pool to the CMU origin, and the one boundary where
// transport failures become caller-facing 502/504 problems. Two ways to send:
// request() hands back the whole undici response (the cache reads it into
// memory); streamTo() dispatches straight into the caller's response with no
// intermediate stream, the hot path when nothing is cached.
import { Pool, type Dispatcher } from 'undici'
import { ProxyError, upstreamTimeout, upstreamUnreachable } from '../errors.js'
import { UNAUTHORIZED } from './authorized-fetch.js'
import { callerResponseHeaders } from './headers.js'

export interface UpstreamOptions {
  /** ADOBE_CMU_URL: origin plus an optional base path, e.g. https://mgmt.auth.adobe.com/cmu */
  baseUrl: string
  connections: number
  connectTimeoutMs: number
  headersTimeoutMs: number
  bodyTimeoutMs: number
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
  writeHead: (statusCode: number, headers: Record<string, string | string[]>) => unknown
  write: (chunk: Buffer) => boolean
  end: () => unknown
  destroy: (error?: Error) => unknown
  on: (event: 'drain', listener: () => void) => unknown
  once: (event: 'close', listener: () => void) => unknown
  off: (event: 'close', listener: () => void) => unknown
}

export interface StreamOptions {
  /** Called once the caller's status line is decided, before anything is written (e.g. to take the reply over from Fastify). */
  onStart: () => void
  /** Extra headers for the caller (X-Request-Id, X-Cache). */
  extraHeaders: Record<string, string>
  /** HEAD: send the headers, drop the body. */
  headOnly: boolean
  /** The body failed after the headers were sent (the caller sees a cut connection). */
  onBodyError: (error: Error) => void
}

export class Upstream {
  readonly #pool: Pool
  readonly #basePath: string
  readonly #onResponse: ((seconds: number, status: number) => void) | undefined

  constructor (options: UpstreamOptions) {
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
    const started = performance.now()
    try {
      const response = await this.#pool.request({ method: 'GET', path: this.#fullPath(path, query), headers, signal })
      this.#onResponse?.((performance.now() - started) / 1000, response.statusCode)
      return response
    } catch (err) {
      // The caller went away: nobody is left to answer.
      if (signal.aborted) throw callerGone()
      throw transportError(err)
    }
  }

  /**
   * Sends one GET and streams the answer into `res`. Resolves when the body is
   * complete (or the caller left), or with UNAUTHORIZED when Adobe answered 401
   * (nothing written: the caller may retry). Rejects with a ProxyError when
   * the exchange failed before anything was written.
   */
  async streamTo (res: ResponseSink, request: UpstreamRequest, options: StreamOptions): Promise<void | typeof UNAUTHORIZED> {
    return await new Promise((resolve, reject) => {
      const handler = new ResponseStreamHandler(res, options, this.#onResponse, resolve, reject)
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
  readonly #resolve: (value: void | typeof UNAUTHORIZED) => void
  readonly #reject: (error: ProxyError) => void
  readonly #started = performance.now()
  #controller: Dispatcher.DispatchController | undefined
  /** true once the caller's status line is written; then failures can only cut the body. */
  #writing = false
  /** The body is read but not forwarded (a 401 to retry, or a HEAD). */
  #discard = false
  #unauthorized = false
  #settled = false

  constructor (res: ResponseSink, options: StreamOptions, observe: ((seconds: number, status: number) => void) | undefined, resolve: (value: void | typeof UNAUTHORIZED) => void, reject: (error: ProxyError) => void) {
    this.#res = res
    this.#options = options
    this.#observe = observe
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
    this.#observe?.((performance.now() - this.#started) / 1000, statusCode)
    if (statusCode === 401) {
      this.#unauthorized = true
      this.#discard = true
      return
    }
    this.#options.onStart()
    this.#writing = true
    this.#res.writeHead(statusCode, { ...callerResponseHeaders(headers), ...this.#options.extraHeaders })
    if (this.#options.headOnly) {
      this.#discard = true
      this.#res.end()
      return
    }
    this.#res.on('drain', () => { controller.resume() })
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.#discard && !this.#res.write(chunk)) controller.pause()
  }

  onResponseEnd (): void {
    this.#res.off('close', this.#onCallerClose)
    if (!this.#discard) this.#res.end()
    this.#settle(() => { this.#resolve(this.#unauthorized ? UNAUTHORIZED : undefined) })
  }

  onResponseError (_controller: Dispatcher.DispatchController, error: Error): void {
    this.#res.off('close', this.#onCallerClose)
    if (this.#writing) {
      // Headers are out: the only honest signal left is a cut connection.
      if (!this.#res.writableFinished) {
        this.#options.onBodyError(error)
        this.#res.destroy(error)
      }
      this.#settle(() => { this.#resolve(undefined) })
      return
    }
    this.#settle(() => { this.#reject(error instanceof ProxyError ? error : transportError(error)) })
  }

  #settle (done: () => void): void {
    if (this.#settled) return
    this.#settled = true
    done()
  }
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
