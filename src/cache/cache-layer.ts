// The cache in front of the upstream fetch, and the one place that decides
// freshness: fresh -> serve; stale within its revalidate window -> serve at
// once and refresh once in the background; otherwise fetch (identical
// concurrent requests share one), store, and when that fails serve the stale
// copy if one is still kept (RFC 5861 stale-while-revalidate and
// stale-if-error; nginx's proxy_cache_use_stale and background_update). A key
// whose refresh failed is not asked again before Adobe's Retry-After (or a
// few seconds): callers get the stale copy, Adobe gets a rest.
// In a fleet, a shared second level sits behind the in-memory one, and
// identical misses across the fleet make one upstream call (nginx's
// proxy_cache_lock): the layer asks it, without knowing that it is Redis.
import type { IncomingHttpHeaders } from 'node:http'
import type { Tracer } from '@opentelemetry/api'
import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import type { Dispatcher } from 'undici'
import { ProxyError, TOKEN_UNAVAILABLE_CODES, UpstreamFailingInFleet, upstreamFailingInFleet } from '../kernel/errors.js'
import type { UpstreamTarget } from '../upstream/target.js'
import { retryAfter } from '../kernel/retry-after.js'
import { inSpan } from '../telemetry/tracing.js'
import { ByteBudget, readAnswer, type Answer, type BufferedAnswer } from './buffered-fetch.js'
import { cacheKey, callerSaysNoCache, isConditional, isStorable, ttlSeconds } from './cache-policy.js'
import { Coalescer } from './coalescer.js'
import type { CachedResponse, ResponseCache, StaleReason } from './response-cache.js'

export type CacheResult = 'HIT' | 'MISS' | 'BYPASS' | 'STALE'

/** An entry as a fleet shares it: wall-clock instants (instances share no monotonic clock). */
export type SharedEntry = Omit<CachedResponse, never>

/** Adobe failed the lock holder's fetch: why, and how long the fleet leaves this report alone. */
export interface SharedFailure { reason: StaleReason, restMs: number }

export type SharedTurn =
  /**
   * Fetch for the fleet, then `done` with what was stored (undefined: nothing;
   * the others fetch their own) or, when Adobe failed, why (the others do not ask again).
   */
  | { kind: 'lead', done: (stored: SharedEntry | undefined, failure?: SharedFailure) => void }
  /** Another instance stored it while this one waited. */
  | { kind: 'landed', entry: SharedEntry }
  /** Adobe failed the instance that asked for the fleet a moment ago: do not ask again before `restMs`. */
  | { kind: 'failed', failure: SharedFailure }
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

export interface CacheRequest {
  target: UpstreamTarget
  headers: IncomingHttpHeaders
  gzipAccepted: boolean
  /** Fires when the caller goes away: a shared request is cancelled only when every caller has gone. */
  callerGone: () => AbortSignal
}

/** Sends the request upstream (with the token policy); the layer reads, stores and shares the answer. */
export type Fetch = (signal: AbortSignal) => Promise<Dispatcher.ResponseData>

export type CacheOutcome =
  /** Not the cache's business (conditional, a key too long to keep, an answer meant for another caller): stream it yourself. */
  | { kind: 'pass', result: CacheResult }
  /** From memory: a fresh hit, or a stale copy with the Cache-Status that says why. */
  | { kind: 'cached', entry: CachedResponse, result: 'HIT' | 'STALE', age: number, cacheStatus?: string }
  /**
   * Just fetched, maybe shared with other callers. A buffered body is held for
   * this caller: call `answer.release()` once it is sent.
   */
  | { kind: 'fetched', answer: Answer, result: 'MISS' | 'BYPASS' }

/** The start of a traced lookup, on both clocks (see #traceLookup). */
interface LookupStart { tracer: Tracer, wall: number, monotonic: number }

/**
 * `noCopyUntil`: learned from the fleet's notice, so callers with no copy to
 * serve are answered 503 too, until then (at most MAX_TOLD_NO_COPY_MS: they
 * cannot tell when Adobe is back unless someone asks).
 */
interface Backoff { until: number, reason: StaleReason, noCopyUntil?: number }

/** What one shared fetch gives: Adobe's answer, or an entry another instance of the fleet stored. */
type Work = Answer | { kind: 'landed', entry: CachedResponse }

const PASS_BYPASS: CacheOutcome = { kind: 'pass', result: 'BYPASS' }
const MIN_REVALIDATE_SECONDS = 30
/** After a failed refresh, the key rests at least this long (longer when Adobe's Retry-After says so). */
const MIN_BACKOFF_MS = 5_000
/** retryAfter() clamps to an hour already; a failure told by another instance is clamped here too. */
const MAX_BACKOFF_MS = 3_600_000
/** How long an instance told of a failure answers 503 to callers it has no copy for (see Backoff). */
const MAX_TOLD_NO_COPY_MS = 60_000
/** Keys longer than this (a huge Accept header) are not cached: they would crowd the cache for one caller. */
const MAX_KEY_LENGTH = 4_096
/** Reasons for which the request reached Adobe (RFC 9211 fwd); the others never left the proxy. */
const FORWARDED: ReadonlySet<StaleReason> = new Set(['upstream_5xx', 'upstream_429', 'unreachable', 'timeout'])

