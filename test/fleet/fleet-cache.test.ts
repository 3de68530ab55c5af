// The fleet's cache turns at unit level, on the memory store (the Redis
// paths are in fleet.test.ts): what a waiter does with a notice for an
// entry that is not fresh, or that the holder could not write.
import t, { type Test } from 'tap'
import type { SharedEntry, SharedTurn } from '../../src/cache/shared-cache.js'
import type { FleetCache } from '../../src/fleet/shared-cache.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { memberParts } from '../helpers/fleet-parts.js'

const KEY = 'identity\n\n\n/v2/year?'

/** A store that refuses writes, as a Redis out of memory or read-only after a failover does. */
class RefusingStore extends MemoryStore {
  refuse = false
  override async set (key: string, value: Buffer, ttlMs?: number): Promise<void> {
    if (this.refuse) throw new Error('OOM command not allowed')
    await super.set(key, value, ttlMs)
  }
}

async function member (t: Test, store: MemoryStore, wallNow: () => number): Promise<FleetCache> {
  return (await memberParts(t, store, { wallNow })).cache
}

function entry (storedAt: number, freshForMs: number): SharedEntry {
  return { status: 200, headers: { 'content-type': 'application/json' }, body: Buffer.from('{}'), storedAt, bornAt: storedAt, freshUntil: storedAt + freshForMs, revalidateUntil: storedAt + freshForMs, errorUntil: storedAt + 60_000, staleUntil: storedAt + 60_000, noCache: false }
}

const settled = async <T>(promise: Promise<T>): Promise<T | 'pending'> => await Promise.race([promise, new Promise<'pending'>((resolve) => setTimeout(resolve, 50, 'pending'))])

/** Three members on one store and clock: A's turn (checked to lead), and B's and C's, checked to wait on it. */
async function leaderAndTwoWaiters (t: Test, store: MemoryStore): Promise<{ first: SharedTurn, waiting: Array<Promise<SharedTurn>>, now: number }> {
  const now = Date.now()
  const [a, b, c] = await Promise.all([0, 1, 2].map(async () => await member(t, store, () => now)))
  const signal = new AbortController().signal
  const first = await a!.turn(KEY, signal)
  t.equal(first.kind, 'lead', 'A leads')
  const waiting = [b!.turn(KEY, signal), c!.turn(KEY, signal)]
  t.same(await Promise.all(waiting.map(settled)), ['pending', 'pending'], 'B and C wait on A')
  return { first, waiting, now }
}

t.test('a notice whose entry is no longer fresh (a late one from an earlier round): the waiters take turns, they do not all ask Adobe', async (t) => {
  const { first, waiting, now } = await leaderAndTwoWaiters(t, new MemoryStore())
  // What A announces as stored is already past its freshness here.
  if (first.kind === 'lead') first.done(entry(now - 10_000, 5_000))
  const next = await Promise.race(waiting)
  t.equal(next.kind, 'lead', 'one of them takes the next turn (not a call alone)')
  t.equal((await Promise.all(waiting.map(settled))).filter((turn) => turn === 'pending').length, 1, 'the other waits on it')
  if (next.kind === 'lead') next.done(entry(now, 5_000))
  const last = await Promise.all(waiting)
  t.same(last.map((turn) => turn.kind).sort(), ['landed', 'lead'], 'and takes what it stored')
})

t.test('the holder could not write the fleet\'s copy: the waiters are told so and fetch their own at once, not one after another', async (t) => {
  const store = new RefusingStore()
  const { first, waiting, now } = await leaderAndTwoWaiters(t, store)
  store.refuse = true
  if (first.kind === 'lead') first.done(entry(now, 5_000))
  t.same((await Promise.all(waiting)).map((turn) => turn.kind), ['alone', 'alone'])
})

t.test('a holder whose fetch ended without an answer from Adobe (its caller left, a timeout): the waiters take turns, they do not all ask Adobe', async (t) => {
  const { first, waiting, now } = await leaderAndTwoWaiters(t, new MemoryStore())
  if (first.kind === 'lead') first.done(undefined, undefined, false)
  const next = await Promise.race(waiting)
  t.equal(next.kind, 'lead', 'one of them takes the next turn')
  t.equal((await Promise.all(waiting.map(settled))).filter((turn) => turn === 'pending').length, 1, 'the other waits on it')
  if (next.kind === 'lead') next.done(entry(now, 5_000), undefined, true)
  t.same((await Promise.all(waiting)).map((turn) => turn.kind).sort(), ['landed', 'lead'], 'and takes what it stored')
})

t.test('a holder whose answer from Adobe cannot be stored: the waiters are told so and fetch their own at once', async (t) => {
  const { first, waiting } = await leaderAndTwoWaiters(t, new MemoryStore())
  if (first.kind === 'lead') first.done(undefined, undefined, true)
  t.same((await Promise.all(waiting)).map((turn) => turn.kind), ['alone', 'alone'])
})
