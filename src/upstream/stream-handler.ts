// Moves one upstream response into the caller's ServerResponse as undici
// delivers it (a DispatchHandler: no intermediate stream, the hot path when
// nothing is cached), with back-pressure both ways, and aborts the upstream
// request when the caller leaves. Informational answers (1xx, such as 103
// Early Hints) are skipped: the final answer follows them (RFC 9110 §15.2).
// A final status outside 200-599 is no answer HTTP defines: 502.
import type { Dispatcher } from 'undici'
import { ProxyError, upstreamBadEncoding, upstreamBadResponse } from '../kernel/errors.js'
import type { Admission } from './admission.js'
import { callerResponseHeaderList, encodingAcceptable } from './header-policy.js'
import type { InterimAnswers } from './interim-answers.js'
import { callerGone, transportError } from './transport-errors.js'

/** What an attempt returns when Adobe answered 401 (and the attempt discarded that answer). */
export const UNAUTHORIZED = Symbol('upstream 401')

/** Whether `status` is a final answer a caller may get (RFC 9110 §15: 1xx are interim, nothing above 599 is defined). */
export function isFinalStatus (status: number): boolean {
  return status >= 200 && status <= 599
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
  onStart: (status: number, retried: boolean) => void
  /** Extra headers for the caller (X-Request-Id, X-Cache). */
  extraHeaders: ExtraHeaders
  /** HEAD: send the headers, drop the body. */
  headOnly: boolean
  /** The body failed after the headers were sent (the caller sees a cut connection). */
  onBodyError: (error: Error) => void
  /** Whether the caller accepts a gzip body; any other coding is refused (502), never passed on. */
  gzipAccepted: boolean
}

/** Moves one upstream response into a ServerResponse with back-pressure, and aborts upstream when the caller leaves. */
export class ResponseStreamHandler implements Dispatcher.DispatchHandler {
  readonly #res: ResponseSink
  readonly #options: StreamOptions
  readonly #observe: ((seconds: number, status: number) => void) | undefined
  readonly #admission: Admission
  readonly #resolve: (value: void | typeof UNAUTHORIZED) => void
  readonly #reject: (error: unknown) => void
  readonly #started: number
  /** This exchange is the retry of one whose connection failed. */
  readonly #retried: boolean
  readonly #interim: InterimAnswers
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

  constructor (res: ResponseSink, options: StreamOptions, observe: ((seconds: number, status: number) => void) | undefined, admission: Admission, started: number, retried: boolean, interim: InterimAnswers, resolve: (value: void | typeof UNAUTHORIZED) => void, reject: (error: unknown) => void) {
    this.#res = res
    this.#options = options
    this.#observe = observe
    this.#admission = admission
    this.#started = started
    this.#retried = retried
    this.#interim = interim
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
    // Interim: still waiting for the answer (and still counted as waiting for Adobe), within bounds.
    if (statusCode < 200) {
      const exceeded = this.#interim.exceeded(statusCode)
      if (exceeded !== undefined) controller.abort(exceeded)
      return
    }
    this.#release()
    if (!isFinalStatus(statusCode)) {
      controller.abort(upstreamBadResponse(statusCode))
      return
    }
    this.#observe?.((performance.now() - this.#started) / 1000, statusCode)
    if (statusCode === 401) {
      this.#unauthorized = true
      return
    }
    if (!encodingAcceptable(headers['content-encoding'], this.#options.gzipAccepted)) {
      controller.abort(upstreamBadEncoding())
      return
    }
    this.#options.onStart(statusCode, this.#retried)
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
