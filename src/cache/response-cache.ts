// Complete upstream answers kept in memory, bounded by total bytes and by
// entry size. An entry is fresh until its TTL, then stale (still kept, for
// stale-while-revalidate and stale-if-error) until its stale window ends,
// then dead. When room is needed, stale and dead entries go first, least
// recently used first; then lru-cache evicts by recency. Time comes from an
// injectable clock so tests can move it.
import { LRUCache } from 'lru-cache'
import { monotonicNow } from '../kernel/clock.js'

export interface CachedResponse {
  status: number
  /** Caller-facing headers (already filtered by the header policy). */
  headers: Record<string, string | string[]>
  body: Buffer
  storedAt: number
  /** Fresh before this instant, stale after it. */
  freshUntil: number
  /** Dead (never served) from this instant. */
  staleUntil: number
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
}

/** Headers and key count too, roughly: a cache of tiny bodies must stay bounded as well. */
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

  constructor ({ maxBytes, maxEntryBytes, now = monotonicNow }: ResponseCacheOptions) {
    this.#now = now
    this.#maxBytes = Math.max(1, maxBytes)
    this.#maxEntryBytes = maxEntryBytes
    this.#lru = new LRUCache<string, CachedResponse>({
      maxSize: this.#maxBytes,
      maxEntrySize: Math.max(1, maxEntryBytes + MAX_KEY_BYTES + OVERHEAD_BYTES),
      sizeCalculation: (entry, key) => entrySize(key, entry.body),
      dispose: (_value, _key, reason) => { if (reason === 'evict') this.#evictions++ }
    })
  }

  /** Largest body worth buffering for the cache. */
  get maxEntryBytes (): number { return this.#maxEntryBytes }

  /** The entry for `key` while it may still be served (fresh or stale); dead entries are dropped. Counts nothing. */
  peek (key: string): CachedResponse | undefined {
    const entry = this.#lru.get(key)
    if (entry === undefined) return undefined
    if (entry.staleUntil > this.#now()) return entry
    this.#lru.delete(key)
    return undefined
  }

  isFresh (entry: CachedResponse): boolean {
    return entry.freshUntil > this.#now()
  }

  /** Keeps `entry` for `ttlSeconds`, then `staleSeconds` more as a stale copy; the entry as stored, or undefined when it is not kept (no TTL, too large). */
  store (key: string, entry: Pick<CachedResponse, 'status' | 'headers' | 'body'>, ttlSeconds: number, staleSeconds: number): CachedResponse | undefined {
    if (ttlSeconds <= 0) return undefined
    const storedAt = this.#now()
    const freshUntil = storedAt + ttlSeconds * 1000
    return this.put(key, { status: entry.status, headers: entry.headers, body: entry.body, storedAt, freshUntil, staleUntil: freshUntil + staleSeconds * 1000 })
  }

  /** Keep a complete entry as it is (one another instance of the fleet stored). */
  put (key: string, entry: CachedResponse): CachedResponse | undefined {
    if (entry.body.length > this.#maxEntryBytes || key.length > MAX_KEY_BYTES || entry.staleUntil <= this.#now()) return undefined
    this.#makeRoom(entrySize(key, entry.body))
    this.#lru.set(key, entry)
    return this.#lru.has(key) ? entry : undefined
  }

  /** Age header value (RFC 9111 §5.1): whole seconds since the entry was stored. */
  ageSeconds (entry: CachedResponse): number {
    return Math.max(0, Math.floor((this.#now() - entry.storedAt) / 1000))
  }

  /** Whole seconds of freshness left; negative once stale (RFC 9211 `ttl`). */
  ttlSeconds (entry: CachedResponse): number {
    return Math.trunc((entry.freshUntil - this.#now()) / 1000)
  }

  countHit (): void { this.#hits++ }
  countMiss (): void { this.#misses++ }
  countBypass (): void { this.#bypasses++ }
  countStale (reason: StaleReason): void { this.#stale[reason]++ }

  stats (): CacheStats {
    return { hits: this.#hits, misses: this.#misses, bypasses: this.#bypasses, evictions: this.#evictions, bytes: this.#lru.calculatedSize, entries: this.#lru.size, stale: { ...this.#stale } }
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
      if (entry !== undefined && entry.freshUntil <= now) stale.push(key)
    }
    for (const key of stale) {
      this.#lru.delete(key)
      this.#evictions++
      if (this.#lru.calculatedSize + needed <= this.#maxBytes) return
    }
  }
}

function entrySize (key: string, body: Buffer): number {
  return body.length + key.length + OVERHEAD_BYTES
}
