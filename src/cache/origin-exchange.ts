// One exchange with Adobe for a cache key, and what it leaves behind (the
// cache layer, cache-layer.ts, decides when to have one): the request,
// conditional on a stale copy's validators; the answer read into memory;
// then a 200 stored under the freshness rules, a 304 checked against the
// copy it is about (RFC 9111 §4.3.4) before it refreshes it, and a failure
// recorded as a rest for the key.
import { UpstreamUnavailable, upstreamBadResponse, type ProxyError, type UnavailableReason } from '../kernel/errors.js'
import { originAgeSeconds } from '../upstream/header-policy.js'
import type { Origin, OriginRequest } from '../upstream/origin.js'
import { readAnswer, type Answer, type BufferedAnswer, type ByteBudget, type HeaderFilter } from './buffered-fetch.js'
import type { CacheLevels } from './cache-levels.js'
import { isShareable, oversizedHeaders, refusedStorage, staleOnArrival, type UncacheableReason } from './cache-policy.js'
import { correctedInitialAgeSeconds, entryTimes, scheduleSeconds, type EntryTimes, type ExchangeTimes, type FreshnessSettings } from './freshness.js'
import type { CachedResponse, ResponseCache, StaleReason } from './response-cache.js'
import type { Rests } from './rests.js'
import type { UncacheableNotices } from './uncacheable.js'
import { confirms, updatedHeaders, validatorsOf } from './validation.js'

/** What one exchange gives every caller that shares it. */
export type Exchanged =
  /** Adobe answered (`stored`: kept in memory; `failed`: a 5xx or 429, the key now rests; `age`: when it sent an Age). */
  | { kind: 'answered', answer: Answer, stored?: CachedResponse | undefined, failed?: StaleReason | undefined, age?: number | undefined, uncacheable?: UncacheableReason | undefined }
  /**
   * Adobe confirmed the stored copy (304): refreshed (RFC 9111 §4.3.4);
   * `stored` when kept; `refused`: the 304 now keeps it out (served once);
   * `shareable`: may go to coalesced waiters too.
   */
  | { kind: 'revalidated', entry: CachedResponse, stored?: CachedResponse | undefined, refused?: UncacheableReason | undefined, shareable: boolean }
  /** No answer could be had (unreachable, slow, no token, overloaded, a broken answer); the key now rests. */
  | { kind: 'unavailable', reason: UnavailableReason, error: ProxyError }

export interface OriginExchangeOptions extends Omit<FreshnessSettings, 'ignoreOriginFreshness'> {
  origin: Origin
  callerHeaders: HeaderFilter
  ignoreOriginFreshness?: boolean | undefined
  now: () => number
  wallNow: () => number
}

/** What the exchange files its answers in: the cache layer's own parts. */
export interface ExchangeParts {
  cache: ResponseCache
  levels: CacheLevels
  rests: Rests
  buffering: ByteBudget
  uncacheable: UncacheableNotices
}

export class OriginExchange {
  readonly #options: OriginExchangeOptions
  readonly #cache: ResponseCache
  readonly #levels: CacheLevels
  readonly #rests: Rests
  readonly #buffering: ByteBudget
  readonly #uncacheable: UncacheableNotices

  constructor (options: OriginExchangeOptions, parts: ExchangeParts) {
    this.#options = options
    this.#cache = parts.cache
    this.#levels = parts.levels
    this.#rests = parts.rests
    this.#buffering = parts.buffering
    this.#uncacheable = parts.uncacheable
  }

