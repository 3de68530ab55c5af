// The cache in front of the origin, and the one place that composes the
// freshness rules (freshness.ts, validation.ts; RFC 9111): fresh -> serve;
// stale within its revalidate window -> serve at once and refresh once in
// the background; otherwise fetch (identical concurrent requests share one;
// conditional on the stale copy's validators, so a 304 keeps it), store, and
// when that fails serve the stale copy where its origin allows it (RFC 5861
// stale-while-revalidate and stale-if-error; nginx's proxy_cache_use_stale,
// background_update and proxy_cache_revalidate). A key
// whose fetch failed rests (rests.ts): callers get the stale copy, Adobe gets
// a rest. In a fleet, identical misses across the fleet make one upstream call
// (nginx's proxy_cache_lock) through the levels (cache-levels.ts), which is
// all the layer knows of the fleet.
import type { Tracer } from '@opentelemetry/api'
import type { Logger } from 'pino'
import { UpstreamFailingInFleet, UpstreamUnavailable, type ProxyError, type UnavailableReason } from '../kernel/errors.js'
import type { Origin, OriginRequest } from '../upstream/origin.js'
import { inSpan } from '../telemetry/tracing.js'
import { ByteBudget, readAnswer, type Answer, type BufferedAnswer, type HeaderFilter } from './buffered-fetch.js'
import { CacheLevels, type FleetUse, type PurgeResult } from './cache-levels.js'
import { cacheKey, callerSaysNoCache, isConditional, refusedStorage, staleOnArrival, type UncacheableReason } from './cache-policy.js'
import { Coalescer } from './coalescer.js'
import { ageSeconds, correctedInitialAgeSeconds, entryTimes, freshnessLeftSeconds, isFresh, mayServeOnError, mayServeWhileRevalidating, revalidateWindowSeconds, scheduleSeconds, type EntryTimes, type ExchangeTimes } from './freshness.js'
import type { CachedResponse, ResponseCache, StaleReason } from './response-cache.js'
import { Rests, type Rest } from './rests.js'
import type { SharedCache, UpstreamFailure } from './shared-cache.js'
import { lookupStart, traceLookup, type LookupStart } from './lookup-trace.js'
import { UncacheableNotices } from './uncacheable.js'
import { notModifiedFor, notModifiedHeaders, updatedHeaders, validatorsOf } from './validation.js'

/** How the cache answered (X-Cache): REVALIDATED is a stored copy Adobe confirmed with a 304 (nginx's word for it). */
export type CacheResult = 'HIT' | 'MISS' | 'BYPASS' | 'STALE' | 'REVALIDATED'

export interface CacheLayerOptions {
  cache: ResponseCache
  /** Fleet mode: the cache shared with the other instances, behind `cache`. */
  shared?: SharedCache | undefined
  /** Where misses are fetched (upstream/origin.ts: Adobe, with the token and header policies). */
  origin: Origin
  /** The upstream response headers a caller may see (upstream/header-policy.ts: callerResponseHeaders). */
  callerHeaders: HeaderFilter
  ttlMaxSeconds: number
  /** How long past its TTL an entry is kept to serve when Adobe fails. */
  staleIfErrorSeconds: number
  /** Serve stale at once while refreshing, this long past the TTL; undefined: 10% of the TTL, at least 30 s; 0: off. */
  staleWhileRevalidateSeconds: number | undefined
  /** CACHE_IGNORE_ORIGIN_FRESHNESS: the report schedule decides freshness whatever Adobe's Cache-Control or Expires say (never over no-store or private). */
  ignoreOriginFreshness?: boolean | undefined
  /** What all answers held in memory for callers (read, not yet sent or stored) may hold together. */
  bufferingMaxBytes: number
  logger: Logger
  /** Deadlines: freshness, stale windows, back-off. */
  now: () => number
  /** Wall-clock time, to compare with a report's `end` date and HTTP dates. */
  wallNow: () => number
  /** When tracing is on: the lookup, the coalescing and background refreshes become spans. */
  tracer?: Tracer | undefined
}

