// The response cache's second level in fleet mode: the exact bytes and
// headers of each stored representation, sealed, under a digest of its cache
// key, for as long as it may still be served (fresh or stale). Identical
// misses across the fleet take turns (turns.ts; nginx's proxy_cache_lock):
// one member fetches while the others wait for its notice, at most
// `maxWaitMs` (twice the upstream headers timeout), then go upstream
// themselves. When Adobe fails the one that asked (a 5xx or a 429), it sets
// a rest marker for the report (`…:rest:<digest>`, SET PX for Adobe's
// Retry-After, clamped) that every member reads before it asks Adobe for that
// report: one call per rest for the whole fleet, and callers get the stale
// copy (or a 503 with Retry-After when there is none). Every failure here is
// a miss, never an error a caller sees; an entry that cannot be used
// (another key list, oversized) is a miss that the next fetch overwrites.
import type { Logger } from 'pino'
import { cacheKeyPath } from '../cache/cache-policy.js'
import type { SharedCache, SharedEntry, SharedPurge, SharedTurn, UpstreamFailure } from '../cache/shared-cache.js'
import { digest, type StateNamespace } from '../store/namespace.js'
import type { StateStore } from '../store/state-store.js'
import type { FleetChannel, RecentTrouble } from './fleet-channel.js'
import type { Membership } from './membership.js'
import { readUpstreamFailure, reportStored, upstreamFailed } from './notices.js'
import { writeKnown, type Found, type Turns } from './turns.js'
import { UNUSABLE, type RebuildableValues } from './unusable-values.js'

export interface FleetCacheOptions {
  store: StateStore
  namespace: StateNamespace
  turns: Turns
  /** The fleet's notices: purges are told on it. */
  channel: FleetChannel
  membership: Membership
  lockTtlMs: number
  maxWaitMs: number
  /** CACHE_MAX_ENTRY_BYTES: no larger body is shared, so no larger entry is read. */
  maxEntryBytes: number
  trouble: RecentTrouble
  values: RebuildableValues
  logger: Logger
  wallNow?: () => number
}

/** An entry's header: its full cache key and every field of the entry but the body, as the cache layer gave them. */
type Header = Omit<SharedEntry, 'body'> & { key: string }