  /**
   * Adobe's answer (conditional on the validators of `stale`, when it has
   * any), whether it was stored, and, for a 5xx or 429, that it failed; a
   * confirmed copy; or why no answer could be had.
   */
  async fetch (key: string, request: OriginRequest, signal: AbortSignal, stale: CachedResponse | undefined): Promise<Exchanged> {
    const { origin, callerHeaders, now, wallNow } = this.#options
    const validators = stale === undefined ? undefined : validatorsOf(stale.headers)
    // An operator's purge while Adobe is asked: the answer is served, never kept (cache-levels.ts purgedSince).
    const epoch = this.#levels.epoch()
    let answer: Answer
    let times: ExchangeTimes
    try {
      const response = await origin.fetch(request, signal, validators)
      times = { requestedAt: response.dispatchedAt, respondedAt: now(), respondedAtWall: wallNow() }
      answer = await readAnswer(response, this.#cache.maxEntryBytes, this.#buffering, callerHeaders)
    } catch (err) {
      // A caller who left, an encoding nobody accepted: not a failure a stale copy may hide.
      if (!(err instanceof UpstreamUnavailable)) throw err
      return this.#unavailable(key, err)
    }
    if (answer.status === 304) {
      if (answer.kind === 'streamed') answer.claim()?.destroy()
      // A 304 to a request that was not conditional is a broken answer (RFC 9110 §15.4.5): there is nothing it confirms.
      if (stale === undefined || validators === undefined || answer.kind === 'streamed') return this.#unavailable(key, upstreamBadResponse(304, 'to a request that was not conditional'))
      this.#rests.clear(key)
      if (confirms(stale.headers, answer.upstreamHeaders)) return this.#confirmed(key, request, stale, answer, times, epoch)
      // §4.3.4: a 304 about another answer must not relabel the stored body: the copy goes, and Adobe is asked once more, unconditionally.
      this.#levels.forget(key, stale)
      return await this.fetch(key, request, signal, undefined)
    }
    const failed = failureReason(answer.status)
    if (failed !== undefined) {
      this.#rests.failed(key, failed, answer.kind === 'buffered' ? answer.upstreamHeaders : undefined, now(), wallNow())
      return { kind: 'answered', answer, failed }
    }
    this.#rests.clear(key)
    if (answer.kind === 'streamed') return { kind: 'answered', answer }
    // Age on a miss only when Adobe sent a valid one: our own is the response delay, which callers need not see (§4.2.3).
    const age = originAgeSeconds(answer.upstreamHeaders.age) === undefined ? undefined : Math.floor(correctedInitialAgeSeconds(answer.upstreamHeaders, times))
    if (answer.status !== 200) return { kind: 'answered', answer, age }
    return { kind: 'answered', answer, age, ...this.#store(key, request, answer, times, epoch) }
  }

  /** No answer could be had for `key` (`error` says why): the key rests. */
  #unavailable (key: string, error: UpstreamUnavailable): Exchanged {
    this.#rests.failed(key, error.reason, undefined, this.#options.now(), this.#options.wallNow())
    return { kind: 'unavailable', reason: error.reason, error }
  }

  /** A 200 kept under the freshness rules, or why Adobe's directives keep it out (or make every use ask again). */
  #store (key: string, request: OriginRequest, answer: BufferedAnswer, times: ExchangeTimes, epoch: number): { stored?: CachedResponse | undefined, uncacheable?: UncacheableReason | undefined } {
    const entry = this.#entry(request, answer.upstreamHeaders, times)
    const validated = validatorsOf(answer.headers) !== undefined
    const refused = refusedStorage(answer.upstreamHeaders) ?? oversizedHeaders(answer.headers) ?? (entry === undefined ? undefined : staleOnArrival(entry, validated, times.respondedAt))
    if (refused !== undefined) this.#uncacheable.seen(refused, request.target.path)
    // A no-cache answer is kept only to be revalidated: without a validator that would be a full fetch anyway.
    if (entry === undefined || (refused !== undefined && !(refused === 'no-cache' && validated))) return { uncacheable: refused }
    if (this.#levels.purgedSince(key, epoch)) return { uncacheable: refused }
    const stored = this.#levels.keep(key, { status: answer.status, headers: answer.headers, body: answer.body, ...entry })
    // From here the cache's own byte bound accounts for the body.
    if (stored !== undefined) answer.uncharge()
    return { stored, uncacheable: refused }
  }

  /**
   * Adobe confirmed `stale` (304): its fields and freshness refreshed from the
   * 304's (RFC 9111 §4.3.4), kept and shared; unless the fields as they stand
   * now keep it out (RFC 9111 §3: no-store, private, Set-Cookie, Vary in the
   * 304), when it is served this once and dropped at both levels, or memory
   * took in a newer answer meanwhile, which this late 304 must not overwrite.
   */
  #confirmed (key: string, request: OriginRequest, stale: CachedResponse, notModified: BufferedAnswer, times: ExchangeTimes, epoch: number): Exchanged {
    const path = request.target.path
    const headers = updatedHeaders(stale.headers, notModified.headers)
    // Freshness from the fields as they stand now, with the 304's own Date and Age (not the stored answer's).
    const entry = this.#entry(request, { ...headers, date: notModified.upstreamHeaders.date, age: notModified.upstreamHeaders.age }, times)
    const confirmed: CachedResponse = { ...stale, headers, ...(entry ?? {}) }
    // What only the 304 carries (Set-Cookie, a Vary the filter passes anyway) counts too.
    const fields = { ...headers, ...notModified.upstreamHeaders }
    const refused = refusedStorage(fields) ?? oversizedHeaders(headers)
    const shareable = isShareable(fields)
    if (refused !== undefined) {
      this.#uncacheable.seen(refused, path)
      this.#levels.forget(key, stale)
      return { kind: 'revalidated', entry: confirmed, refused, shareable }
    }
    if (confirmed.noCache) this.#uncacheable.seen('no-cache', path)
    // Purged while Adobe was asked: the copy it confirmed is gone on purpose, and stays gone.
    if (this.#levels.purgedSince(key, epoch)) return { kind: 'revalidated', entry: confirmed, shareable }
    if (!this.#levels.holds(key, stale) && this.#levels.peek(key) !== undefined) return { kind: 'revalidated', entry: confirmed, shareable }
    const stored = this.#levels.keep(key, confirmed)
    return { kind: 'revalidated', entry: stored ?? confirmed, stored, shareable }
  }

  /** The freshness of an answer that arrived at `times`; undefined when CACHE_TTL_MAX_SECONDS=0 keeps nothing. */
  #entry (request: OriginRequest, headers: Record<string, string | string[] | undefined>, times: ExchangeTimes): EntryTimes | undefined {
    const { ttlMaxSeconds, staleIfErrorSeconds, staleWhileRevalidateSeconds, ignoreOriginFreshness = false } = this.#options
    if (ttlMaxSeconds === 0) return undefined
    const heuristic = scheduleSeconds(request.target, times.respondedAtWall, ttlMaxSeconds)
    return entryTimes(headers, heuristic, times, { ttlMaxSeconds, staleIfErrorSeconds, staleWhileRevalidateSeconds, ignoreOriginFreshness })
  }
}

/** Adobe's answers a stale copy may hide: 5xx and 429. Other 4xx are the caller's business and pass through. */
function failureReason (status: number): StaleReason | undefined {
  return status >= 500 ? 'upstream_5xx' : status === 429 ? 'upstream_429' : undefined
}
