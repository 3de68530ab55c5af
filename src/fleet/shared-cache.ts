// The response cache's second level in fleet mode: the exact bytes and
// headers of each stored representation, sealed, under a digest of its cache
// key, for as long as it may still be served (fresh or stale). Identical
// misses across the fleet take turns (nginx's proxy_cache_lock): one
// instance fetches while the others wait for its notice, at most
// `maxWaitMs` (twice the upstream headers timeout), then go upstream
// themselves. When Adobe fails the one that asked, the notice says so and the
// others leave the report alone for the same rest (stale copy, or a 503). Every failure here is a miss, never an error a caller sees;
// an entry that cannot be used (another key list, oversized) is a miss that
// the next fetch overwrites, not store trouble.
import type { Logger } from 'pino'
import { cacheKeyPath } from '../cache/cache-policy.js'
import type { SharedCache, SharedEntry, SharedPurge, SharedTurn, UpstreamFailure } from '../cache/shared-cache.js'
import { digest, type StateNamespace } from '../store/namespace.js'
import type { StateStore } from '../store/state-store.js'
import type { FleetChannel, RecentTrouble } from './fleet-channel.js'
import { RebuildableValues, UNUSABLE } from './unusable-values.js'

export interface FleetCacheOptions {
  store: StateStore
  namespace: StateNamespace
  channel: FleetChannel
  lockTtlMs: number
  maxWaitMs: number
  /** CACHE_MAX_ENTRY_BYTES: no larger body is shared, so no larger entry is read. */
  maxEntryBytes: number
  trouble: RecentTrouble
  logger: Logger
  wallNow?: () => number
}

/** An entry's header: its full cache key and every field of the entry but the body, as the cache layer gave them. */
type Header = Omit<SharedEntry, 'body'> & { key: string }

/** Room for an entry's header: its cache key (at most 4 KB, cache/cache-layer.ts) and the caller-facing headers. */
const MAX_HEADER_BYTES = 64 * 1024
/** The topic of purge notices: every instance drops the same from memory. */
const PURGE = 'cache-purge'

export class FleetCache implements SharedCache {
  readonly #options: FleetCacheOptions
  readonly #store: StateStore
  readonly #log: Logger
  readonly #wallNow: () => number
  readonly #values: RebuildableValues

  constructor (options: FleetCacheOptions) {
    this.#options = options
    this.#store = options.store
    this.#log = options.logger
    this.#wallNow = options.wallNow ?? Date.now
    this.#values = new RebuildableValues(options.store, options.logger, 'a shared cached report')
  }

