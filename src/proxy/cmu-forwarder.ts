// The /cmu policy, independent of how the caller's connection is served:
// stream Adobe's answer straight through (no cache, a conditional request, a
// HEAD that misses), or serve it from the response cache, coalescing
// identical concurrent misses into one request. The Fastify route
// (cmu-route.ts) calls forward() with a Responder that writes through the
// reply; the policy itself knows nothing of Fastify.
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import type { TokenBroker } from '../adobe/token-broker.js'
import { ByteBudget, readAnswer, type Answer } from '../cache/buffered-fetch.js'
import { cacheKey, callerSaysNoCache, isConditional, isStorable, ttlSeconds } from '../cache/cache-policy.js'
import type { CachedResponse, ResponseCache } from '../cache/response-cache.js'
import { upstreamBadEncoding } from '../errors.js'
import { fetchWithToken, withTokenRetry } from './authorized-fetch.js'
import { Coalescer } from './coalescer.js'
import { acceptsGzip, encodingAcceptable, upstreamRequestHeaders } from './headers.js'
import type { UpstreamTarget } from './target.js'
import type { ResponseSink, StreamOptions, Upstream } from './upstream.js'

export type CacheResult = 'HIT' | 'MISS' | 'BYPASS'

export interface CmuForwarderOptions {
  broker: TokenBroker
  upstream: Upstream
  /** Absent when CACHE_ENABLED=false. */
  cache?: ResponseCache | undefined
  cacheTtlMaxSeconds: number
  /** CACHE_MAX_INFLIGHT_BYTES: what all answers being read into memory for the cache may hold together. */
  bufferingMaxBytes: number
  now: () => number
}

/** What forward() needs to know about the caller's request. */
export interface CmuCall {
  target: UpstreamTarget
  headers: IncomingHttpHeaders
  id: string
  ip: string
  /** HEAD: headers only; never downloads a whole report to discard it. */
  head: boolean
}

/** How one transport answers the caller; each method resolves when the answer is complete. */
export interface Responder {
  /** Stream Adobe's answer for `target` into the caller's response (upstream.streamTo). */
  streamThrough: (cacheResult?: CacheResult) => Promise<void>
  /** A complete body in memory: shared by coalesced waiters, or a cache hit (with its Age). */
  sendBuffered: (answer: Pick<CachedResponse, 'status' | 'headers' | 'body'>, cacheResult: CacheResult, age?: number) => Promise<void>
  /** A body too large for the cache, already claimed by this caller. */
  sendStream: (status: number, headers: Record<string, string | string[]>, body: Readable, cacheResult: CacheResult) => Promise<void>
  /** Fires when the caller goes away before its response is complete. */
  callerGone: () => AbortSignal
}

/** An AbortSignal that fires when the caller goes away before `res` is complete. */
export function signalWhenCallerLeaves (res: Pick<ResponseSink, 'once' | 'writableFinished'>): AbortSignal {
  const abort = new AbortController()
  res.once('close', () => { if (!res.writableFinished) abort.abort() })
  return abort.signal
}

export class CmuForwarder {
  readonly #options: CmuForwarderOptions
  readonly #coalescer = new Coalescer<Answer>()
  readonly #buffering: ByteBudget

  constructor (options: CmuForwarderOptions) {
    this.#options = options
    this.#buffering = new ByteBudget(options.bufferingMaxBytes)
  }

  /** Bytes held now by answers being read into memory (metrics). */
  get bufferingBytes (): number { return this.#buffering.used }

  async forward (call: CmuCall, responder: Responder): Promise<void> {
    const { cache, broker, upstream } = this.#options
    if (cache === undefined) { await responder.streamThrough(); return }
    if (isConditional(call.headers)) {
      // A 304 belongs to the caller that asked: neither cached nor shared.
      cache.countBypass()
      await responder.streamThrough('BYPASS')
      return
    }

    const { target } = call
    const gzipAccepted = acceptsGzip(call.headers['accept-encoding'])
    const key = cacheKey(target, call.headers, gzipAccepted)
    const noCache = callerSaysNoCache(call.headers)
    if (noCache) {
      cache.countBypass()
    } else {
      const hit = cache.lookup(key)
      if (hit !== undefined) { await responder.sendBuffered(hit, 'HIT', cache.ageSeconds(hit)); return }
    }
    const result: CacheResult = noCache ? 'BYPASS' : 'MISS'
    // A HEAD that misses reads only Adobe's headers: nothing to store, nothing to share.
    if (call.head) { await responder.streamThrough(result); return }

    const callerGone = responder.callerGone()
    const headers = upstreamRequestHeaders(call.headers, call.id, call.ip, gzipAccepted)
    const fetchAndStore = async (signal: AbortSignal): Promise<Answer> => {
      const response = await fetchWithToken(broker, upstream, target, headers, signal)
      if (!encodingAcceptable(response.headers['content-encoding'], gzipAccepted)) {
        response.body.on('error', () => {}).destroy()
        throw upstreamBadEncoding()
      }
      const answer = await readAnswer(response, cache.maxEntryBytes, this.#buffering)
      if (answer.kind === 'buffered' && isStorable(answer.status, answer.upstreamHeaders)) {
        cache.store(key, answer, ttlSeconds(target, this.#options.now(), this.#options.cacheTtlMaxSeconds))
      }
      return answer
    }
    // no-cache refreshes the entry with its own request; everyone else joins identical misses.
    const joined = !noCache && this.#coalescer.has(key)
    const answer = noCache ? await fetchAndStore(callerGone) : await this.#coalescer.run(key, fetchAndStore, callerGone)
    // An answer that varies on a header outside the key was for the leader only: a waiter asks for its own.
    if (joined && !answer.shareable) { await responder.streamThrough(result); return }
    if (answer.kind === 'buffered') { await responder.sendBuffered(answer, result); return }
    const body = answer.claim()
    if (body !== undefined) { await responder.sendStream(answer.status, answer.headers, body, result); return }
    // Too large to share: this waiter streams its own copy.
    await responder.streamThrough(result)
  }

  /** The uncached hot path: Adobe's answer goes straight into the caller's response, with one retry on a 401. */
  async streamInto (call: CmuCall, res: ResponseSink, options: Omit<StreamOptions, 'gzipAccepted'>): Promise<void> {
    const { broker, upstream } = this.#options
    const gzipAccepted = acceptsGzip(call.headers['accept-encoding'])
    const headers = upstreamRequestHeaders(call.headers, call.id, call.ip, gzipAccepted)
    const streamOptions: StreamOptions = { ...options, gzipAccepted }
    const { path, query } = call.target
    await withTokenRetry(broker, async (authorization) =>
      await upstream.streamTo(res, { path, query, headers: { ...headers, authorization } }, streamOptions))
  }
}