/** Who asked: a shared request is cancelled only when every caller has gone. */
export interface Caller {
  /** Fires when the caller goes away before its answer is complete. */
  callerGone: () => AbortSignal
}

export type CacheOutcome =
  /** Not the cache's business (conditional, a key too long to keep, an answer meant for another caller): stream it yourself. */
  | { kind: 'pass', result: CacheResult }
  /** From memory: a fresh hit, a copy Adobe just confirmed, or a stale copy with the Cache-Status that says why. */
  | { kind: 'cached', entry: CachedResponse, result: 'HIT' | 'STALE' | 'REVALIDATED', age: number, cacheStatus?: string }
  /** A caller's conditional request that a fresh entry answers: 304 with these headers. */
  | { kind: 'not-modified', headers: Record<string, string | string[]>, age: number }
  /**
   * Just fetched, maybe shared with other callers. A buffered body is held for
   * this caller: call `answer.release()` once it is sent. `age`: when Adobe
   * sent an Age; `cacheStatus`: when Adobe's directives keep it out of the cache.
   */
  | { kind: 'fetched', answer: Answer, result: 'MISS' | 'BYPASS', age?: number | undefined, cacheStatus?: string | undefined }

/** What one shared fetch gives every caller that joined it. */
type Work =
  /** Adobe answered (`stored`: kept in memory; `failed`: a 5xx or 429, the key now rests; `age`: when it sent an Age). */
  | { kind: 'answered', answer: Answer, stored?: CachedResponse | undefined, failed?: StaleReason | undefined, age?: number | undefined, uncacheable?: UncacheableReason | undefined }
  /** Adobe confirmed the stored copy (304): refreshed (RFC 9111 §4.3.4) and kept. */
  | { kind: 'revalidated', entry: CachedResponse }
  /** No answer could be had (unreachable, slow, no token, overloaded); the key now rests. */
  | { kind: 'unavailable', reason: UnavailableReason, error: ProxyError }
  /** Another instance of the fleet stored it. */
  | { kind: 'landed', entry: CachedResponse }
  /** The fleet said Adobe failed this report a moment ago: not asked again before `refusal.until`. */
  | { kind: 'told', refusal: Rest }

const PASS_BYPASS: CacheOutcome = { kind: 'pass', result: 'BYPASS' }
/** Keys longer than this (a huge Accept header) are not cached: they would crowd the cache for one caller. */
const MAX_KEY_LENGTH = 4_096
/** Reasons for which the request reached Adobe (RFC 9211 fwd); the others never left the proxy. */
const FORWARDED: ReadonlySet<StaleReason> = new Set(['upstream_5xx', 'upstream_429', 'unreachable', 'timeout'])

export class CacheLayer {
  readonly #options: CacheLayerOptions
  readonly #cache: ResponseCache
  readonly #levels: CacheLevels
  readonly #coalescer = new Coalescer<Work>()
  readonly #buffering: ByteBudget
  readonly #rests = new Rests()
  readonly #uncacheable: UncacheableNotices
  /** Background refreshes belong to no caller: only shutdown (or the upstream timeouts) ends them. */
  readonly #closing = new AbortController()

  constructor (options: CacheLayerOptions) {
    this.#options = options
    this.#cache = options.cache
    this.#buffering = new ByteBudget(options.bufferingMaxBytes)
    this.#uncacheable = new UncacheableNotices(options.cache, options.logger)
    this.#levels = new CacheLevels({ memory: options.cache, shared: options.shared, now: options.now, wallNow: options.wallNow, revalidateSeconds: (lifetime) => revalidateWindowSeconds(lifetime, options.staleWhileRevalidateSeconds) })
  }

