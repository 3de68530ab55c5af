// The cache's levels behind one interface: memory first, then, in a fleet,
// the level the instances share (shared-cache.ts). Entries cross between
// them here, their instants moved between this process's deadline clock and
// the wall clock the fleet shares; the cache layer sees entries on its own
// clock only.
import { cacheKeyPath } from './cache-policy.js'
import type { CachedResponse, ResponseCache } from './response-cache.js'
import { isFresh } from './freshness.js'
import type { SharedCache, SharedEntry, SharedPurge, UpstreamFailure } from './shared-cache.js'

/**
 * How a miss involves the fleet, decided once, at lookup:
 * 'none': there is no shared level; 'share': fetch alone and share what is
 * stored (the caller asked for no-cache, or the shared level could not be
 * asked); 'turns': identical misses across the fleet take turns.
 */
export type FleetUse = 'none' | 'share' | 'turns'

export interface Lookup { entry: CachedResponse | undefined, fleet: FleetUse }

export type Turn =
  /** Fetch (for the fleet, or alone), then call `done` with what was stored here, or why Adobe failed. */
  | { kind: 'lead' | 'alone', done: (stored: CachedResponse | undefined, failure: UpstreamFailure | undefined, answered: boolean) => void }
  /** Another instance stored it while this one waited; now kept in memory too. */
  | { kind: 'landed', entry: CachedResponse }
  /** Adobe failed this report for the fleet a moment ago. */
  | { kind: 'failed', failure: UpstreamFailure }

const ALONE: Turn = { kind: 'alone', done: () => {} }

/** Paths whose purge instants are remembered one by one (an operator's purges: a few). */
const MAX_PURGED_PATHS = 1024

/** What a purge dropped: entries in this instance's memory, and at the fleet's level (undefined: no fleet). */
export interface PurgeResult {
  memory: number
  shared: SharedPurge | undefined
}

export interface CacheLevelsOptions {
  memory: ResponseCache
  shared?: SharedCache | undefined
  /** The deadline clock of the memory level. */
  now: () => number
  /** The wall clock the fleet shares. */
  wallNow: () => number
  /** What an entry shared by an older instance (without a stale-while-revalidate instant) gets. */
  revalidateSeconds: (lifetimeSeconds: number) => number
}

export class CacheLevels {
  readonly #options: CacheLevelsOptions
  readonly #memory: ResponseCache
  readonly #shared: SharedCache | undefined
  /** Purges so far: a shared entry read before a purge is not kept after it. */
  #purges = 0
  /** The purge count at the last purge of everything, and at the last purge of each path purged since. */
  #allPurgedAt = 0
  readonly #pathPurgedAt = new Map<string, number>()

  constructor (options: CacheLevelsOptions) {
    this.#options = options
    this.#memory = options.memory
    this.#shared = options.shared
    // Another instance purged (or this one: the notice comes back): drop the same here.
    this.#shared?.onPurge((path) => { this.#purgeMemory(path) })
  }

