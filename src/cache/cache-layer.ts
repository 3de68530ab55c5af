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
import { UpstreamFailingInFleet, upstreamResting, type ProxyError } from '../kernel/errors.js'
import type { Origin, OriginRequest } from '../upstream/origin.js'
import { inSpan } from '../telemetry/tracing.js'
import { ByteBudget, type Answer, type HeaderFilter } from './buffered-fetch.js'
import { CacheLevels, type FleetUse, type PurgeResult } from './cache-levels.js'
import { cacheKey, isConditional, requestDirectives, type RequestDirectives } from './cache-policy.js'
import { Coalescer } from './coalescer.js'
import { ageSeconds, freshnessLeftSeconds, isFresh, mayServeOnError, mayServeWhileRevalidating, revalidateWindowSeconds } from './freshness.js'
import { OriginExchange, type Exchanged } from './origin-exchange.js'
import type { CachedResponse, ResponseCache, StaleReason } from './response-cache.js'
import { Rests, type Rest } from './rests.js'
import type { SharedCache, UpstreamFailure } from './shared-cache.js'
import { lookupStart, traceLookup, type LookupStart } from './lookup-trace.js'
import { UncacheableNotices } from './uncacheable.js'
import { notModifiedFor, notModifiedHeaders } from './validation.js'

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

/** What one shared fetch gives every caller that joined it: an exchange with Adobe (origin-exchange.ts), or the fleet's word. */
type Work =
  | Exchanged
  /** Another instance of the fleet stored it. */
  | { kind: 'landed', entry: CachedResponse }
  /** The fleet said Adobe failed this report a moment ago: not asked again before `refusal.until`. */
  | { kind: 'told', refusal: Rest }

const PASS_BYPASS: CacheOutcome = { kind: 'pass', result: 'BYPASS' }
/** Keys longer than this (a huge Accept header) are not cached: they would crowd the cache for one caller. */
const MAX_KEY_LENGTH = 4_096
/** Reasons for which the request reached Adobe (RFC 9211 fwd); the others never left the proxy. */
const FORWARDED: ReadonlySet<StaleReason> = new Set(['upstream_5xx', 'upstream_429', 'unreachable', 'timeout'])
/** This instance's own failures (no token, its queue full): they have answers of their own, so a rest for them refuses no caller. */
const OWN_FAILURES: ReadonlySet<StaleReason> = new Set(['no_token', 'overloaded'])

export class CacheLayer {
  readonly #options: CacheLayerOptions
  readonly #cache: ResponseCache
  readonly #levels: CacheLevels
  readonly #coalescer = new Coalescer<Work>()
  readonly #buffering: ByteBudget
  readonly #rests = new Rests()
  readonly #exchange: OriginExchange
  /** Background refreshes belong to no caller: only shutdown (or the upstream timeouts) ends them. */
  readonly #closing = new AbortController()

