// GET/HEAD <prefix>/*: validate the target, then either stream Adobe's answer
// straight through (no cache, or a conditional request), or serve it from the
// response cache, coalescing identical concurrent misses into one request.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Readable } from 'node:stream'
import type { TokenBroker } from '../adobe/token-broker.js'
import { readAnswer, type Answer } from '../cache/buffered-fetch.js'
import { cacheKey, callerSaysNoCache, isConditional, isStorable, ttlSeconds } from '../cache/cache-policy.js'
import type { CachedResponse, ResponseCache } from '../cache/response-cache.js'
import { methodNotAllowed } from '../errors.js'
import { errorLabel } from '../logger.js'
import { fetchWithToken, withTokenRetry } from './authorized-fetch.js'
import { Coalescer } from './coalescer.js'
import { upstreamRequestHeaders } from './headers.js'
import { upstreamTarget, type UpstreamTarget } from './target.js'
import type { Upstream } from './upstream.js'

export interface CmuRouteOptions {
  /** PROXY_PATH_PREFIX (not `prefix`: Fastify reserves that register option) */
  pathPrefix: string
  broker: TokenBroker
  upstream: Upstream
  /** Absent when CACHE_ENABLED=false. */
  cache?: ResponseCache | undefined
  cacheTtlMaxSeconds: number
  now: () => number
}

export type CacheResult = 'HIT' | 'MISS' | 'BYPASS'

const ALLOW = 'GET, HEAD'
const OTHER_METHODS = ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

export async function cmuRoutes (app: FastifyInstance, options: CmuRouteOptions): Promise<void> {
  const { pathPrefix: prefix, cache, broker, upstream } = options
  const coalescer = new Coalescer<Answer>()

  async function forward (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const target = upstreamTarget(request.raw.url ?? '', prefix)
    if (cache === undefined) return await streamThrough(request, reply, target)
    if (isConditional(request.headers)) {
      // A 304 belongs to the caller that asked: neither cached nor shared.
      cache.countBypass()
      return await streamThrough(request, reply, target, 'BYPASS')
    }

    const key = cacheKey(target, request.headers)
    const noCache = callerSaysNoCache(request.headers)
    if (noCache) {
      cache.countBypass()
    } else {
      const hit = cache.lookup(key)
      if (hit !== undefined) return await sendBuffered(request, reply, hit, 'HIT', cache.ageSeconds(hit))
    }
    const callerGone = abortWhenCallerLeaves(reply)
    const headers = upstreamRequestHeaders(request.headers, request.id, request.ip)
    const fetchAndStore = async (signal: AbortSignal): Promise<Answer> => {
      const answer = await readAnswer(await fetchWithToken(broker, upstream, target, headers, signal), cache.maxEntryBytes)
      if (answer.kind === 'buffered' && isStorable(answer.status, answer.upstreamHeaders, key)) {
        cache.store(key, answer, ttlSeconds(target, options.now(), options.cacheTtlMaxSeconds))
      }
      return answer
    }
    // no-cache refreshes the entry with its own request; everyone else joins identical misses.
    const answer = noCache ? await fetchAndStore(callerGone) : await coalescer.run(key, fetchAndStore, callerGone)
    const result: CacheResult = noCache ? 'BYPASS' : 'MISS'
    if (answer.kind === 'buffered') return await sendBuffered(request, reply, answer, result)
    const body = answer.claim()
    if (body !== undefined) return await sendStream(request, reply, answer.status, answer.headers, body, result)
    // Too large to share: this waiter streams its own copy.
    return await streamThrough(request, reply, target, result)
  }

  /** The hot path: dispatch straight into the caller's response, taking it over from Fastify once Adobe answers. */
  async function streamThrough (request: FastifyRequest, reply: FastifyReply, target: UpstreamTarget, cacheResult?: CacheResult): Promise<FastifyReply> {
    if (cacheResult !== undefined) request.cacheResult = cacheResult
    const headers = upstreamRequestHeaders(request.headers, request.id, request.ip)
    const extraHeaders: Record<string, string> = cacheResult === undefined ? { 'x-request-id': request.id } : { 'x-request-id': request.id, 'x-cache': cacheResult }
    const stream = {
      onStart: () => { reply.hijack() },
      extraHeaders,
      headOnly: request.method === 'HEAD',
      onBodyError: (error: Error) => { request.log.warn({ error: errorLabel(error) }, 'response body ended early') }
    }
    await withTokenRetry(broker, async (authorization) =>
      await upstream.streamTo(reply.raw, { path: target.path, query: target.query, headers: { ...headers, authorization } }, stream))
    return reply
  }

  app.route({ method: ['GET', 'HEAD'], url: prefix, handler: forward })
  app.route({ method: ['GET', 'HEAD'], url: `${prefix}/*`, handler: forward })
  // Refused in onRequest, before Fastify would parse (and maybe 415) a request body.
  const refuse = async (): Promise<never> => { throw methodNotAllowed(ALLOW) }
  app.route({ method: [...OTHER_METHODS], url: prefix, onRequest: refuse, handler: refuse })
  app.route({ method: [...OTHER_METHODS], url: `${prefix}/*`, onRequest: refuse, handler: refuse })
}

/** Fires when the caller goes away before its response is complete. */
function abortWhenCallerLeaves (reply: FastifyReply): AbortSignal {
  const abort = new AbortController()
  reply.raw.once('close', () => { if (!reply.raw.writableFinished) abort.abort() })
  return abort.signal
}

/** A body too large for the cache, already claimed by this caller. */
async function sendStream (request: FastifyRequest, reply: FastifyReply, status: number, headers: Record<string, string | string[]>, body: Readable, cacheResult: CacheResult): Promise<FastifyReply> {
  request.cacheResult = cacheResult
  reply.code(status).headers(headers).header('x-cache', cacheResult)
  if (request.method !== 'HEAD') return await reply.send(body)
  body.on('error', () => {}).destroy()
  return await reply.send()
}

/** A complete body in memory: shared by coalesced waiters, or a cache hit (with its Age). */
async function sendBuffered (request: FastifyRequest, reply: FastifyReply, answer: Pick<CachedResponse, 'status' | 'headers' | 'body'>, cacheResult: CacheResult, age?: number): Promise<FastifyReply> {
  request.cacheResult = cacheResult
  reply.code(answer.status).headers(answer.headers).header('content-length', answer.body.length).header('x-cache', cacheResult)
  if (age !== undefined) reply.header('age', age)
  return await reply.send(request.method === 'HEAD' ? undefined : answer.body)
}
