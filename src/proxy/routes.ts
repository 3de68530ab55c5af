// GET/HEAD <prefix>/* through Fastify: validate the target, then let the
// CmuForwarder decide how to answer, writing through the Fastify reply.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Readable } from 'node:stream'
import type { CachedResponse } from '../cache/response-cache.js'
import { UPSTREAM_5XX, methodNotAllowed } from '../kernel/errors.js'
import { errorLabel } from '../kernel/logger.js'
import { signalWhenCallerLeaves, type CacheResult, type CmuCall, type CmuForwarder, type Responder } from './forwarder.js'
import { acceptsGzip, normalisedList } from '../upstream/header-policy.js'
import { upstreamTarget, type ReportApiName } from '../upstream/target.js'
import type { ExtraHeaders, StreamOptions } from '../upstream/stream-handler.js'

export interface CmuRouteOptions {
  /** The API's local prefix (not `prefix`: Fastify reserves that register option) */
  pathPrefix: string
  /** Which of Adobe's report APIs (report-apis.ts) */
  api: ReportApiName
  forwarder: CmuForwarder
}

const ALLOW = 'GET, HEAD'
const OTHER_METHODS = ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

export async function cmuRoutes (app: FastifyInstance, { pathPrefix: prefix, api, forwarder }: CmuRouteOptions): Promise<void> {
  async function forward (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const { headers } = request
    request.reportApi = api
    // The negotiation is read once: the cache keys on what is forwarded.
    const call: CmuCall = { target: upstreamTarget(request.raw.url ?? '', prefix, api), headers, id: request.id, ip: request.ip, head: request.method === 'HEAD', gzipAccepted: acceptsGzip(headers['accept-encoding']), accept: normalisedList(headers.accept), acceptLanguage: normalisedList(headers['accept-language']), log: request.log }
    await forwarder.forward(call, new FastifyResponder(forwarder, call, request, reply))
    return reply
  }

  app.route({ method: ['GET', 'HEAD'], url: prefix, handler: forward })
  app.route({ method: ['GET', 'HEAD'], url: `${prefix}/*`, handler: forward })
  // Refused in onRequest, before Fastify would parse (and maybe 415) a request body.
  const refuse = async (): Promise<never> => { throw methodNotAllowed(ALLOW) }
  app.route({ method: [...OTHER_METHODS], url: prefix, onRequest: refuse, handler: refuse })
  app.route({ method: [...OTHER_METHODS], url: `${prefix}/*`, onRequest: refuse, handler: refuse })
}

/**
 * Answers through Fastify's reply; failures before the reply is taken over
 * become problems in the error handler. It is also the StreamOptions of its
 * own streamed answer, so the hot path makes no options object or closures.
 */
class FastifyResponder implements Responder, StreamOptions {
  readonly headOnly: boolean
  readonly gzipAccepted: boolean

  constructor (
    readonly forwarder: CmuForwarder,
    readonly call: CmuCall,
    readonly request: FastifyRequest,
    readonly reply: FastifyReply
  ) {
    this.headOnly = call.head
    this.gzipAccepted = call.gzipAccepted
  }

  /** What hooks put on the reply (X-Request-Id, RateLimit-*): written with Adobe's headers, since the raw response bypasses Fastify's. */
  get extraHeaders (): ExtraHeaders {
    return this.reply.getHeaders()
  }

  /** Take the reply over from Fastify only once Adobe answered: until then a failure is still a problem response. */
  onStart (status: number, retried: boolean): void {
    this.request.upstreamRetried = retried
    this.#noteStatus(status)
    this.reply.hijack()
  }

  /** Adobe's own 5xx crosses unchanged; the request line and the problems counter still name it. */
  #noteStatus (status: number): void {
    if (status >= 500) this.request.problemCode = UPSTREAM_5XX
  }

  onBodyError (error: Error): void {
    this.request.log.warn({ error: errorLabel(error) }, 'response body ended early')
  }

  async streamThrough (cacheResult?: CacheResult): Promise<void> {
    if (cacheResult !== undefined) {
      this.request.cacheResult = cacheResult
      this.reply.header('x-cache', cacheResult)
    }
    await this.forwarder.streamInto(this.call, this.reply.raw, this)
  }

  async sendBuffered (answer: Pick<CachedResponse, 'status' | 'headers' | 'body'>, cacheResult: CacheResult, age?: number, cacheStatus?: string): Promise<void> {
    const { request, reply } = this
    request.cacheResult = cacheResult
    this.#noteStatus(answer.status)
    reply.code(answer.status).headers(answer.headers).header('x-cache', cacheResult)
    if (age !== undefined) reply.header('age', age)
    if (cacheStatus !== undefined) {
      reply.header('cache-status', cacheStatus)
      request.cacheStatus = cacheStatus
    }
    // A 304 has no body, and no Content-Length unless it equals the 200's (RFC 9110 §8.6): none.
    if (answer.status === 304) { await reply.send(); return }
    reply.header('content-length', answer.body.length)
    await reply.send(request.method === 'HEAD' ? undefined : answer.body)
  }

  async sendStream (status: number, headers: Record<string, string | string[]>, body: Readable, cacheResult: CacheResult | undefined): Promise<void> {
    const { request, reply } = this
    this.#noteStatus(status)
    reply.code(status).headers(headers)
    if (cacheResult !== undefined) {
      request.cacheResult = cacheResult
      reply.header('x-cache', cacheResult)
    }
    if (request.method !== 'HEAD') { await reply.send(body); return }
    body.on('error', () => {}).destroy()
    await reply.send()
  }

  upstreamRetried (): void {
    this.request.upstreamRetried = true
  }

  callerGone (): AbortSignal {
    return signalWhenCallerLeaves(this.reply.raw)
  }
}