  constructor (options: CacheLayerOptions) {
    this.#options = options
    this.#cache = options.cache
    this.#buffering = new ByteBudget(options.bufferingMaxBytes)
    this.#levels = new CacheLevels({ memory: options.cache, shared: options.shared, now: options.now, wallNow: options.wallNow, revalidateSeconds: (lifetime) => revalidateWindowSeconds(lifetime, options.staleWhileRevalidateSeconds) })
    const uncacheable = new UncacheableNotices(options.cache, options.logger)
    this.#exchange = new OriginExchange(options, { cache: options.cache, levels: this.#levels, rests: this.#rests, buffering: this.#buffering, uncacheable })
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
    const asked = requestDirectives(request.headers)
    if (isConditional(request.headers)) return await this.#conditional(request, asked, started)
    const key = cacheKey(request)
    if (key.length > MAX_KEY_LENGTH) { this.#looked('bypass', started); return PASS_BYPASS }
    const { noCache } = asked
    const now = this.#options.now()
    let entry = this.#levels.peek(key)
    let fleet = this.#levels.fleetUse(noCache)
    // In a fleet, ask the shared level when memory has nothing to answer with at once.
    const askFleet = fleet === 'turns' && (entry === undefined || !mayServeWhileRevalidating(entry, now))
    if (askFleet) ({ entry, fleet } = await this.#levels.lookUp(key, entry))
    if (entry !== undefined && !noCache && isFresh(entry, now)) {
      // A hit from memory is a span's worth of cost for microseconds of work: the server span says hit (cmu_proxy.cache.result).
      this.#looked('hit', askFleet ? started : undefined)
      return { kind: 'cached', entry, result: 'HIT', age: ageSeconds(entry, now) }
    }
    // Adobe failed this key a moment ago: not asked again before it said we may. A copy that may stand in does; else the caller hears when to come back.
    const standIn = entry !== undefined && mayServeOnError(entry, now) ? entry : undefined
    const rest = this.#rests.resting(key, now)
    if (rest !== undefined && standIn !== undefined) return this.#stale(standIn, rest.reason, started)
    const resting = standIn === undefined ? this.#restingProblem(key, now) : undefined
    if (resting !== undefined) throw resting
    // no-store (RFC 9111 §5.2.1.5): nothing Adobe answers to it is kept, so it is its own exchange.
    if (asked.noStore) { this.#looked('bypass', started); return PASS_BYPASS }
    if (entry !== undefined && !noCache && mayServeWhileRevalidating(entry, now)) {
      this.#refreshInBackground(key, request, entry)
      return this.#stale(entry, 'revalidating', started)
    }
    this.#looked(noCache ? 'bypass' : 'miss', started)

    // no-cache asks for an answer fresh from Adobe: one already on its way is that.
    const joined = this.#coalescer.has(key)
    const stale = entry
    const work = await inSpan(this.#options.tracer, 'cmu_proxy.cache.coalesce', { 'cmu_proxy.coalesce.role': joined ? 'waiter' : 'leader' }, async () =>
      await this.#coalescer.run(key, async (signal) => await this.#fetch(key, request, signal, fleet, stale), caller.callerGone()))
    return this.#outcome(work, entry, joined, noCache)
  }

  /**
   * A caller's conditional request: 304 from a fresh entry whose validator
   * matches (RFC 9111 §4.3.2), else Adobe answers it (always, when the caller
   * asked for no-cache), unless the report rests.
   */
  async #conditional (request: OriginRequest, asked: RequestDirectives, started: LookupStart | undefined): Promise<CacheOutcome> {
    const key = cacheKey(request)
    const fromCache = key.length <= MAX_KEY_LENGTH && !asked.noCache
    let entry = fromCache ? this.#levels.peek(key) : undefined
    if (entry === undefined && fromCache && this.#levels.fleetUse(false) === 'turns') entry = (await this.#levels.lookUp(key, undefined)).entry
    const now = this.#options.now()
    if (entry !== undefined && isFresh(entry, now) && notModifiedFor(request.headers, entry.headers)) {
      this.#looked('hit', started)
      return { kind: 'not-modified', headers: notModifiedHeaders(entry.headers), age: ageSeconds(entry, now) }
    }
    // Passed to Adobe as it is, unless Adobe is having a rest from this report.
    const resting = key.length > MAX_KEY_LENGTH ? undefined : this.#restingProblem(key, now)
    if (resting !== undefined) throw resting
    this.#looked('bypass', started)
    return PASS_BYPASS
  }

  /** What a caller with no copy to stand in hears while `key` rests: the fleet's word, or this instance's own rest (not for its own failures). */
  #restingProblem (key: string, now: number): ProxyError | undefined {
    const refusal = this.#rests.refusing(key, now)
    if (refusal !== undefined) return new UpstreamFailingInFleet(refusal.reason, refusal.until - now)
    const rest = this.#rests.resting(key, now)
    return rest?.local === true && !OWN_FAILURES.has(rest.reason) ? upstreamResting(rest.reason, rest.until - now) : undefined
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
        // Like an answer that varies on a header outside the key: for the leader only.
        if (joined && !work.shareable) return { kind: 'pass', result: noCache ? 'BYPASS' : 'MISS' }
        this.#cache.countHit()
        const { entry: confirmed } = work
        const detail = work.refused ?? (confirmed.noCache ? 'no-cache' : undefined)
        const cacheStatus = `cmu-proxy; fwd=${noCache ? 'request' : 'stale'}; fwd-status=304; ttl=${freshnessLeftSeconds(confirmed, now)}${detail === undefined ? '' : `; detail=${detail}`}`
        return { kind: 'cached', entry: confirmed, result: 'REVALIDATED', age: ageSeconds(confirmed, now), cacheStatus }
      }
      case 'told':
        // Told by the fleet, this request never left the proxy: Cache-Status says hit, not fwd.
        // (No second lookup span for a stand-in: the lookup already has one; the server span says stale.)
        if (standIn !== undefined) return this.#stale(standIn, work.refusal.reason, undefined)
        throw new UpstreamFailingInFleet(work.refusal.reason, work.refusal.until - now)
      case 'unavailable':
        if (standIn !== undefined) return this.#stale(standIn, work.reason, undefined, forwardedAs(work.reason, noCache))
        throw work.error
    }
    const { answer, failed } = work
    if (failed !== undefined && standIn !== undefined) {
      if (answer.kind === 'streamed') answer.claim()?.destroy()
      return this.#stale(standIn, failed, undefined, forwardedAs(failed, noCache), answer.status)
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
      const work = await this.#exchange.fetch(key, request, signal, stale)
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
      work = await this.#exchange.fetch(key, request, signal, stale)
      return work
    } finally {
      // `answered`: Adobe said something about this report. Without that (the caller left, a timeout, no token), the waiters are not told "not stored".
      turn.done(work === undefined ? undefined : keptBy(work), work?.kind === 'answered' ? this.#failureToShare(key, work.failed) : undefined, work?.kind === 'answered' || work?.kind === 'revalidated')
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

/** The entry a fetch left in memory: stored, or confirmed by a 304. */
function keptBy (work: Work): CachedResponse | undefined {
  return work.kind === 'revalidated' || work.kind === 'answered' ? work.stored : undefined
}