export class CacheLayer {
  readonly #options: CacheLayerOptions
  readonly #cache: ResponseCache
  readonly #coalescer = new Coalescer<Work>()
  readonly #buffering: ByteBudget
  readonly #backoff = new LRUCache<string, Backoff>({ max: 10_000 })
  /** Background refreshes belong to no caller: only shutdown (or the upstream timeouts) ends them. */
  readonly #closing = new AbortController()

  constructor (options: CacheLayerOptions) {
    this.#options = options
    this.#cache = options.cache
    this.#buffering = new ByteBudget(options.bufferingMaxBytes)
  }

  /** Bytes held now by answers read into memory and not yet sent or stored (metrics). */
  get bufferingBytes (): number { return this.#buffering.used }

  /** Cancels background refreshes (shutdown). */
  close (): void {
    this.#closing.abort()
  }

  async answer (request: CacheRequest, fetch: Fetch): Promise<CacheOutcome> {
    const cache = this.#cache
    // The lookup span covers the look in memory and, in a fleet, in Redis; only read when tracing.
    const lookupStart = this.#lookupStart()
    // A 304 belongs to the caller that asked: neither cached nor shared.
    if (isConditional(request.headers)) { this.#looked('bypass', lookupStart); return PASS_BYPASS }
    const key = cacheKey(request.target, request.headers, request.gzipAccepted)
    if (key.length > MAX_KEY_LENGTH) { this.#looked('bypass', lookupStart); return PASS_BYPASS }
    const noCache = callerSaysNoCache(request.headers)
    let entry = cache.peek(key)
    const now = this.#options.now()
    // In a fleet, ask the shared level when memory has nothing to answer with at once.
    let fleet = this.#options.shared !== undefined && !noCache
    if (fleet && (entry === undefined || this.#revalidateUntil(entry) <= now)) {
      const shared = await this.#options.shared?.get(key)
      if (shared === 'unavailable') fleet = false
      else if (shared !== undefined && (entry === undefined || shared.freshUntil - this.#options.wallNow() > entry.freshUntil - now)) entry = this.#fromFleet(key, shared) ?? entry
    }
    if (entry !== undefined) {
      if (!noCache && cache.isFresh(entry)) {
        this.#looked('hit', lookupStart)
        return { kind: 'cached', entry, result: 'HIT', age: cache.ageSeconds(entry) }
      }
      // Adobe failed this key a moment ago: do not ask again before it said we may.
      const backoff = this.#backoff.get(key)
      if (backoff !== undefined && backoff.until > now) return this.#stale(entry, backoff.reason, lookupStart)
      if (!noCache && this.#revalidateUntil(entry) > now) {
        this.#refreshInBackground(key, request.target, fetch)
        return this.#stale(entry, 'revalidating', lookupStart)
      }
    }
    // The fleet was told a moment ago that Adobe failed this report: with no copy to serve, say so rather than ask again.
    const told = entry === undefined ? this.#backoff.get(key) : undefined
    if (told?.noCopyUntil !== undefined && told.noCopyUntil > now) throw upstreamFailingInFleet(told.reason, told.noCopyUntil - now)
    this.#looked(noCache ? 'bypass' : 'miss', lookupStart)
    const result = noCache ? 'BYPASS' : 'MISS'

    // no-cache asks for an answer fresh from Adobe: one already on its way is that.
    const joined = this.#coalescer.has(key)
    let answer: Work
    try {
      answer = await inSpan(this.#options.tracer, 'cmu_proxy.cache.coalesce', { 'cmu_proxy.coalesce.role': joined ? 'waiter' : 'leader' }, async () =>
        await this.#coalescer.run(key, (signal) => this.#fetchAndStore(key, request.target, fetch, signal, fleet), request.callerGone()))
    } catch (err) {
      const reason = staleReasonForError(err)
      // Told by the fleet, this request never left the proxy: Cache-Status says hit, not fwd.
      if (reason !== undefined && entry !== undefined) return this.#stale(entry, reason, this.#lookupStart(), err instanceof UpstreamFailingInFleet ? undefined : forwardedAs(reason, noCache))
      throw err
    }
    if (answer.kind === 'landed') {
      cache.countHit()
      return { kind: 'cached', entry: answer.entry, result: 'HIT', age: cache.ageSeconds(answer.entry) }
    }
    const reason = failureReason(answer.status)
    if (reason !== undefined && entry !== undefined) {
      if (answer.kind === 'streamed') answer.claim()?.destroy()
      return this.#stale(entry, reason, this.#lookupStart(), forwardedAs(reason, noCache), answer.status)
    }
    // An answer that varies on a header outside the key was for the leader only: a waiter asks for its own.
    if (joined && !answer.shareable) return { kind: 'pass', result }
    if (answer.kind === 'buffered') answer.hold()
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
    // Time spent waiting on another instance that is asking Adobe for this report.
    const turn = await inSpan(this.#options.tracer, 'cmu_proxy.cache.fleet_wait', {}, async (span) => {
      const turn = await shared.turn(key, signal)
      span?.setAttribute('cmu_proxy.fleet.turn', turn.kind)
      return turn
    })
    if (turn.kind === 'landed') {
      const entry = this.#fromFleet(key, turn.entry)
      if (entry !== undefined) return { kind: 'landed', entry }
    }
    if (turn.kind === 'failed') {
      // The fleet asked Adobe for this a moment ago and Adobe failed: one call, not one per instance.
      const { reason, restMs } = turn.failure
      const restFor = Math.min(MAX_BACKOFF_MS, Math.max(MIN_BACKOFF_MS, restMs))
      const now = this.#options.now()
      const noCopyFor = Math.min(restFor, MAX_TOLD_NO_COPY_MS)
      this.#backoff.set(key, { until: now + restFor, reason, noCopyUntil: now + noCopyFor })
      throw upstreamFailingInFleet(reason, noCopyFor)
    }
    let stored: CachedResponse | undefined
    let failed: StaleReason | undefined
    try {
      const fetched = await this.#fetchUpstream(key, target, fetch, signal)
      stored = fetched.stored
      failed = fetched.failed
      return fetched.answer
    } finally {
      if (turn.kind === 'lead') turn.done(stored === undefined ? undefined : this.#fleetForm(stored), this.#failureToShare(key, failed))
    }
  }

  /**
   * What the fleet is told when Adobe itself failed this fetch just now: a 5xx
   * or a 429, with the rest #rest set for it. Not a failure that may be this
   * instance's own (its egress, its DNS, its token back-off, its queue): the
   * others ask for themselves then.
   */
  #failureToShare (key: string, failed: StaleReason | undefined): SharedFailure | undefined {
    if (failed !== 'upstream_5xx' && failed !== 'upstream_429') return undefined
    const backoff = this.#backoff.get(key)
    const restMs = backoff === undefined ? 0 : backoff.until - this.#options.now()
    return restMs <= 0 ? undefined : { reason: failed, restMs }
  }

  /** Adobe's answer, whether it was stored, and, for a 5xx or 429, that it failed (its back-off is set). */
  async #fetchUpstream (key: string, target: UpstreamTarget, fetch: Fetch, signal: AbortSignal): Promise<{ answer: Answer, stored?: CachedResponse | undefined, failed?: StaleReason }> {
    const cache = this.#cache
    let answer: Answer
    try {
      answer = await readAnswer(await fetch(signal), cache.maxEntryBytes, this.#buffering)
    } catch (err) {
      const reason = staleReasonForError(err)
      if (reason !== undefined) this.#rest(key, reason, undefined)
      throw err
    }
    const reason = failureReason(answer.status)
    if (reason !== undefined) {
      this.#rest(key, reason, answer.kind === 'buffered' ? answer.upstreamHeaders : undefined)
      return { answer, failed: reason }
    }
    this.#backoff.delete(key)
    if (answer.kind === 'buffered' && isStorable(answer.status, answer.upstreamHeaders)) return { answer, stored: this.#store(key, target, answer) }
    return { answer }
  }

  #store (key: string, target: UpstreamTarget, answer: BufferedAnswer): CachedResponse | undefined {
    const { ttlMaxSeconds, staleIfErrorSeconds } = this.#options
    const ttl = ttlSeconds(target, this.#options.wallNow(), ttlMaxSeconds)
    const stored = this.#cache.store(key, answer, ttl, Math.max(staleIfErrorSeconds, this.#revalidateSeconds(ttl)))
    // From here the cache's own byte bound accounts for the body.
    if (stored !== undefined) answer.uncharge()
    return stored
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

  /** Remember that Adobe failed `key`: Retry-After or Expires when it sent one (clamped to an hour), else a few seconds. */
  #rest (key: string, reason: StaleReason, headers: Record<string, string | string[] | undefined> | undefined): void {
    const wait = Math.min(MAX_BACKOFF_MS, Math.max(MIN_BACKOFF_MS, (headers === undefined ? undefined : retryAfter(headers, this.#options.wallNow())) ?? 0))
    this.#backoff.set(key, { until: this.#options.now() + wait, reason })
  }

  #refreshInBackground (key: string, target: UpstreamTarget, fetch: Fetch): void {
    if (this.#coalescer.has(key)) return
    // Its own trace: it serves whoever asks next, not the caller that started it.
    inSpan(this.#options.tracer, 'cmu_proxy.cache.refresh', { 'url.path': target.path }, async () =>
      await this.#coalescer.run(key, (signal) => this.#fetchAndStore(key, target, fetch, signal, this.#options.shared !== undefined), this.#closing.signal), true).then((answer) => {
      if (answer.kind === 'landed') return
      // Nobody waits for a body too large to keep; a waiter that joined streams its own copy.
      if (answer.kind === 'streamed') answer.claim()?.destroy()
      if (answer.status !== 200) this.#options.logger.warn({ path: target.path, status: answer.status }, 'background cache refresh: Adobe did not answer 200; the stale copy stays')
    }, (err: unknown) => {
      this.#options.logger.warn({ path: target.path, code: (err as { code?: string }).code }, 'background cache refresh failed; the stale copy stays')
    })
  }

  /**
   * A stale copy (or, for a no-cache request that failed, the fresh one), with
   * its RFC 9211 Cache-Status: `fwd` (and Adobe's status) when this request
   * went to Adobe and failed, `hit` when it was answered without asking.
   */
  #stale (entry: CachedResponse, reason: StaleReason, lookupStart: LookupStart | undefined, forwarded?: 'stale' | 'request', upstreamStatus?: number): CacheOutcome {
    const cache = this.#cache
    cache.countStale(reason)
    this.#traceLookup(lookupStart, 'stale', reason)
    const how = forwarded === undefined ? 'hit' : `fwd=${forwarded}${upstreamStatus === undefined ? '' : `; fwd-status=${upstreamStatus}`}`
    const cacheStatus = `cmu-proxy; ${how}; ttl=${cache.ttlSeconds(entry)}; detail=${reason}`
    return { kind: 'cached', entry, result: cache.isFresh(entry) ? 'HIT' : 'STALE', age: cache.ageSeconds(entry), cacheStatus }
  }

  /** Counts how the cache answered, and records it as a span when tracing. */
  #looked (result: 'hit' | 'miss' | 'bypass', lookupStart: LookupStart | undefined): void {
    const cache = this.#cache
    if (result === 'hit') cache.countHit()
    else if (result === 'miss') cache.countMiss()
    else cache.countBypass()
    this.#traceLookup(lookupStart, result)
  }

  /** When the lookup began; only read when tracing. */
  #lookupStart (): LookupStart | undefined {
    const tracer = this.#options.tracer
    return tracer === undefined ? undefined : { tracer, wall: Date.now(), monotonic: performance.now() }
  }

  /**
   * The lookup as a span from `start` to now, timed as OpenTelemetry times the
   * spans it starts itself: a wall-clock start and a monotonic duration. (A
   * bare performance.now() start is converted with an offset taken at span
   * creation, which can place it up to a millisecond before its parent.)
   */
  #traceLookup (start: LookupStart | undefined, result: 'hit' | 'miss' | 'bypass' | 'stale', reason?: StaleReason): void {
    if (start === undefined) return
    start.tracer.startSpan('cmu_proxy.cache.lookup', { startTime: start.wall, attributes: { 'cmu_proxy.cache.result': result, ...(reason === undefined ? {} : { 'cmu_proxy.cache.stale_reason': reason }) } })
      .end(start.wall + performance.now() - start.monotonic)
  }

  #revalidateSeconds (ttl: number): number {
    return this.#options.staleWhileRevalidateSeconds ?? Math.max(MIN_REVALIDATE_SECONDS, ttl / 10)
  }

  #revalidateUntil (entry: CachedResponse): number {
    return entry.freshUntil + this.#revalidateSeconds((entry.freshUntil - entry.storedAt) / 1000) * 1000
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

const NO_TOKEN_CODES = new Set<string>([...Object.values(TOKEN_UNAVAILABLE_CODES), 'CMU_PROXY_UPSTREAM_REJECTED_TOKEN'])

/** Failures a stale copy may hide: Adobe unreachable, slow, refusing our token, or us shedding load. Not a caller who left. */
function staleReasonForError (err: unknown): StaleReason | undefined {
  if (!(err instanceof ProxyError)) return undefined
  if (err.code === 'CMU_PROXY_UPSTREAM_UNREACHABLE') return 'unreachable'
  if (err.code === 'CMU_PROXY_UPSTREAM_TIMEOUT') return 'timeout'
  if (err.code === 'CMU_PROXY_OVERLOADED') return 'overloaded'
  if (NO_TOKEN_CODES.has(err.code)) return 'no_token'
  if (err instanceof UpstreamFailingInFleet) return err.reason
  return undefined
}