/** Room for an entry's header: its cache key (at most 4 KB, cache/cache-layer.ts) and the caller-facing headers. */
const MAX_HEADER_BYTES = 64 * 1024
/** A rest marker: the reason and until when, a few dozen bytes. */
const MAX_REST_BYTES = 1024
/** The longest rest the fleet keeps (rests.ts clamps the one it asks for the same way). */
const MAX_REST_MS = 3_600_000
/** The longest an entry is kept in Redis (PX): two years, CACHE_TTL_MAX_SECONDS plus the longest stale window. */
const MAX_SHARED_TTL_MS = 2 * 366 * 86_400_000
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
    this.#values = options.values
  }

  async get (key: string): Promise<SharedEntry | undefined | 'unavailable'> {
    if (this.#options.trouble.recent || this.#options.membership.state === 'not-member') return 'unavailable'
    try {
      return await this.#read(key)
    } catch (err) {
      this.#options.trouble.seen()
      this.#log.debug({ reason: (err as Error).message }, 'shared cache unavailable: a miss')
      return 'unavailable'
    }
  }

  put (key: string, entry: SharedEntry): void {
    void this.#put(key, entry)
  }

  forget (key: string): void {
    // A pod that cannot open the fleet's state (another key list) does not touch it.
    if (this.#options.membership.state === 'not-member') return
    this.#store.delete(this.#key(key)).catch((err: unknown) => {
      this.#log.warn({ reason: (err as Error).message }, 'could not drop a shared cached report that may no longer be kept')
    })
  }

  async turn (key: string, signal: AbortSignal): Promise<SharedTurn> {
    const { namespace, turns, lockTtlMs, maxWaitMs } = this.#options
    const id = digest(key)
    const topic = `cache:${id}`
    const turn = await turns.take<SharedEntry, UpstreamFailure>({
      topic,
      lockKey: namespace.key('lock', 'cache', id),
      lockTtlMs,
      maxWaitMs,
      // The cache layer looked a moment ago; the holder looks again, and so does a waiter when told to.
      looked: true,
      look: async () => await this.#look(key),
      read: (notice) => {
        // Told Adobe failed: leave it alone for a while, as the lock holder does.
        const failure = readUpstreamFailure(notice.failure)
        if (failure !== undefined) return { kind: 'failed', failure }
        // Told it could not be stored (too large, not cacheable, refused): fetch your own, all at once.
        if (notice.stored === false) return { kind: 'alone' }
        // Stored, not known, released, or a late notice from an earlier round (a holder releases and
        // publishes after its caller has the answer): look, and take a turn again if it is not there.
        return { kind: 'look' }
      },
      tell: (found) => found.kind === 'failed' ? upstreamFailed(found.failure) : reportStored(true, found.value.freshUntil),
      signal
    })
    if (turn.kind === 'found') return { kind: 'landed', entry: turn.value }
    if (turn.kind === 'failed') return turn
    const member = turn.kind === 'lead' || turn.why !== 'not-member'
    return {
      kind: turn.kind,
      done: (stored, failure, answered = true) => {
        if (!member) return
        void (async () => {
          if (stored === undefined && failure !== undefined) {
            await this.#rest(key, failure)
            await turn.finish(upstreamFailed(failure))
            return
          }
          // No answer from Adobe to judge (the caller left, a timeout, no token): not "cannot be stored", which
          // sends every waiter to Adobe at once; released, so the waiters look and one of them takes the lock.
          if (stored === undefined && !answered) {
            if (turn.kind === 'lead') await turn.finish()
            return
          }
          const shared = stored === undefined ? false : await this.#put(key, stored)
          // A member that acted alone says nothing when it has nothing to say.
          if (turn.kind === 'alone' && stored === undefined) return
          await turn.finish(reportStored(shared, shared === false ? undefined : stored?.freshUntil))
        })()
      }
    }
  }

  /**
   * Deletes the shared copies (every one, or every variant of one path: the
   * path's digest is part of each entry's name), then tells every instance,
   * this one included, to drop the same from memory.
   */
  async purge (path: string | undefined): Promise<SharedPurge> {
    const { namespace, channel, membership } = this.#options
    // A pod that cannot open the fleet's state (another key list) neither deletes it nor tells the fleet anything it could open.
    if (membership.state === 'not-member') return 'unavailable'
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

  /** A fresh entry, else the report's rest marker. Store trouble rejects. */
  async #look (key: string): Promise<Found<SharedEntry, UpstreamFailure> | undefined> {
    const entry = await this.#read(key)
    const now = this.#wallNow()
    if (entry !== undefined && entry.freshUntil > now) return { kind: 'found', value: entry }
    const rest = await this.#values.read(this.#restKey(key), MAX_REST_BYTES, 'a report\'s rest marker')
    if (rest === undefined || rest === UNUSABLE) return undefined
    const marker = parseRest(rest)
    return marker === undefined || marker.until <= now ? undefined : { kind: 'failed', failure: { reason: marker.reason, restMs: marker.until - now } }
  }

  async #read (key: string): Promise<SharedEntry | undefined> {
    const raw = await this.#values.read(this.#key(key), 4 + MAX_HEADER_BYTES + this.#options.maxEntryBytes, 'a shared cached report')
    return raw === undefined || raw === UNUSABLE ? undefined : decode(raw, key, this.#wallNow())
  }

  /**
   * The fleet's copy of `entry`: true when written, false when not, undefined
   * when not known. Never throws; a store that cannot be asked is counted, not logged per write.
   */
  async #put (key: string, entry: SharedEntry): Promise<boolean | undefined> {
    // At most a lifetime and a stale window of a year each (config/schema.ts); NaN from a broken entry is no PX either.
    const ttlMs = Math.min(entry.staleUntil - this.#wallNow(), MAX_SHARED_TTL_MS)
    if (!(ttlMs > 0) || this.#options.membership.state === 'not-member') return false
    const value = encode(key, entry)
    const stored = await writeKnown(this.#store, this.#key(key), value, ttlMs, value.length)
    if (stored !== true) this.#options.turns.counts.skipped++
    return stored
  }

  /** Adobe failed `key` for this member: every member leaves it alone for the rest (SET PX: the store forgets it after). */
  async #rest (key: string, failure: UpstreamFailure): Promise<void> {
    const restMs = Math.min(MAX_REST_MS, Math.ceil(failure.restMs))
    if (!(restMs > 0)) return
    const marker = { reason: failure.reason, until: this.#wallNow() + restMs }
    await this.#store.set(this.#restKey(key), Buffer.from(JSON.stringify(marker)), restMs).catch(() => { this.#options.turns.counts.skipped++ })
  }

  /** Under the digest of its path, then of its whole key: a purge finds every variant of a path by name. */
  #key (key: string): string {
    return this.#options.namespace.key('cache', digest(cacheKeyPath(key)), digest(key))
  }

  #restKey (key: string): string {
    return this.#options.namespace.key('rest', digest(key))
  }
}

/** A rest marker: why, and until when (wall clock; the store's PX only forgets it). */
function parseRest (raw: Buffer): { reason: UpstreamFailure['reason'], until: number } | undefined {
  try {
    const value = JSON.parse(raw.toString('utf8')) as { reason?: unknown, until?: unknown }
    const failure = readUpstreamFailure({ reason: value.reason, restMs: 0 })
    return failure === undefined || typeof value.until !== 'number' || !Number.isFinite(value.until) ? undefined : { reason: failure.reason, until: value.until }
  } catch {
    return undefined
  }
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
