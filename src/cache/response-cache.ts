// Complete upstream answers kept in memory, bounded by total bytes and by
// entry size (lru-cache evicts the least recently used). Expiry is checked
// against an injectable clock so tests can move time.
import { LRUCache } from 'lru-cache'

export interface CachedResponse {
  status: number
  /** Caller-facing headers (already filtered by the header policy). */
  headers: Record<string, string | string[]>
  body: Buffer
  storedAt: number
  expiresAt: number
}

export interface ResponseCacheOptions {
  maxBytes: number
  maxEntryBytes: number
  now?: () => number
}

export interface CacheStats { hits: number, misses: number, bypasses: number, evictions: number, bytes: number, entries: number }

/** Headers and key count too, roughly: a cache of tiny bodies must stay bounded as well. */
const OVERHEAD_BYTES = 512

export class ResponseCache {
  readonly #lru: LRUCache<string, CachedResponse>
  readonly #now: () => number
  readonly #maxEntryBytes: number
  #hits = 0
  #misses = 0
  #bypasses = 0
  #evictions = 0

  constructor ({ maxBytes, maxEntryBytes, now = Date.now }: ResponseCacheOptions) {
    this.#now = now
    this.#maxEntryBytes = maxEntryBytes
    this.#lru = new LRUCache<string, CachedResponse>({
      maxSize: Math.max(1, maxBytes),
      maxEntrySize: Math.max(1, maxEntryBytes + OVERHEAD_BYTES),
      sizeCalculation: (entry, key) => entry.body.length + key.length + OVERHEAD_BYTES,
      dispose: (_value, _key, reason) => { if (reason === 'evict') this.#evictions++ }
    })
  }

  /** Largest body worth buffering for the cache. */
  get maxEntryBytes (): number { return this.#maxEntryBytes }

  /** A fresh entry (counted as a hit), or undefined (counted as a miss). */
  lookup (key: string): CachedResponse | undefined {
    const entry = this.#lru.get(key)
    if (entry !== undefined && entry.expiresAt > this.#now()) {
      this.#hits++
      return entry
    }
    if (entry !== undefined) this.#lru.delete(key)
    this.#misses++
    return undefined
  }

  countBypass (): void {
    this.#bypasses++
  }

  store (key: string, entry: Omit<CachedResponse, 'storedAt' | 'expiresAt'>, ttlSeconds: number): void {
    if (ttlSeconds <= 0 || entry.body.length > this.#maxEntryBytes) return
    const storedAt = this.#now()
    this.#lru.set(key, { ...entry, storedAt, expiresAt: storedAt + ttlSeconds * 1000 })
  }

  /** Age header value (RFC 9111 §5.1): whole seconds since the entry was stored. */
  ageSeconds (entry: CachedResponse): number {
    return Math.max(0, Math.floor((this.#now() - entry.storedAt) / 1000))
  }

  stats (): CacheStats {
    return { hits: this.#hits, misses: this.#misses, bypasses: this.#bypasses, evictions: this.#evictions, bytes: this.#lru.calculatedSize, entries: this.#lru.size }
  }
}
