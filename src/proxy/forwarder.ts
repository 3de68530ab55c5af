// The policy of every report API (/cmu, /esm: report-apis.ts), independent of
// how the caller's connection is served: with the cache off, Adobe's answer
// streams straight through (or, for an API whose answers the route table
// adjusts, through report-origin.ts first); with it on,
// the forwarder asks the cache layer (cache/cache-layer.ts) one question, and
// the answer says whether it came from memory, from one request shared among
// identical callers, or is this caller's to stream. The Fastify route
// (routes.ts) calls forward() with a Responder that writes through the reply;
// the policy knows nothing of Fastify.
import type { Tracer } from '@opentelemetry/api'
import type { Readable } from 'node:stream'
import type { CacheLayer, CacheResult } from '../cache/cache-layer.js'
import type { CachedResponse } from '../cache/response-cache.js'
import { withTokenRetry, type TokenSource } from '../upstream/authorized-fetch.js'
import { callerResponseHeaders, upstreamRequestHeaders } from '../upstream/header-policy.js'
import type { Origin, OriginRequest } from '../upstream/origin.js'
import type { ReportRoutes } from '../upstream/report-upstreams.js'
import type { ResponseSink, StreamOptions } from '../upstream/stream-handler.js'
import type { ReportApiName } from '../upstream/target.js'

export type { CacheResult } from '../cache/cache-layer.js'

/** The origin of report-origin.ts: Adobe, with the route table's adjustments. */
export interface AdjustingOrigin extends Origin {
  /** Whether `api`'s answers may change on the way (then they never stream straight through). */
  adjusts: (api: ReportApiName) => boolean
}

export interface CmuForwarderOptions {
  broker: TokenSource
  /** Each API's pool and base path. */
  upstreams: ReportRoutes
  origin: AdjustingOrigin
  /** Absent when CACHE_ENABLED=false. */
  cache?: CacheLayer | undefined
  /** When tracing is on: the token wait becomes a span. */
  tracer?: Tracer | undefined
}

/** What forward() needs to know about the caller's request (its negotiation read once: it keys the cache and decides what is forwarded). */
export interface CmuCall extends OriginRequest {
  /** HEAD: headers only; never downloads a whole report to discard it. */
  head: boolean
}

/** How one transport answers the caller; each method resolves when the answer is complete. */
export interface Responder {
  /** Stream Adobe's answer for `target` into the caller's response (upstream.streamTo). */
  streamThrough: (cacheResult?: CacheResult) => Promise<void>
  /** A complete body in memory: shared by coalesced waiters, or from the cache (with its Age, and a Cache-Status when stale). */
  sendBuffered: (answer: Pick<CachedResponse, 'status' | 'headers' | 'body'>, cacheResult: CacheResult, age?: number, cacheStatus?: string) => Promise<void>
  /** A body too large for the cache, already claimed by this caller; or an adjusted answer read without the cache (no cacheResult). */
  sendStream: (status: number, headers: Record<string, string | string[]>, body: Readable, cacheResult: CacheResult | undefined) => Promise<void>
  /** Fires when the caller goes away before its response is complete. */
  callerGone: () => AbortSignal
  /** The answer came from an upstream call that was retried after a dropped connection. */
  upstreamRetried: () => void
}

const NO_BODY = Buffer.alloc(0)

/** An AbortSignal that fires when the caller goes away before `res` is complete. */
export function signalWhenCallerLeaves (res: Pick<ResponseSink, 'once' | 'writableFinished'>): AbortSignal {
  const abort = new AbortController()
  res.once('close', () => { if (!res.writableFinished) abort.abort() })
  return abort.signal
}

export class CmuForwarder {
  readonly #options: CmuForwarderOptions

  constructor (options: CmuForwarderOptions) {
    this.#options = options
  }

  async forward (call: CmuCall, responder: Responder): Promise<void> {
    const { cache } = this.#options
    if (cache === undefined) { await this.#pass(call, responder); return }
    // Only a miss goes upstream (and a HEAD that misses fetches the report like a GET, so it fills the cache).
    const outcome = await cache.answer(call, responder)
    switch (outcome.kind) {
      case 'pass':
        await this.#pass(call, responder, outcome.result)
        return
      case 'cached':
        await responder.sendBuffered(outcome.entry, outcome.result, outcome.age, outcome.cacheStatus)
        return
      case 'not-modified':
        await responder.sendBuffered({ status: 304, headers: outcome.headers, body: NO_BODY }, 'HIT', outcome.age)
        return
    }
    const { answer, result } = outcome
    if (answer.retried) responder.upstreamRetried()
    if (answer.kind === 'buffered') {
      try {
        await responder.sendBuffered(answer, result, outcome.age, outcome.cacheStatus)
      } finally {
        answer.release()
      }
      return
    }
    const body = answer.claim()
    if (body !== undefined) { await responder.sendStream(answer.status, answer.headers, body, result); return }
    // Too large to share: this waiter streams its own copy.
    await this.#pass(call, responder, result)
  }

  /** Past the cache: straight through, unless the route table adjusts this API's answers (then through the origin that does). */
  async #pass (call: CmuCall, responder: Responder, result?: CacheResult): Promise<void> {
    const { origin } = this.#options
    if (!origin.adjusts(call.target.api)) { await responder.streamThrough(result); return }
    const answer = await origin.fetch(call, responder.callerGone())
    if (answer.retried) responder.upstreamRetried()
    await responder.sendStream(answer.status, callerResponseHeaders(answer.headers), answer.body, result)
  }

  /**
   * The uncached hot path: Adobe's answer goes straight into the caller's
   * response, with one retry on a 401. `options` is typically the responder
   * itself: no object or closure is made per request for it.
   */
  async streamInto (call: CmuCall, res: ResponseSink, options: StreamOptions): Promise<void> {
    const { broker, upstreams } = this.#options
    const { upstream, basePath } = upstreams.route(call.target.api)
    // One object per request: the attempt sets Authorization on it (a retry after a 401 overwrites it).
    const headers = upstreamRequestHeaders(call)
    const request = { path: call.target.path, basePath, query: call.target.query, headers }
    await withTokenRetry(broker, async (authorization) => {
      headers.authorization = authorization
      return await upstream.streamTo(res, request, options)
    }, this.#options.tracer, call.log)
  }
}
