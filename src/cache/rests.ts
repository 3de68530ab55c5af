// Keys whose fetch failed a moment ago, and until when they rest: callers
// get a stale copy (or, when the fleet said so and there is none, a 503)
// rather than another call to Adobe. A key rests for Adobe's Retry-After (or
// Expires) when it sent one, else a few seconds. In a fleet the rest is also
// the fleet's (a marker in Redis, fleet/shared-cache.ts): a member told of it
// rests for what is left of it.
import { LRUCache } from 'lru-cache'
import { retryAfter } from '../kernel/retry-after.js'
import type { StaleReason } from './response-cache.js'
import type { UpstreamFailure } from './shared-cache.js'

export interface Rest {
  /** Not asked again before this instant (deadline clock). */
  until: number
  reason: StaleReason
  /** This instance's own call failed (not a rest the fleet told of). */
  local?: true
}

/** After a failure, the key rests at least this long (longer when Adobe's Retry-After says so). */
const MIN_REST_MS = 5_000
/** retryAfter() clamps to an hour already; a rest told by another instance is clamped here too. */
const MAX_REST_MS = 3_600_000
/**
 * How long an instance told of a failure by the fleet answers 503 to callers
 * it has no copy for: at most a minute, since nobody can tell when Adobe is
 * back unless someone asks.
 */
const MAX_TOLD_NO_COPY_MS = 60_000
const MAX_KEYS = 10_000

export class Rests {
  readonly #rests = new LRUCache<string, Rest>({ max: MAX_KEYS })
  /** Keys the fleet said Adobe failed, for callers with no copy to serve. */
  readonly #refusals = new LRUCache<string, Rest>({ max: MAX_KEYS })

  /** The rest `key` is in at `now`, if any. */
  resting (key: string, now: number): Rest | undefined {
    const rest = this.#rests.get(key)
    return rest !== undefined && rest.until > now ? rest : undefined
  }

  /** When the fleet said Adobe failed `key` and there is no copy: answer 503 rather than ask. */
  refusing (key: string, now: number): Rest | undefined {
    const refusal = this.#refusals.get(key)
    return refusal !== undefined && refusal.until > now ? refusal : undefined
  }

  /** The fetch of `key` failed here; `headers`: Adobe's answer, when it sent one (its Retry-After or Expires is honoured). */
  failed (key: string, reason: StaleReason, headers: Record<string, string | string[] | undefined> | undefined, now: number, wallNow: number): void {
    const wait = clamp((headers === undefined ? undefined : retryAfter(headers, wallNow)) ?? 0)
    this.#rests.set(key, { until: now + wait, reason, local: true })
    this.#refusals.delete(key)
  }

  /**
   * The fleet said Adobe failed `key` (a notice, or the report's rest marker):
   * rest for what is left of the fleet's rest, no longer, so this instance
   * does not outlast it; the refusal for callers with no copy.
   */
  told (key: string, failure: UpstreamFailure, now: number): Rest {
    const restFor = Math.min(MAX_REST_MS, Math.max(0, failure.restMs))
    this.#rests.set(key, { until: now + restFor, reason: failure.reason })
    const refusal = { until: now + Math.min(restFor, MAX_TOLD_NO_COPY_MS), reason: failure.reason }
    this.#refusals.set(key, refusal)
    return refusal
  }

  /** Adobe answered `key`: it rests no more. */
  clear (key: string): void {
    this.#rests.delete(key)
    this.#refusals.delete(key)
  }

  /** Milliseconds of rest left for `key` (0 when none). */
  remainingMs (key: string, now: number): number {
    const rest = this.#rests.get(key)
    return rest === undefined ? 0 : Math.max(0, rest.until - now)
  }
}

function clamp (ms: number): number {
  return Math.min(MAX_REST_MS, Math.max(MIN_REST_MS, ms))
}
