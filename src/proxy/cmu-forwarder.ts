// The /cmu policy, independent of how the caller's connection is served:
// stream Adobe's answer straight through (no cache, or a conditional
// request), or serve it from the response cache, coalescing identical
// concurrent misses into one request. The Fastify route (cmu-route.ts) calls
// forward() with a Responder that writes through the reply; the policy itself
// knows nothing of Fastify.
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import type { TokenBroker } from '../adobe/token-broker.js'
import { readAnswer, type Answer } from '../cache/buffered-fetch.js'
import { cacheKey, callerSaysNoCache, isConditional, isStorable, ttlSeconds } from '../cache/cache-policy.js'
import type { CachedResponse, ResponseCache } from '../cache/response-cache.js'
import { fetchWithToken, withTokenRetry } from './authorized-fetch.js'
import { Coalescer } from './coalescer.js'
import { upstreamRequestHeaders } from './headers.js'
import type { UpstreamTarget } from './target.js'
import type { ResponseSink, StreamOptions, Upstream } from './upstream.js'

export type CacheResult = 'HIT' | 'MISS' | 'BYPASS'

export interface CmuForwarderOptions {
  broker: TokenBroker
  upstream: Upstream
  /** Absent when CACHE_ENABLED=false. */
  cache?: ResponseCache | undefined
  cacheTtlMaxSeconds: number
  now: () => number
}

/** What forward() needs to know about the caller's request. */
export interface CmuCall {
  target: UpstreamTarget
  headers: IncomingHttpHeaders
  id: string
  ip: string
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

  constructor (options: CmuForwarderOptions) {
    this.#options = options
  }

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
    const key = cacheKey(target, call.headers)
    const noCache = callerSaysNoCache(call.headers)
    if (noCache) {
      cache.countBypass()
    } else {
      const hit = cache.lookup(key)
      if (hit !== undefined) { await responder.sendBuffered(hit, 'HIT', cache.ageSeconds(hit)); return }
    }
    const callerGone = responder.callerGone()
    const headers = upstreamRequestHeaders(call.headers, call.id, call.ip)
    const fetchAndStore = async (signal: AbortSignal): Promise<Answer> => {
      const answer = await readAnswer(await fetchWithToken(broker, upstream, target, headers, signal), cache.maxEntryBytes)
      if (answer.kind === 'buffered' && isStorable(answer.status, answer.upstreamHeaders, key)) {
        cache.store(key, answer, ttlSeconds(target, this.#options.now(), this.#options.cacheTtlMaxSeconds))
      }
      return answer
    }
    // no-cache refreshes the entry with its own request; everyone else joins identical misses.
    const answer = noCache ? await fetchAndStore(callerGone) : await this.#coalescer.run(key, fetchAndStore, callerGone)
    const result: CacheResult = noCache ? 'BYPASS' : 'MISS'
    if (answer.kind === 'buffered') { await responder.sendBuffered(answer, result); return }
    const body = answer.claim()
    if (body !== undefined) { await responder.sendStream(answer.status, answer.headers, body, result); return }
    // Too large to share: this waiter streams its own copy.
    await responder.streamThrough(result)
  }

  /** The uncached hot path: Adobe's answer goes straight into the caller's response, with one retry on a 401. */
  async streamInto (call: CmuCall, res: ResponseSink, options: StreamOptions): Promise<void> {
    const { broker, upstream } = this.#options
    const headers = upstreamRequestHeaders(call.headers, call.id, call.ip)
    const { path, query } = call.target
    await withTokenRetry(broker, async (authorization) =>
      await upstream.streamTo(res, { path, query, headers: { ...headers, authorization } }, options))
  }
}
