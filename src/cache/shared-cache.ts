// What the cache needs of a second level shared by a fleet of instances
// (fleet/shared-cache.ts implements it over the state store). The cache layer
// knows this interface only: not Redis, not locks, not notices.
import type { CachedResponse, StaleReason } from './response-cache.js'

/**
 * An entry as a fleet shares it: the same fields as in memory, but every
 * instant is wall-clock time (instances share no monotonic clock). The level
 * stores and returns it as it is; cache-levels.ts converts the instants.
 */
export type SharedEntry = CachedResponse

/** Adobe failed the fetch of the instance that asked for the fleet: why, and how long the fleet leaves this report alone. */
export interface UpstreamFailure { reason: Extract<StaleReason, 'upstream_5xx' | 'upstream_429'>, restMs: number }

export type SharedTurn =
  /**
   * Fetch, then `done` with what was stored (undefined: nothing; the others
   * fetch their own) or, when Adobe failed, why (the others leave the report
   * alone for `restMs`). 'lead': for the fleet, which waits on it; 'alone':
   * without it (the fleet could not be asked, or no word came in time), yet
   * what it got is still shared. `answered` false: Adobe gave no answer to
   * judge (the waiters take a turn again rather than all ask at once).
   */
  | { kind: 'lead' | 'alone', done: (stored: SharedEntry | undefined, failure?: UpstreamFailure, answered?: boolean) => void }
  /** Another instance stored it while this one waited. */
  | { kind: 'landed', entry: SharedEntry }
  /** Adobe failed this report for the fleet a moment ago: do not ask again before `restMs`. */
  | { kind: 'failed', failure: UpstreamFailure }

/**
 * What an operator's purge did at the fleet's level: how many shared entries
 * it deleted and whether the other instances were told to drop theirs from
 * memory; 'unavailable' when the store could not be asked (nothing deleted there).
 */
export type SharedPurge = { deleted: number, told: boolean } | 'unavailable'

/** The fleet's second cache level. Never rejects: trouble is a miss. */
export interface SharedCache {
  /** 'unavailable': the store could not be asked; this request does not ask it again. */
  get: (key: string) => Promise<SharedEntry | undefined | 'unavailable'>
  /** Share an entry fetched outside a turn (a no-cache refresh, or the fleet unavailable at lookup); in the background. */
  put: (key: string, entry: SharedEntry) => void
  /**
   * Identical misses across the fleet take turns: one instance asks Adobe, the
   * others wait for its word; a report Adobe failed a moment ago rests
   * fleet-wide ('failed'), whoever asked.
   */
  turn: (key: string, signal: AbortSignal) => Promise<SharedTurn>
  /** Drop the fleet's copy (a 304 now forbids keeping it, or described another answer); in the background. */
  forget: (key: string) => void
  /** Deletes every shared entry, or every variant of one upstream path (cache-policy.ts cacheKeyPath), then tells the fleet. */
  purge: (path: string | undefined) => Promise<SharedPurge>
  /** `listener` runs when any instance of the fleet purged (this one included): drop the same from memory. */
  onPurge: (listener: (path: string | undefined) => void) => void
}
