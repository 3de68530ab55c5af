// How long the fleet keeps a shared report (the PX of its SET): never past
// two years, whatever instants an entry carries, and nothing for an entry
// whose instants are not numbers.
import t from 'tap'
import type { SharedEntry } from '../../src/cache/shared-cache.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { eventually } from '../helpers/app.js'
import { memberParts } from '../helpers/fleet-parts.js'

/** A store that records the TTL of every write. */
class RecordingStore extends MemoryStore {
  readonly ttls: Array<number | undefined> = []
  override async set (key: string, value: Buffer, ttlMs?: number): Promise<void> {
    this.ttls.push(ttlMs)
    await super.set(key, value, ttlMs)
  }
}

const TWO_YEARS_MS = 2 * 366 * 86_400_000

t.test('the PX of a shared entry is clamped to two years; an entry with a NaN instant is not written', async (t) => {
  const store = new RecordingStore()
  const now = Date.now()
  const { cache } = await memberParts(t, store, { wallNow: () => now })
  const before = store.ttls.length
  const entry = (staleUntil: number): SharedEntry => ({ status: 200, headers: {}, body: Buffer.from('{}'), storedAt: now, bornAt: now, freshUntil: now + 1_000, revalidateUntil: now + 1_000, errorUntil: staleUntil, staleUntil, noCache: false })
  cache.put('a', entry(now + 10 * 365 * 86_400_000))
  t.ok(await eventually(() => store.ttls.length === before + 1), 'written')
  t.equal(store.ttls[before], TWO_YEARS_MS, 'ten years asked, two years kept')
  cache.put('b', entry(Number.NaN))
  cache.put('c', entry(now + 60_000))
  t.ok(await eventually(() => store.ttls.length === before + 2), 'the next write')
  t.same(store.ttls.slice(before), [TWO_YEARS_MS, 60_000], 'the NaN entry was never sent')
})
