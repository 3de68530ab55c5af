// The cache in front of the upstream fetch, and the one place that decides
// freshness: fresh -> serve; stale within its revalidate window -> serve at
// once and refresh once in the background; otherwise fetch (identical
// concurrent misses share one request), store, and when that fails serve the
// stale copy if one is still kept (RFC 5861 stale-while-revalidate and
// stale-if-error; nginx's proxy_cache_use_stale and background_update).
// In a fleet, a shared second level sits behind the in-memory one, and
// identical misses across the fleet make one upstream call (nginx's
// proxy_cache_lock): the layer asks it, without knowing that it is Redis.
import type { IncomingHttpHeaders } from 'node:http'
import type { Logger } from 'pino'
import type { Dispatcher } from 'undici'
import { ProxyError, TOKEN_UNAVAILABLE_CODES } from '../errors.js'
import type { UpstreamTarget } from '../proxy/target.js'
import { ByteBudget, readAnswer, type Answer } from './buffered-fetch.js'
import { cacheKey, callerSaysNoCache, isConditional, isStorable, ttlSeconds } from './cache-policy.js'
import { Coalescer } from './coalescer.js'
import type { CachedResponse, ResponseCache, StaleReason } from './response-cache.js'

export type CacheResult = 'HIT' | 'MISS' | 'BYPASS' | 'STALE'

/** An entry as a fleet shares it: wall-clock instants (instances share no monotonic clock). */
export type SharedEntry = Omit<CachedResponse, never>

export type SharedTurn =
  /** Fetch for the fleet, then `done` with what was stored (undefined: nothing; the others fetch their own). */
  | { kind: 'lead', done: (stored: SharedEntry | undefined) => void }
  /** Another instance stored it while this one waited. */
  | { kind: 'landed', entry: SharedEntry }
  /** Go upstream alone: the fleet could not be asked, or no word came in time. */
  | { kind: 'alone' }

/** The fleet's second cache level (fleet/shared-cache.ts). Never rejects: trouble is a miss. */
export interface SharedCache {
  /** 'unavailable': the store could not be asked; this request does not ask it again. */
  get: (key: string) => Promise<SharedEntry | undefined | 'unavailable'>
  /** Share an entry fetched outside a turn (a no-cache refresh); in the background. */
  put: (key: string, entry: SharedEntry) => void
  turn: (key: string, signal: AbortSignal) => Promise<SharedTurn>
}

export interface CacheLayerOptions {
  cache: ResponseCache
  /** Fleet mode: the cache shared with the other instances, behind `cache`. */
  shared?: SharedCache | undefined
  ttlMaxSeconds: number
  /** How long past its TTL an entry is kept to serve when Adobe fails. */
  staleIfErrorSeconds: number
  /** Serve stale at once while refreshing, this long past the TTL; undefined: 10% of the TTL, at least 30 s; 0: off. */
  staleWhileRevalidateSeconds: number | undefined
  /** What all answers being read into memory may hold together. */
  bufferingMaxBytes: number
  logger: Logger
  /** Deadlines: freshness and stale windows. */
  now: () => number
  /** Wall-clock time, to compare with a report's `end` date. */
  wallNow: () => number
}

export interface CacheRequest {
  target: UpstreamTarget
  headers: IncomingHttpHeaders
  gzipAccepted: boolean
  head: boolean
  /** Fires when the caller goes away: a shared request is cancelled only when every caller has gone. */
  callerGone: () => AbortSignal
}

/** Sends the request upstream (with the token policy); the layer reads, stores and shares the answer. */
export type Fetch = (signal: AbortSignal) => Promise<Dispatcher.ResponseData>

export type CacheOutcome =
  /** Not the cache's business (conditional, a HEAD that misses, an answer meant for another caller): stream it yourself. */
  | { kind: 'pass', result: CacheResult }
  /** From memory: a fresh hit, or a stale copy with the Cache-Status that says why. */
  | { kind: 'cached', entry: CachedResponse, result: 'HIT' | 'STALE', age: number, cacheStatus?: string }
  /** Just fetched, maybe shared with other callers. */
  | { kind: 'fetched', answer: Answer, result: 'MISS' | 'BYPASS' }

/** What one shared fetch gives: Adobe's answer, or an entry another instance of the fleet stored. */
type Work = Answer | { kind: 'landed', entry: CachedResponse }