  /** Bytes held now by answers read into memory and not yet sent or stored (metrics). */
  get bufferingBytes (): number { return this.#buffering.used }

  /** An operator's purge: every entry, or every variant of one upstream path, here and in the fleet (cache-levels.ts). */
  async purge (path: string | undefined): Promise<PurgeResult> {
    return await this.#levels.purge(path)
  }

  /** Cancels background refreshes (shutdown). */
  close (): void {
    this.#closing.abort()
  }

  async answer (request: OriginRequest, caller: Caller): Promise<CacheOutcome> {
    // The lookup span covers the look in memory and, in a fleet, in Redis; only read when tracing.
    const started = lookupStart(this.#options.tracer)
    if (isConditional(request.headers)) return await this.#conditional(request, started)
    const key = cacheKey(request)
    if (key.length > MAX_KEY_LENGTH) { this.#looked('bypass', started); return PASS_BYPASS }
    const noCache = callerSaysNoCache(request.headers)
    const now = this.#options.now()
    let entry = this.#levels.peek(key)
    let fleet = this.#levels.fleetUse(noCache)
    // In a fleet, ask the shared level when memory has nothing to answer with at once.
    if (fleet === 'turns' && (entry === undefined || !mayServeWhileRevalidating(entry, now))) ({ entry, fleet } = await this.#levels.lookUp(key, entry))
    if (entry !== undefined) {
      if (!noCache && isFresh(entry, now)) {
        this.#looked('hit', started)
        return { kind: 'cached', entry, result: 'HIT', age: ageSeconds(entry, now) }
      }
      // Adobe failed this key a moment ago: do not ask again before it said we may (when the copy may stand in).
      const rest = this.#rests.resting(key, now)
      if (rest !== undefined && mayServeOnError(entry, now)) return this.#stale(entry, rest.reason, started)
      if (!noCache && mayServeWhileRevalidating(entry, now)) {
        this.#refreshInBackground(key, request, entry)
        return this.#stale(entry, 'revalidating', started)
      }
    } else {
      // The fleet was told a moment ago that Adobe failed this report: with no copy to serve, say so rather than ask again.
      const refusal = this.#rests.refusing(key, now)
      if (refusal !== undefined) throw new UpstreamFailingInFleet(refusal.reason, refusal.until - now)
    }
    this.#looked(noCache ? 'bypass' : 'miss', started)

    // no-cache asks for an answer fresh from Adobe: one already on its way is that.
    const joined = this.#coalescer.has(key)
    const stale = entry
    const work = await inSpan(this.#options.tracer, 'cmu_proxy.cache.coalesce', { 'cmu_proxy.coalesce.role': joined ? 'waiter' : 'leader' }, async () =>
      await this.#coalescer.run(key, async (signal) => await this.#fetch(key, request, signal, fleet, stale), caller.callerGone()))
    return this.#outcome(work, entry, joined, noCache)
  }

  /** A caller's conditional request: 304 from a fresh entry whose validator matches (RFC 9111 §4.3.2), else Adobe answers it. */
  async #conditional (request: OriginRequest, started: LookupStart | undefined): Promise<CacheOutcome> {
    const key = cacheKey(request)
    let entry = key.length > MAX_KEY_LENGTH ? undefined : this.#levels.peek(key)
    if (entry === undefined && key.length <= MAX_KEY_LENGTH && this.#levels.fleetUse(false) === 'turns') entry = (await this.#levels.lookUp(key, undefined)).entry
    const now = this.#options.now()
    if (entry === undefined || !isFresh(entry, now) || !notModifiedFor(request.headers, entry.headers)) {
      this.#looked('bypass', started)
      return PASS_BYPASS
    }
    this.#looked('hit', started)
    return { kind: 'not-modified', headers: notModifiedHeaders(entry.headers), age: ageSeconds(entry, now) }
  }

  /** What a caller gets from the shared fetch `work`; `entry`: the copy it had, if any. */
  #outcome (work: Work, entry: CachedResponse | undefined, joined: boolean, noCache: boolean): CacheOutcome {
    const now = this.#options.now()
    // A copy may stand in for a failure only where its origin allows stale answers (RFC 9111 §4.2.4).
    const standIn = entry !== undefined && mayServeOnError(entry, now) ? entry : undefined
    switch (work.kind) {
      case 'landed':
        this.#cache.countHit()
        return { kind: 'cached', entry: work.entry, result: 'HIT', age: ageSeconds(work.entry, now) }
      case 'revalidated': {
        this.#cache.countHit()
        const { entry: confirmed } = work
        const cacheStatus = `cmu-proxy; fwd=${noCache ? 'request' : 'stale'}; fwd-status=304; ttl=${freshnessLeftSeconds(confirmed, now)}${confirmed.noCache ? '; detail=no-cache' : ''}`
        return { kind: 'cached', entry: confirmed, result: 'REVALIDATED', age: ageSeconds(confirmed, now), cacheStatus }
      }
      case 'told':
        // Told by the fleet, this request never left the proxy: Cache-Status says hit, not fwd.
        if (standIn !== undefined) return this.#stale(standIn, work.refusal.reason, lookupStart(this.#options.tracer))
        throw new UpstreamFailingInFleet(work.refusal.reason, work.refusal.until - now)
      case 'unavailable':
        if (standIn !== undefined) return this.#stale(standIn, work.reason, lookupStart(this.#options.tracer), forwardedAs(work.reason, noCache))
        throw work.error
    }
    const { answer, failed } = work
    if (failed !== undefined && standIn !== undefined) {
      if (answer.kind === 'streamed') answer.claim()?.destroy()
      return this.#stale(standIn, failed, lookupStart(this.#options.tracer), forwardedAs(failed, noCache), answer.status)
    }
    const result = noCache ? 'BYPASS' : 'MISS'
    // An answer that varies on a header outside the key was for the leader only: a waiter asks for its own.
    if (joined && !answer.shareable) return { kind: 'pass', result }
    if (answer.kind === 'buffered') answer.hold()
    const cacheStatus = work.uncacheable === undefined ? undefined : `cmu-proxy; fwd=${noCache ? 'request' : 'uri-miss'}; detail=${work.uncacheable}`
    return { kind: 'fetched', answer, result, age: work.age, cacheStatus }
  }

  /** Adobe's answer, kept when storable; in a fleet, only one instance asks Adobe and the others take what it stored. */
  async #fetch (key: string, request: OriginRequest, signal: AbortSignal, fleet: FleetUse, stale: CachedResponse | undefined): Promise<Work> {
    if (fleet !== 'turns') {
      const work = await this.#fetchFromOrigin(key, request, signal, stale)
      const kept = keptBy(work)
      if (fleet === 'share' && kept !== undefined) this.#levels.share(key, kept)
      return work
    }
    // Time spent waiting on another instance that is asking Adobe for this report.
    const turn = await inSpan(this.#options.tracer, 'cmu_proxy.cache.fleet_wait', {}, async (span) => {
      const turn = await this.#levels.turn(key, signal)
      span?.setAttribute('cmu_proxy.fleet.turn', turn.kind)
      return turn
    })
    if (turn.kind === 'landed') return turn
    // The fleet asked Adobe for this a moment ago and Adobe failed: one call, not one per instance.
    if (turn.kind === 'failed') return { kind: 'told', refusal: this.#rests.told(key, turn.failure, this.#options.now()) }
    let work: Work | undefined
    try {
      work = await this.#fetchFromOrigin(key, request, signal, stale)
      return work
    } finally {
      if (turn.kind === 'lead') turn.done(work === undefined ? undefined : keptBy(work), work?.kind === 'answered' ? this.#failureToShare(key, work.failed) : undefined)
    }
  }

  /**
   * What the fleet is told when Adobe itself failed this fetch just now: a 5xx
   * or a 429, with the rest set for it. Not a failure that may be this
   * instance's own (its egress, its DNS, its token back-off, its queue): the
   * others ask for themselves then.
   */
  #failureToShare (key: string, failed: StaleReason | undefined): UpstreamFailure | undefined {
    if (failed !== 'upstream_5xx' && failed !== 'upstream_429') return undefined
    const restMs = this.#rests.remainingMs(key, this.#options.now())
    return restMs <= 0 ? undefined : { reason: failed, restMs }
  }

  /**
   * Adobe's answer (conditional on the validators of `stale`, when it has
   * any), whether it was stored, and, for a 5xx or 429, that it failed; a
   * confirmed copy; or why no answer could be had.
   */
  async #fetchFromOrigin (key: string, request: OriginRequest, signal: AbortSignal, stale: CachedResponse | undefined): Promise<Work> {
    const { origin, callerHeaders, now, wallNow } = this.#options
    const validators = stale === undefined ? undefined : validatorsOf(stale.headers)
    const requestedAt = now()
    let answer: Answer
    let times: ExchangeTimes
    try {
      const response = await origin.fetch(request, signal, validators)
      times = { requestedAt, respondedAt: now(), respondedAtWall: wallNow() }
      answer = await readAnswer(response, this.#cache.maxEntryBytes, this.#buffering, callerHeaders)
    } catch (err) {
      // A caller who left, an encoding nobody accepted: not a failure a stale copy may hide.
      if (!(err instanceof UpstreamUnavailable)) throw err
      this.#rests.failed(key, err.reason, undefined, now(), wallNow())
      return { kind: 'unavailable', reason: err.reason, error: err }
    }
    const failed = failureReason(answer.status)
    if (failed !== undefined) {
      this.#rests.failed(key, failed, answer.kind === 'buffered' ? answer.upstreamHeaders : undefined, now(), wallNow())
      return { kind: 'answered', answer, failed }
    }
    this.#rests.clear(key)
    if (answer.kind === 'streamed') return { kind: 'answered', answer }
    if (answer.status === 304 && stale !== undefined && validators !== undefined) return this.#confirmed(key, request, stale, answer, times)
    // Age on a miss only when Adobe sent one: our own is the response delay, which callers need not see (§4.2.3).
    const age = answer.upstreamHeaders.age === undefined ? undefined : Math.floor(correctedInitialAgeSeconds(answer.upstreamHeaders, times))
    if (answer.status !== 200) return { kind: 'answered', answer, age }
    return { kind: 'answered', answer, age, ...this.#store(key, request, answer, times) }
  }

  /** A 200 kept under the freshness rules, or why Adobe's directives keep it out (or make every use ask again). */
  #store (key: string, request: OriginRequest, answer: BufferedAnswer, times: ExchangeTimes): { stored?: CachedResponse | undefined, uncacheable?: UncacheableReason | undefined } {
    const entry = this.#entry(request, answer.upstreamHeaders, times)
    const validated = validatorsOf(answer.headers) !== undefined
    const refused = refusedStorage(answer.upstreamHeaders) ?? (entry === undefined ? undefined : staleOnArrival(entry, validated, times.respondedAt))
    if (refused !== undefined) this.#uncacheable.seen(refused, request.target.path)
    // A no-cache answer is kept only to be revalidated: without a validator that would be a full fetch anyway.
    if (entry === undefined || (refused !== undefined && !(refused === 'no-cache' && validated))) return { uncacheable: refused }
    const stored = this.#levels.keep(key, { status: answer.status, headers: answer.headers, body: answer.body, ...entry })
    // From here the cache's own byte bound accounts for the body.
    if (stored !== undefined) answer.uncharge()
    return { stored, uncacheable: refused }
  }

  /** Adobe confirmed `stale` (304): its fields and freshness refreshed from the 304's (RFC 9111 §4.3.4), kept and shared. */
  #confirmed (key: string, request: OriginRequest, stale: CachedResponse, notModified: BufferedAnswer, times: ExchangeTimes): Work {
    const headers = updatedHeaders(stale.headers, notModified.headers)
    // Freshness from the fields as they stand now, with the 304's own Date and Age (not the stored answer's).
    const entry = this.#entry(request, { ...headers, date: notModified.upstreamHeaders.date, age: notModified.upstreamHeaders.age }, times)
    const confirmed: CachedResponse = { ...stale, headers, ...(entry ?? {}) }
    if (confirmed.noCache) this.#uncacheable.seen('no-cache', request.target.path)
    return { kind: 'revalidated', entry: this.#levels.keep(key, confirmed) ?? confirmed }
  }

  /** The freshness of an answer that arrived at `times`; undefined when CACHE_TTL_MAX_SECONDS=0 keeps nothing. */
  #entry (request: OriginRequest, headers: Record<string, string | string[] | undefined>, times: ExchangeTimes): EntryTimes | undefined {
    const { ttlMaxSeconds, staleIfErrorSeconds, staleWhileRevalidateSeconds, ignoreOriginFreshness = false } = this.#options
    if (ttlMaxSeconds === 0) return undefined
    const heuristic = scheduleSeconds(request.target, times.respondedAtWall, ttlMaxSeconds)
    return entryTimes(headers, heuristic, times, { ttlMaxSeconds, staleIfErrorSeconds, staleWhileRevalidateSeconds, ignoreOriginFreshness })
  }

  #refreshInBackground (key: string, request: OriginRequest, stale: CachedResponse): void {
    if (this.#coalescer.has(key)) return
    const { logger, tracer } = this.#options
    const path = request.target.path
    // Its own trace: it serves whoever asks next, not the caller that started it.
    inSpan(tracer, 'cmu_proxy.cache.refresh', { 'url.path': path }, async () =>
      await this.#coalescer.run(key, async (signal) => await this.#fetch(key, request, signal, this.#levels.fleetUse(false), stale), this.#closing.signal), true).then((work) => {
      if (work.kind === 'unavailable') logger.warn({ path, code: work.error.code }, 'background cache refresh failed; the stale copy stays')
      if (work.kind !== 'answered') return
      // Nobody waits for a body too large to keep; a waiter that joined streams its own copy.
      if (work.answer.kind === 'streamed') work.answer.claim()?.destroy()
      if (work.answer.status !== 200) logger.warn({ path, status: work.answer.status }, 'background cache refresh: Adobe did not answer 200; the stale copy stays')
    }, (err: unknown) => {
      logger.warn({ path, code: (err as { code?: string }).code }, 'background cache refresh failed; the stale copy stays')
    })
  }

  /**
   * A stale copy (or, for a no-cache request that failed, the fresh one), with
   * its RFC 9211 Cache-Status: `fwd` (and Adobe's status) when this request
   * went to Adobe and failed, `hit` when it was answered without asking.
   */
  #stale (entry: CachedResponse, reason: StaleReason, started: LookupStart | undefined, forwarded?: 'stale' | 'request', upstreamStatus?: number): CacheOutcome {
    const now = this.#options.now()
    this.#cache.countStale(reason)
    traceLookup(started, 'stale', reason)
    const how = forwarded === undefined ? 'hit' : `fwd=${forwarded}${upstreamStatus === undefined ? '' : `; fwd-status=${upstreamStatus}`}`
    const cacheStatus = `cmu-proxy; ${how}; ttl=${freshnessLeftSeconds(entry, now)}; detail=${reason}`
    return { kind: 'cached', entry, result: isFresh(entry, now) ? 'HIT' : 'STALE', age: ageSeconds(entry, now), cacheStatus }
  }

  /** Counts how the cache answered, and records it as a span when tracing. */
  #looked (result: 'hit' | 'miss' | 'bypass', started: LookupStart | undefined): void {
    const cache = this.#cache
    if (result === 'hit') cache.countHit()
    else if (result === 'miss') cache.countMiss()
    else cache.countBypass()
    traceLookup(started, result)
  }
}

/** RFC 9211 `fwd`: why a request that reached Adobe went there (no-cache, or a stale entry); undefined when it never left the proxy. */
function forwardedAs (reason: StaleReason, noCache: boolean): 'stale' | 'request' | undefined {
  if (!FORWARDED.has(reason)) return undefined
  return noCache ? 'request' : 'stale'
}

/** Adobe's answers a stale copy may hide: 5xx and 429. Other 4xx are the caller's business and pass through. */
function failureReason (status: number): StaleReason | undefined {
  return status >= 500 ? 'upstream_5xx' : status === 429 ? 'upstream_429' : undefined
}

/** The entry a fetch left in memory: stored, or confirmed by a 304. */
function keptBy (work: Work): CachedResponse | undefined {
  if (work.kind === 'revalidated') return work.entry
  return work.kind === 'answered' ? work.stored : undefined
}
