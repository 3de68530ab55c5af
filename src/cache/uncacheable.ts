// Visibility when Adobe's directives keep reports out of the cache: each
// answer counts under its reason (cmu_proxy_cache_uncacheable_total), and the
// first of each reason logs one line that says what the operator can do, so a
// deployment that caches nothing learns why in its first minute.
import type { Logger } from 'pino'
import { ALWAYS_REFUSED, type UncacheableReason } from './cache-policy.js'
import type { ResponseCache } from './response-cache.js'

const WHAT_IT_MEANS: Record<UncacheableReason, string> = {
  'no-store': 'Cache-Control: no-store: such reports are never cached',
  private: 'Cache-Control: private: such reports are never cached',
  'set-cookie': 'a per-caller field (Set-Cookie or Authorization): such reports are never cached',
  vary: 'Vary on a field the cache does not key on: such reports are never cached',
  'large-headers': 'more than 16 KiB of header fields: such reports are never cached',
  'no-cache': 'Cache-Control: no-cache: every use of a cached report asks Adobe first (a 304 keeps the copy)',
  'stale-on-arrival': 'freshness already spent on arrival (max-age=0, an Expires in the past, or an Age past the lifetime): such reports are not cached'
}

export class UncacheableNotices {
  readonly #told = new Set<UncacheableReason>()
  readonly #cache: ResponseCache
  readonly #logger: Logger

  constructor (cache: ResponseCache, logger: Logger) {
    this.#cache = cache
    this.#logger = logger
  }

  seen (reason: UncacheableReason, path: string): void {
    this.#cache.countUncacheable(reason)
    if (this.#told.has(reason)) return
    this.#told.add(reason)
    const remedy = ALWAYS_REFUSED.has(reason)
      ? 'CACHE_IGNORE_ORIGIN_FRESHNESS does not override this'
      : 'CACHE_IGNORE_ORIGIN_FRESHNESS=true applies the report schedule instead'
    this.#logger.warn({ reason, path }, `Adobe answered with ${WHAT_IT_MEANS[reason]}; ${remedy} (counted in cmu_proxy_cache_uncacheable_total; logged once per reason)`)
  }
}