const PASS_BYPASS: CacheOutcome = { kind: 'pass', result: 'BYPASS' }
/** Background refreshes belong to no caller: nothing cancels them but the upstream timeouts. */
const NEVER = new AbortController().signal
const MIN_REVALIDATE_SECONDS = 30

export class CacheLayer {
  readonly #options: CacheLayerOptions
  readonly #cache: ResponseCache
  readonly #coalescer = new Coalescer<Work>()
  readonly #buffering: ByteBudget

  constructor (options: CacheLayerOptions) {
    this.#options = options
    this.#cache = options.cache
    this.#buffering = new ByteBudget(options.bufferingMaxBytes)
  }

  /** Bytes held now by answers being read into memory (metrics). */
  get bufferingBytes (): number { return this.#buffering.used }

  async answer (request: CacheRequest, fetch: Fetch): Promise<CacheOutcome> {
    const cache = this.#cache
    // A 304 belongs to the caller that asked: neither cached nor shared.
    if (isConditional(request.headers)) { cache.countBypass(); return PASS_BYPASS }
    const key = cacheKey(request.target, request.headers, request.gzipAccepted)
    const noCache = callerSaysNoCache(request.headers)
    let entry = cache.peek(key)
    // In a fleet, ask the shared level when memory has nothing to answer with at once.
    let fleet = this.#options.shared !== undefined && !noCache
    if (fleet && (entry === undefined || this.#revalidateUntil(entry) <= this.#options.now())) {
      const shared = await this.#options.shared?.get(key)
      if (shared === 'unavailable') fleet = false
      else if (shared !== undefined && (entry === undefined || shared.freshUntil - this.#options.wallNow() > entry.freshUntil - this.#options.now())) entry = this.#fromFleet(key, shared) ?? entry
    }
    if (noCache) {
      cache.countBypass()
    } else if (entry !== undefined && cache.isFresh(entry)) {
      cache.countHit()
      return { kind: 'cached', entry, result: 'HIT', age: cache.ageSeconds(entry) }
    } else if (entry !== undefined && this.#revalidateUntil(entry) > this.#options.now()) {
      this.#refreshInBackground(key, request.target, fetch)
      return this.#stale(entry, 'revalidating')
    } else {
      cache.countMiss()
    }
    const result = noCache ? 'BYPASS' : 'MISS'
    // A HEAD that misses reads only Adobe's headers: nothing to store, nothing to share.
    if (request.head) return { kind: 'pass', result }

    const joined = !noCache && this.#coalescer.has(key)
    const work = (signal: AbortSignal): Promise<Work> => this.#fetchAndStore(key, request.target, fetch, signal, fleet)
    let answer: Work
    try {
      // no-cache refreshes the entry with its own request; everyone else joins identical misses.
      answer = noCache ? await work(request.callerGone()) : await this.#coalescer.run(key, work, request.callerGone())
    } catch (err) {
      const reason = staleReasonForError(err)
      if (reason !== undefined && entry !== undefined) return this.#stale(entry, reason)
      throw err
    }
    if (answer.kind === 'landed') return { kind: 'cached', entry: answer.entry, result: 'HIT', age: cache.ageSeconds(answer.entry) }
    const reason = answer.status >= 500 ? 'upstream_5xx' : answer.status === 429 ? 'upstream_429' : undefined
    if (reason !== undefined && entry !== undefined) {
      if (answer.kind === 'streamed') answer.claim()?.destroy()
      return this.#stale(entry, reason, answer.status)
    }
    // An answer that varies on a header outside the key was for the leader only: a waiter asks for its own.
    if (joined && !answer.shareable) return { kind: 'pass', result }
    return { kind: 'fetched', answer, result }
  }

  /** Adobe's answer, kept when storable; in a fleet, only one instance asks Adobe and the others take what it stored. */
  async #fetchAndStore (key: string, target: UpstreamTarget, fetch: Fetch, signal: AbortSignal, fleet: boolean): Promise<Work> {
    const shared = this.#options.shared
    if (shared === undefined) return (await this.#fetchUpstream(key, target, fetch, signal)).answer
    if (!fleet) {
      const { answer, stored } = await this.#fetchUpstream(key, target, fetch, signal)
      if (stored !== undefined) shared.put(key, this.#fleetForm(stored))
      return answer
    }
    const turn = await shared.turn(key, signal)
    if (turn.kind === 'landed') {
      const entry = this.#fromFleet(key, turn.entry)
      if (entry !== undefined) return { kind: 'landed', entry }
    }
    let stored: CachedResponse | undefined
    try {
      const fetched = await this.#fetchUpstream(key, target, fetch, signal)
      stored = fetched.stored
      return fetched.answer
    } finally {
      if (turn.kind === 'lead') turn.done(stored === undefined ? undefined : this.#fleetForm(stored))
    }
  }

  async #fetchUpstream (key: string, target: UpstreamTarget, fetch: Fetch, signal: AbortSignal): Promise<{ answer: Answer, stored?: CachedResponse | undefined }> {
    const cache = this.#cache
    const answer = await readAnswer(await fetch(signal), cache.maxEntryBytes, this.#buffering)
    if (answer.kind === 'buffered' && isStorable(answer.status, answer.upstreamHeaders)) {
      const { ttlMaxSeconds, staleIfErrorSeconds } = this.#options
      const ttl = ttlSeconds(target, this.#options.wallNow(), ttlMaxSeconds)
      return { answer, stored: cache.store(key, answer, ttl, Math.max(staleIfErrorSeconds, this.#revalidateSeconds(ttl))) }
    }
    return { answer }
  }

  /** A shared entry into memory, its instants moved onto this process's deadline clock. */
  #fromFleet (key: string, entry: SharedEntry): CachedResponse | undefined {
    const offset = this.#options.now() - this.#options.wallNow()
    return this.#cache.put(key, { ...entry, storedAt: entry.storedAt + offset, freshUntil: entry.freshUntil + offset, staleUntil: entry.staleUntil + offset })
  }

  #fleetForm (entry: CachedResponse): SharedEntry {
    const offset = this.#options.wallNow() - this.#options.now()
    return { ...entry, storedAt: entry.storedAt + offset, freshUntil: entry.freshUntil + offset, staleUntil: entry.staleUntil + offset }
  }

  #refreshInBackground (key: string, target: UpstreamTarget, fetch: Fetch): void {
    if (this.#coalescer.has(key)) return
    this.#coalescer.run(key, (signal) => this.#fetchAndStore(key, target, fetch, signal, true), NEVER).then((answer) => {
      if (answer.kind === 'landed') return
      // Nobody waits for a body too large to keep; a waiter that joined streams its own copy.
      if (answer.kind === 'streamed') answer.claim()?.destroy()
      if (answer.status !== 200) this.#options.logger.warn({ path: target.path, status: answer.status }, 'background cache refresh: Adobe did not answer 200; the stale copy stays')
    }, (err: unknown) => {
      this.#options.logger.warn({ path: target.path, code: (err as { code?: string }).code }, 'background cache refresh failed; the stale copy stays')
    })
  }

  #stale (entry: CachedResponse, reason: StaleReason, upstreamStatus?: number): CacheOutcome {
    const cache = this.#cache
    cache.countStale(reason)
    // RFC 9211: served from the cache; when Adobe was asked and failed, say so (fwd, fwd-status).
    const forwarded = reason === 'revalidating' ? '' : `; fwd=stale${upstreamStatus === undefined ? '' : `; fwd-status=${upstreamStatus}`}`
    const cacheStatus = `cmu-proxy; hit${forwarded}; ttl=${cache.ttlSeconds(entry)}; detail=${reason}`
    return { kind: 'cached', entry, result: 'STALE', age: cache.ageSeconds(entry), cacheStatus }
  }

  #revalidateSeconds (ttl: number): number {
    return this.#options.staleWhileRevalidateSeconds ?? Math.max(MIN_REVALIDATE_SECONDS, ttl / 10)
  }

  #revalidateUntil (entry: CachedResponse): number {
    return entry.freshUntil + this.#revalidateSeconds((entry.freshUntil - entry.storedAt) / 1000) * 1000
  }
}

const NO_TOKEN_CODES = new Set<string>([...Object.values(TOKEN_UNAVAILABLE_CODES), 'CMU_PROXY_UPSTREAM_REJECTED_TOKEN'])

/** Failures a stale copy may hide: Adobe unreachable, slow, refusing our token, or us shedding load. Not a caller who left. */
function staleReasonForError (err: unknown): StaleReason | undefined {
  if (!(err instanceof ProxyError)) return undefined
  if (err.code === 'CMU_PROXY_UPSTREAM_UNREACHABLE') return 'unreachable'
  if (err.code === 'CMU_PROXY_UPSTREAM_TIMEOUT') return 'timeout'
  if (err.code === 'CMU_PROXY_OVERLOADED') return 'overloaded'
  if (NO_TOKEN_CODES.has(err.code)) return 'no_token'
  return undefined
}