  /**
   * Drops every entry, or every variant of one upstream path: the fleet's
   * copies first, so that no lookup here copies one back into memory after
   * memory was emptied; then this instance's memory. The fleet's other
   * instances drop theirs when told (onPurge).
   */
  async purge (path: string | undefined): Promise<PurgeResult> {
    const shared = await this.#shared?.purge(path)
    return { memory: this.#purgeMemory(path), shared }
  }

  #purgeMemory (path: string | undefined): number {
    const at = ++this.#purges
    // Bounded: past MAX_PURGED_PATHS paths, count it as a purge of everything (a fetch in flight then stores nothing, once).
    if (path === undefined || (!this.#pathPurgedAt.has(path) && this.#pathPurgedAt.size >= MAX_PURGED_PATHS)) {
      this.#allPurgedAt = at
      this.#pathPurgedAt.clear()
    } else {
      this.#pathPurgedAt.set(path, at)
    }
    return this.#memory.purge(path === undefined ? undefined : (key) => cacheKeyPath(key) === path)
  }

  /** A mark to take when an exchange with Adobe starts: purgedSince() tells whether a purge covered its key meanwhile. */
  epoch (): number {
    return this.#purges
  }

  /**
   * Whether a purge covering `key` ran since `epoch`: an answer Adobe sent to
   * a request made before the purge is served to those who asked, but never
   * kept or shared, or the purge would be undone the moment it finished.
   */
  purgedSince (key: string, epoch: number): boolean {
    if (this.#purges === epoch) return false
    return this.#allPurgedAt > epoch || (this.#pathPurgedAt.get(cacheKeyPath(key)) ?? 0) > epoch
  }

  /** The entry held in memory (fresh or stale); no promise, no I/O. */
  peek (key: string): CachedResponse | undefined {
    return this.#memory.peek(key)
  }

  /** How a miss for a caller that asked for no-cache (or not) would involve the fleet, before the shared level is asked. */
  fleetUse (noCache: boolean): FleetUse {
    if (this.#shared === undefined) return 'none'
    return noCache ? 'share' : 'turns'
  }

  /** Asks the shared level; keeps what it holds in memory when it is fresher than `local`. */
  async lookUp (key: string, local: CachedResponse | undefined): Promise<Lookup> {
    const purges = this.#purges
    let shared = this.#shared === undefined ? undefined : await this.#shared.get(key)
    // A purge ran while the fleet was asked: what was read (and held) before it is gone.
    if (purges !== this.#purges) {
      local = this.#memory.peek(key)
      if (shared !== 'unavailable') shared = undefined
    }
    if (shared === 'unavailable') return { entry: local, fleet: 'share' }
    const fleet = this.fleetUse(false)
    if (shared === undefined) return { entry: local, fleet }
    const now = this.#options.now()
    if (local !== undefined && shared.freshUntil - this.#options.wallNow() <= local.freshUntil - now) return { entry: local, fleet }
    return { entry: this.keep(key, this.#localForm(shared)) ?? local, fleet }
  }

  /** Keeps `entry` in memory; the entry as kept, or undefined when it is not (too large, already dead). */
  keep (key: string, entry: CachedResponse): CachedResponse | undefined {
    return this.#memory.put(key, entry)
  }

  /** Whether memory still holds `entry` for `key`: nothing newer replaced it (in a fleet, another instance's answer brought in). */
  holds (key: string, entry: CachedResponse): boolean {
    return this.#memory.holds(key, entry)
  }

  /**
   * Drops `stale` at both levels: Adobe said it may not be kept, or that it is
   * not the current answer. A newer entry memory took in meanwhile stays; the
   * fleet's copy goes in the background (the next fetch shares its own).
   */
  forget (key: string, stale: CachedResponse): void {
    if (this.#memory.holds(key, stale)) this.#memory.delete(key)
    this.#shared?.forget(key)
  }

  /** Shares an entry kept here with the fleet, in the background. */
  share (key: string, entry: CachedResponse): void {
    this.#shared?.put(key, this.#sharedForm(entry))
  }

  /** A turn with the fleet for `key` (alone without a shared level). */
  async turn (key: string, signal: AbortSignal): Promise<Turn> {
    if (this.#shared === undefined) return ALONE
    const asked = this.#options.now()
    const epoch = this.#purges
    const turn = await this.#shared.turn(key, signal)
    switch (turn.kind) {
      case 'landed': {
        // What landed was fetched before a purge that ran while this one waited: fetch anew.
        if (this.purgedSince(key, epoch)) return ALONE
        const landed = this.#localForm(turn.entry)
        // An entry that must be validated before use (no-cache) counts only when it was fetched or confirmed during this turn.
        if (!isFresh(landed, this.#options.now()) && landed.storedAt <= asked) return ALONE
        const entry = this.keep(key, landed)
        return entry === undefined ? ALONE : { kind: 'landed', entry }
      }
      case 'failed':
        return turn
      default:
        return { kind: turn.kind, done: (stored, failure, answered) => { turn.done(stored === undefined ? undefined : this.#sharedForm(stored), failure, answered) } }
    }
  }

  /**
   * A shared entry on this process's deadline clock, with the defaults of the
   * fields an instance of an older version did not share (an entry stored
   * before Age and the stale windows were its own).
   */
  #localForm (entry: SharedEntry): CachedResponse {
    const { storedAt, freshUntil, staleUntil } = entry
    const lifetimeSeconds = (freshUntil - storedAt) / 1000
    const filled: CachedResponse = {
      ...entry,
      bornAt: typeof entry.bornAt === 'number' ? entry.bornAt : storedAt,
      revalidateUntil: typeof entry.revalidateUntil === 'number' ? entry.revalidateUntil : freshUntil + this.#options.revalidateSeconds(lifetimeSeconds) * 1000,
      errorUntil: typeof entry.errorUntil === 'number' ? entry.errorUntil : staleUntil,
      noCache: entry.noCache === true
    }
    return moved(filled, this.#options.now() - this.#options.wallNow())
  }

  #sharedForm (entry: CachedResponse): SharedEntry {
    return moved(entry, this.#options.wallNow() - this.#options.now())
  }
}

/** The entry with every instant moved by `offset` ms (from one clock onto another). */
function moved (entry: CachedResponse, offset: number): CachedResponse {
  return {
    ...entry,
    storedAt: entry.storedAt + offset,
    bornAt: entry.bornAt + offset,
    freshUntil: entry.freshUntil + offset,
    revalidateUntil: entry.revalidateUntil + offset,
    errorUntil: entry.errorUntil + offset,
    staleUntil: entry.staleUntil + offset
  }
}
