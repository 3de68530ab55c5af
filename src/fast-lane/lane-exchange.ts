// One request in the fast lane, from its parsed head to the request log line:
// the same CmuForwarder policy as the Fastify route, answered through a
// RawResponse, with the same headers, problems, log line and metrics.
import type { Readable } from 'node:stream'
import type { CachedResponse } from '../cache/response-cache.js'
import { PROBLEM_HEADERS, ProxyError, describeCause, internalError, problemBody } from '../errors.js'
import { errorLabel } from '../logger.js'
import { signalWhenCallerLeaves, type CacheResult, type CmuCall, type Responder } from '../proxy/cmu-forwarder.js'
import type { UpstreamTarget } from '../proxy/target.js'
import { callerGone } from '../proxy/upstream.js'
import { requestId } from '../request-id.js'
import { requestLine } from '../request-log.js'
import type { FastLaneOptions } from './fast-lane.js'
import { RawResponse, type HeaderValues, type ResponseOwner } from './raw-response.js'
import type { RequestHead } from './request-head.js'

/** The status (499) and code a caller that left is logged and counted with, as on the Fastify path. */
const CALLER_GONE = callerGone()

/** The lane owns the socket already: there is no framework reply to take over when Adobe answers. */
function nothingToTakeOver (): void {}

export class LaneExchange implements Responder {
  readonly response: RawResponse
  readonly #options: FastLaneOptions
  readonly #head: RequestHead
  readonly #call: CmuCall
  readonly #started = performance.now()
  #cacheResult: CacheResult | null = null
  #problemCode: string | null = null
  #bodyError: Error | null = null

  constructor (options: FastLaneOptions, owner: ResponseOwner & { remoteAddress: string }, head: RequestHead, target: UpstreamTarget) {
    this.#options = options
    this.#head = head
    this.#call = { target, headers: head.headers, id: requestId(head.headers), ip: owner.remoteAddress }
    this.response = new RawResponse(owner, head.method === 'HEAD')
    this.response.once('close', this.#finished)
  }

  run (): void {
    this.#options.metrics.requestStarted()
    this.#options.forwarder.forward(this.#call, this).catch(this.#fail)
  }

  async streamThrough (cacheResult?: CacheResult): Promise<void> {
    if (cacheResult !== undefined) this.#cacheResult = cacheResult
    const id = this.#call.id
    await this.#options.forwarder.streamInto(this.#call, this.response, {
      onStart: nothingToTakeOver,
      extraHeaders: cacheResult === undefined ? { 'x-request-id': id } : { 'x-request-id': id, 'x-cache': cacheResult },
      headOnly: this.#head.method === 'HEAD',
      onBodyError: (error: Error) => { this.#bodyError = error }
    })
  }

  async sendBuffered (answer: Pick<CachedResponse, 'status' | 'headers' | 'body'>, cacheResult: CacheResult, age?: number): Promise<void> {
    this.#cacheResult = cacheResult
    const headers: HeaderValues = { ...answer.headers, 'content-length': String(answer.body.length), 'x-cache': cacheResult }
    if (age !== undefined) headers.age = String(age)
    headers['x-request-id'] = this.#call.id
    this.response.writeHead(answer.status, headers)
    this.response.end(this.#head.method === 'HEAD' ? undefined : answer.body)
  }

  async sendStream (status: number, headers: Record<string, string | string[]>, body: Readable, cacheResult: CacheResult): Promise<void> {
    this.#cacheResult = cacheResult
    const response = this.response
    response.writeHead(status, { ...headers, 'x-cache': cacheResult, 'x-request-id': this.#call.id })
    if (this.#head.method === 'HEAD') {
      body.on('error', () => {}).destroy()
      response.end()
      return
    }
    body.on('data', (chunk: Buffer) => { if (!response.write(chunk)) body.pause() })
    response.on('drain', () => body.resume())
    body.once('end', () => response.end())
    body.once('error', (error) => {
      this.#bodyError = error
      response.destroy()
    })
    response.once('close', () => { if (!response.writableFinished) body.destroy() })
  }

  callerGone (): AbortSignal {
    return signalWhenCallerLeaves(this.response)
  }

  /** A failure before anything was written: the same problem answer the Fastify error handler gives. */
  #fail = (error: unknown): void => {
    const { logger } = this.#options
    let problem: ProxyError
    if (error instanceof ProxyError) {
      problem = error
    } else {
      logger.error({ reqId: this.#call.id, err: error }, 'unhandled error')
      problem = internalError()
    }
    if (problem.statusCode >= 500 && problem.cause !== undefined) {
      logger.warn({ reqId: this.#call.id, code: problem.code, cause: describeCause(problem.cause) }, problem.message)
    }
    this.#problemCode = problem.code
    const response = this.response
    if (response.destroyed || response.headersSent) return
    const body = problemBody(problem, this.#call.id)
    response.writeHead(problem.statusCode, { ...problem.headers, ...PROBLEM_HEADERS, 'content-length': String(Buffer.byteLength(body)), 'x-request-id': this.#call.id })
    response.end(this.#head.method === 'HEAD' ? undefined : Buffer.from(body))
  }

  /** The one request log line and the request metrics, when the answer is complete or the caller left. */
  #finished = (): void => {
    const response = this.response
    // The caller left before its answer: logged and counted as 499, as on the Fastify path.
    if (!response.headersSent) this.#problemCode = CALLER_GONE.code
    const status = response.headersSent ? response.statusCode : CALLER_GONE.statusCode
    const durationMs = performance.now() - this.#started
    const { logger, metrics } = this.#options
    metrics.requestFinished('cmu', status, this.#cacheResult, durationMs / 1000)
    if (this.#bodyError !== null) logger.warn({ reqId: this.#call.id, error: errorLabel(this.#bodyError) }, 'response body ended early')
    if (logger.isLevelEnabled('info')) {
      logger.info({ reqId: this.#call.id, ...requestLine(this.#head.method, this.#head.url, status, durationMs, this.#problemCode, this.#cacheResult) }, 'request')
    }
  }
}
