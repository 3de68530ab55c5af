// Complete upstream answers kept in memory, bounded by total bytes and by
// entry size. An entry is fresh until its lifetime ends, then stale (still
// kept, to revalidate and for stale-while-revalidate and stale-if-error)
// until its stale window ends, then dead (freshness.ts says which is which). When room is needed, stale and dead entries go first, least
// recently used first; then lru-cache evicts by recency. Time comes from an
// injectable clock so tests can move it.
import { LRUCache } from 'lru-cache'
import { monotonicNow } from '../kernel/clock.js'
import { MAX_ENTRY_HEADER_BYTES, headerBytes, type UncacheableReason } from './cache-policy.js'
import { isFresh, isKept, type EntryTimes } from './freshness.js'

export interface CachedResponse extends EntryTimes {
  status: number
  /** Caller-facing headers (already filtered by the header policy). */
  headers: Record<string, string | string[]>
  body: Buffer
}

export interface ResponseCacheOptions {
  maxBytes: number
  maxEntryBytes: number
  now?: () => number
}

/** Why a stale copy was served (label values of cmu_proxy_cache_stale_total). */
export type StaleReason = 'revalidating' | 'upstream_5xx' | 'upstream_429' | 'unreachable' | 'timeout' | 'no_token' | 'overloaded'

export interface CacheStats {
  hits: number
  misses: number
  bypasses: number
  evictions: number
  bytes: number
  entries: number
  stale: Record<StaleReason, number>
  /** Adobe's answers kept out of the cache, or revalidated on every use, by reason. */
  uncacheable: Partial<Record<UncacheableReason, number>>
}

/** The entry's own fields count too, roughly (the key and headers are counted exactly): a cache of tiny bodies must stay bounded as well. */
const OVERHEAD_BYTES = 512
/** Room for the key in an entry's size (the cache layer keeps longer keys out). */
const MAX_KEY_BYTES = 4_096
/** How many least recently used entries a store looks through for stale ones before lru-cache evicts by recency. */
const STALE_SCAN = 64

export class ResponseCache {
  readonly #lru: LRUCache<string, CachedResponse>
  readonly #now: () => number
  readonly #maxBytes: number
  readonly #maxEntryBytes: number
  #hits = 0
  #misses = 0
  #bypasses = 0
  #evictions = 0
  readonly #stale: Record<StaleReason, number> = { revalidating: 0, upstream_5xx: 0, upstream_429: 0, unreachable: 0, timeout: 0, no_token: 0, overloaded: 0 }
  readonly #uncacheable: Partial<Record<UncacheableReason, number>> = {}

  constructor ({ maxBytes, maxEntryBytes, now = monotonicNow }: ResponseCacheOptions) {
    this.#now = now
    this.#maxBytes = Math.max(1, maxBytes)
    this.#maxEntryBytes = maxEntryBytes
    this.#lru = new LRUCache<string, CachedResponse>({
      maxSize: this.#maxBytes,
      maxEntrySize: Math.max(1, maxEntryBytes + MAX_KEY_BYTES + MAX_ENTRY_HEADER_BYTES + OVERHEAD_BYTES),
      sizeCalculation: (entry, key) => entrySize(key, entry),
      dispose: (_value, _key, reason) => { if (reason === 'evict') this.#evictions++ }
    })
  }

  /** Largest body worth buffering for the cache. */
  get maxEntryBytes (): number { return this.#maxEntryBytes }

  /** The entry for `key` while it may still be served (fresh or stale); dead entries are dropped. Counts nothing. */
  peek (key: string): CachedResponse | undefined {
    const entry = this.#lru.get(key)
    if (entry === undefined) return undefined
    if (isKept(entry, this.#now())) return entry
    this.#lru.delete(key)
    return undefined
  }

  /** Keep a complete entry (its instants on this cache's clock); the entry as kept, or undefined when it is not (too large, already dead). */
  put (key: string, entry: CachedResponse): CachedResponse | undefined {
    if (entry.body.length > this.#maxEntryBytes || key.length > MAX_KEY_BYTES || headerBytes(entry.headers) > MAX_ENTRY_HEADER_BYTES || !isKept(entry, this.#now())) return undefined
    const size = entrySize(key, entry)
    this.#makeRoom(size)
    this.#lru.set(key, entry, { size })
    return this.#lru.has(key) ? entry : undefined
  }

  /** Whether `entry` is what is kept for `key` now (nothing newer replaced it, nothing evicted it). */
  holds (key: string, entry: CachedResponse): boolean {
    return this.#lru.peek(key) === entry
  }

  /** Drops `key`. Counts nothing. */
  delete (key: string): void {
    this.#lru.delete(key)
  }

  /** Drops every entry, or those whose key `matches` (an operator's purge: not counted as evictions); how many. */
  purge (matches?: (key: string) => boolean): number {
    if (matches === undefined) {
      const entries = this.#lru.size
      this.#lru.clear()
      return entries
    }
    const keys = [...this.#lru.keys()].filter(matches)
    for (const key of keys) this.#lru.delete(key)
    return keys.length
  }

  countHit (): void { this.#hits++ }
  countMiss (): void { this.#misses++ }
  countBypass (): void { this.#bypasses++ }
  countStale (reason: StaleReason): void { this.#stale[reason]++ }
  countUncacheable (reason: UncacheableReason): void { this.#uncacheable[reason] = (this.#uncacheable[reason] ?? 0) + 1 }

  stats (): CacheStats {
    return { hits: this.#hits, misses: this.#misses, bypasses: this.#bypasses, evictions: this.#evictions, bytes: this.#lru.calculatedSize, entries: this.#lru.size, stale: { ...this.#stale }, uncacheable: { ...this.#uncacheable } }
  }

  /**
   * Before lru-cache evicts by recency alone, drop entries that are no longer
   * fresh, least recently used first. Only the oldest few are looked at: a
   * full cache of fresh entries must not cost a scan of all of them per store.
   */
  #makeRoom (needed: number): void {
    if (this.#lru.calculatedSize + needed <= this.#maxBytes) return
    const now = this.#now()
    const stale: string[] = []
    let scanned = 0
    for (const key of this.#lru.rkeys()) {
      if (++scanned > STALE_SCAN) break
      const entry = this.#lru.peek(key)
      if (entry !== undefined && !isFresh(entry, now)) stale.push(key)
    }
    for (const key of stale) {
      this.#lru.delete(key)
      this.#evictions++
      if (this.#lru.calculatedSize + needed <= this.#maxBytes) return
    }
  }
}

function entrySize (key: string, entry: CachedResponse): number {
  return entry.body.length + headerBytes(entry.headers) + key.length + OVERHEAD_BYTES
}