  async get (key: string): Promise<SharedEntry | undefined | 'unavailable'> {
    if (this.#options.trouble.recent) return 'unavailable'
    try {
      const raw = await this.#values.read(this.#key(key), 4 + MAX_HEADER_BYTES + this.#options.maxEntryBytes)
      return raw === undefined || raw === UNUSABLE ? undefined : decode(raw, key, this.#wallNow())
    } catch (err) {
      this.#options.trouble.seen()
      this.#log.debug({ reason: (err as Error).message }, 'shared cache unavailable: a miss')
      return 'unavailable'
    }
  }

  put (key: string, entry: SharedEntry): void {
    void this.#put(key, entry)
  }

  async turn (key: string, signal: AbortSignal): Promise<SharedTurn> {
    const { namespace, channel, lockTtlMs, maxWaitMs } = this.#options
    const id = digest(key)
    const topic = `cache:${id}`
    const deadline = performance.now() + maxWaitMs
    try {
      for (;;) {
        const left = deadline - performance.now()
        if (left <= 0 || signal.aborted) return { kind: 'alone' }
        const turn = await channel.turn(topic, this.#store.lock(namespace.key('lock', 'cache', id)), lockTtlMs, Math.min(lockTtlMs, left), signal)
        if (turn.kind === 'lead') {
          // Someone may have stored it between our look and our lock.
          const again = await this.get(key)
          if (typeof again === 'object' && again.freshUntil > this.#wallNow()) {
            await turn.finish()
            return { kind: 'landed', entry: again }
          }
          return {
            kind: 'lead',
            done: (stored, failure) => {
              void (async () => {
                // "Stored" only when the fleet's copy was written, with until when it is fresh.
                const shared = stored !== undefined && await this.#put(key, stored)
                await turn.finish({ stored: shared, ...(shared ? { freshUntil: stored.freshUntil } : {}), ...(stored === undefined && failure !== undefined ? { failure } : {}) })
              })()
            }
          }
        }
        // Told Adobe failed: leave it alone for a while, as the lock holder does. Told it is stored, or tired
        // of waiting: look. Told it could not be stored (too large, not cacheable, the write failed): fetch
        // your own, all at once.
        const failure = turn.kind === 'notice' ? parseFailure(turn.notice.failure) : undefined
        if (failure !== undefined) return { kind: 'failed', failure }
        if (turn.kind === 'notice' && turn.notice.stored !== true) return { kind: 'alone' }
        // Stored, but already past its freshness: a late notice from an earlier round (a holder releases and
        // publishes after its caller has the answer). Not this round's: take a turn again.
        if (turn.kind === 'notice' && typeof turn.notice.freshUntil === 'number' && turn.notice.freshUntil <= this.#wallNow()) continue
        const entry = await this.get(key)
        if (entry === 'unavailable') return { kind: 'alone' }
        if (entry !== undefined && entry.freshUntil > this.#wallNow()) return { kind: 'landed', entry }
        if (turn.kind === 'notice') return { kind: 'alone' }
      }
    } catch (err) {
      this.#log.debug({ reason: (err as Error).message }, 'shared cache lock unavailable: fetching alone')
      return { kind: 'alone' }
    }
  }

  /**
   * Deletes the shared copies (every one, or every variant of one path: the
   * path's digest is part of each entry's name), then tells every instance,
   * this one included, to drop the same from memory.
   */
  async purge (path: string | undefined): Promise<SharedPurge> {
    const { namespace, channel } = this.#options
    let deleted: number
    try {
      deleted = await this.#store.deleteByPrefix(`${path === undefined ? namespace.key('cache') : namespace.key('cache', digest(path))}:`)
    } catch (err) {
      this.#log.warn({ reason: (err as Error).message }, 'could not purge the fleet\'s shared cache')
      return 'unavailable'
    }
    const told = await channel.publish(PURGE, path === undefined ? {} : { path }).then(() => true, (err: unknown) => {
      this.#log.warn({ reason: (err as Error).message }, 'purged the fleet\'s shared cache, but could not tell the other instances')
      return false
    })
    return { deleted, told }
  }

  onPurge (listener: (path: string | undefined) => void): void {
    this.#options.channel.listen(PURGE, (notice) => {
      // Notices are sealed; still, a path that is not a string purges nothing rather than everything.
      if (notice.path === undefined) listener(undefined)
      else if (typeof notice.path === 'string') listener(notice.path)
    })
  }

  /** True when the fleet's copy was written. */
  async #put (key: string, entry: SharedEntry): Promise<boolean> {
    const ttlMs = entry.staleUntil - this.#wallNow()
    if (ttlMs <= 0) return false
    try {
      await this.#store.set(this.#key(key), encode(key, entry), ttlMs)
      return true
    } catch (err) {
      this.#log.warn({ reason: (err as Error).message }, 'could not share a cached report with the fleet')
      return false
    }
  }

  /** Under the digest of its path, then of its whole key: a purge finds every variant of a path by name. */
  #key (key: string): string {
    return this.#options.namespace.key('cache', digest(cacheKeyPath(key)), digest(key))
  }
}

/** Only Adobe's own answers are shared as failures (cache/cache-layer.ts, #failureToShare). */
const FAILURE_REASONS: ReadonlySet<string> = new Set<UpstreamFailure['reason']>(['upstream_5xx', 'upstream_429'])

/** A failure told by the lock holder, if well-formed (notices are sealed, but a bad one must not throw here). */
function parseFailure (value: unknown): UpstreamFailure | undefined {
  const failure = value as { reason?: unknown, restMs?: unknown } | undefined
  if (typeof failure?.reason !== 'string' || !FAILURE_REASONS.has(failure.reason) || typeof failure.restMs !== 'number' || !Number.isFinite(failure.restMs)) return undefined
  return { reason: failure.reason as UpstreamFailure['reason'], restMs: failure.restMs }
}

/** A 4-byte header length, the header as JSON (with the full cache key), then the body's exact bytes. */
function encode (key: string, entry: SharedEntry): Buffer {
  const { body: _body, ...fields } = entry
  const header: Header = { ...fields, key }
  const json = Buffer.from(JSON.stringify(header))
  const length = Buffer.alloc(4)
  length.writeUInt32BE(json.length)
  return Buffer.concat([length, json, entry.body])
}

/** The entry, unless it is for another key (a digest collision must not hand out another report) or dead. */
function decode (raw: Buffer, key: string, now: number): SharedEntry | undefined {
  try {
    const length = raw.readUInt32BE(0)
    const { key: headerKey, ...fields } = JSON.parse(raw.subarray(4, 4 + length).toString('utf8')) as Header
    if (headerKey !== key || !(fields.staleUntil > now)) return undefined
    return { ...fields, body: raw.subarray(4 + length) }
  } catch {
    return undefined
  }
}
