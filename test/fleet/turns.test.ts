// The fleet's turn protocol (src/fleet/turns.ts) at unit level, each rule
// against the defect it fixes (issue 20): members on one memory store, some
// of it made to misbehave the way a slow or foreign Redis client does.
// The Redis paths are in fleet-*.test.ts.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { FleetToken, TokenRequest } from '../../src/adobe/coordination.js'
import type { SharedEntry } from '../../src/cache/shared-cache.js'
import { stateKey } from '../../src/store/encryption-keys.js'
import { StoreUnavailableError } from '../../src/store/errors.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { SealedStore } from '../../src/store/sealed-store.js'
import type { StoreLock } from '../../src/store/state-store.js'
import { eventually } from '../helpers/app.js'
import { memberParts } from '../helpers/fleet-parts.js'

const LOCK_TTL_MS = 5_000

// The members' own timers do not hold the process (they are unref'd): without a fix, a test must
// fail on its assertion after the wait, not end early as unfinished.
const keepAlive = setInterval(() => {}, 1_000)
t.teardown(() => { clearInterval(keepAlive) })

/** Counts lock attempts; the next `lateLockReplies` attempts land in the store but answer nothing until `gate` opens, then fail. */
class SlowRepliesStore extends MemoryStore {
  lockAttempts = 0
  lateLockReplies = 0
  /** The next `lateSetReplies` writes land but fail, as a write whose reply timed out. */
  lateSetReplies = 0
  gate: Promise<void> = Promise.resolve()

  override lock (key: string): StoreLock {
    const lock = super.lock(key)
    return {
      ...lock,
      obtain: async (ttlMs) => {
        this.lockAttempts++
        const obtained = await lock.obtain(ttlMs)
        if (this.lateLockReplies === 0) return obtained
        this.lateLockReplies--
        await this.gate
        throw new StoreUnavailableError('lock.obtain', 'no answer within 250 ms')
      }
    }
  }

  override async set (key: string, value: Buffer, ttlMs?: number): Promise<void> {
    await super.set(key, value, ttlMs)
    if (this.lateSetReplies > 0) {
      this.lateSetReplies--
      throw new StoreUnavailableError('set', 'no answer within 250 ms')
    }
  }
}

function token (value: string): FleetToken {
  const now = Date.now()
  return { access_token: value, obtained_at: now, expires_at: now + 3_600_000, usable_until: now + 3_595_000 }
}

function tokenRequest (fetch: () => Promise<FleetToken>): TokenRequest {
  return { acceptable: () => true, fetch, describeFailure: () => ({ code: 'CMU_PROXY_TOKEN_ENDPOINT_ERROR', detail: 'x', minDelayMs: 0, slow: false }) }
}

function entry (storedAt: number): SharedEntry {
  return { status: 200, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"report":[]}'), storedAt, bornAt: storedAt, freshUntil: storedAt + 60_000, revalidateUntil: storedAt + 60_000, errorUntil: storedAt + 120_000, staleUntil: storedAt + 120_000, noCache: false }
}

t.test('D2: a lock whose reply comes late is released by compare-and-delete, and the member that acted alone still tells the waiters', async (t) => {
  const store = new SlowRepliesStore()
  const a = await memberParts(t, store, { lockTtlMs: LOCK_TTL_MS })
  const b = await memberParts(t, store, { lockTtlMs: LOCK_TTL_MS })
  const lockKey = a.namespace.key('lock', 'token')
  let release = (): void => {}
  store.gate = new Promise((resolve) => { release = resolve })
  store.lateLockReplies = 1
  let calls = 0
  const fetch = async (): Promise<FleetToken> => { calls++; return token(`token-${calls}`) }
  const first = a.coordination.obtainToken(tokenRequest(fetch))
  t.ok(await eventually(async () => await store.get(lockKey) !== undefined), "A's lock landed, its reply has not come")
  const attempts = store.lockAttempts
  const started = performance.now()
  const second = b.coordination.obtainToken(tokenRequest(fetch))
  t.ok(await eventually(() => store.lockAttempts > attempts), 'B found the lock held and waits on its holder')
  release()
  t.match(await first, { token: { access_token: 'token-1' }, fetchedHere: true }, 'A fetched alone')
  t.equal(await store.get(lockKey), undefined, 'and its lock is gone at once, not after the TTL')
  t.match(await second, { token: { access_token: 'token-1' }, fetchedHere: false }, 'B took the token A announced')
  const waited = performance.now() - started
  t.ok(waited < LOCK_TTL_MS / 2, `B waited ${Math.round(waited)} ms, not the lock TTL`)
  t.equal(calls, 1, 'one token call for both')
  t.equal(a.turns.counts.unknownLocks, 1)
})

t.test('D3: a notice that does not open (another key list) wakes the waiters at once; nobody waits the TTL on it', async (t) => {
  const inner = new SlowRepliesStore()
  const ours = new SealedStore(inner, [stateKey(randomBytes(32))])
  const foreign = new SealedStore(inner, [stateKey(randomBytes(32))])
  const a = await memberParts(t, ours, { lockTtlMs: LOCK_TTL_MS })
  const lockKey = a.namespace.key('lock', 'token')
  // An instance with another key list (one from before membership, say) holds the token lock.
  const foreignLock = foreign.lock(lockKey)
  t.ok(await foreignLock.obtain(LOCK_TTL_MS))
  let calls = 0
  const started = performance.now()
  const attempts = inner.lockAttempts
  const waiting = a.coordination.obtainToken(tokenRequest(async () => { calls++; return token('ours') }))
  t.ok(await eventually(() => inner.lockAttempts > attempts), 'A waits on the foreign holder')
  await foreignLock.release()
  await foreign.publish(a.namespace.channel('events'), Buffer.from(JSON.stringify({ topic: 'token', token: token('theirs') })))
  t.match(await waiting, { token: { access_token: 'ours' }, fetchedHere: true }, 'A looked again, took the free lock and fetched')
  const waited = performance.now() - started
  t.ok(waited < LOCK_TTL_MS / 2, `in ${Math.round(waited)} ms, not the lock TTL`)
  t.equal(calls, 1)
  t.equal(a.channel.unreadable, 1, 'the notice was counted')
})

t.test('D4: a write whose reply was lost is read back: the waiters are told "stored" and take it, none goes to Adobe', async (t) => {
  const store = new SlowRepliesStore()
  const now = Date.now()
  const [a, b, c] = await Promise.all([0, 1, 2].map(async () => await memberParts(t, store, { lockTtlMs: LOCK_TTL_MS, wallNow: () => now })))
  const key = 'identity\n\n\n/v2/year?'
  const signal = new AbortController().signal
  const lead = await a!.cache.turn(key, signal)
  if (lead.kind !== 'lead') throw new Error(`A should lead, got ${lead.kind}`)
  const attempts = store.lockAttempts
  const waiting = [b!.cache.turn(key, signal), c!.cache.turn(key, signal)]
  t.ok(await eventually(() => store.lockAttempts >= attempts + 2), 'B and C wait on A')
  store.lateSetReplies = 1
  lead.done(entry(now))
  t.same((await Promise.all(waiting)).map((turn) => turn.kind), ['landed', 'landed'], 'both took what A stored')
})

t.test('D4: a write that did not land is known not to have landed: the waiters fetch their own at once', async (t) => {
  class RefusingStore extends SlowRepliesStore {
    refuse = false
    override async set (key: string, value: Buffer, ttlMs?: number): Promise<void> {
      if (this.refuse) throw new StoreUnavailableError('set', 'OOM command not allowed when used memory > maxmemory')
      await super.set(key, value, ttlMs)
    }
  }
  const store = new RefusingStore()
  const now = Date.now()
  const [a, b] = await Promise.all([0, 1].map(async () => await memberParts(t, store, { lockTtlMs: LOCK_TTL_MS, wallNow: () => now })))
  const key = 'identity\n\n\n/v2/month?'
  const signal = new AbortController().signal
  const lead = await a!.cache.turn(key, signal)
  if (lead.kind !== 'lead') throw new Error(`A should lead, got ${lead.kind}`)
  const attempts = store.lockAttempts
  const waiting = b!.cache.turn(key, signal)
  t.ok(await eventually(() => store.lockAttempts > attempts), 'B waits on A')
  store.refuse = true
  const started = performance.now()
  lead.done(entry(now))
  t.equal((await waiting).kind, 'alone', 'told it is not stored')
  t.ok(performance.now() - started < LOCK_TTL_MS / 2, 'at once')
})

t.test('a release announced with nothing to tell sends the waiters to look at once: they do not sit out the TTL', async (t) => {
  const store = new SlowRepliesStore()
  const a = await memberParts(t, store, { lockTtlMs: LOCK_TTL_MS })
  const b = await memberParts(t, store, { lockTtlMs: LOCK_TTL_MS })
  const lockKey = a.namespace.key('lock', 'token')
  // A holds the lock, B waits; A then finds a token (another member put it back meanwhile) and fetches nothing.
  const lock = store.lock(lockKey)
  t.ok(await lock.obtain(LOCK_TTL_MS))
  const attempts = store.lockAttempts
  const started = performance.now()
  const waiting = b.coordination.obtainToken(tokenRequest(async () => { throw new Error('must not fetch') }))
  t.ok(await eventually(() => store.lockAttempts > attempts), 'B waits')
  await store.set(a.namespace.key('token'), Buffer.from(JSON.stringify(token('put-back'))), 60_000)
  await lock.release()
  await a.turns.tell('token', { released: true })
  t.match(await waiting, { token: { access_token: 'put-back' }, fetchedHere: false })
  t.ok(performance.now() - started < LOCK_TTL_MS / 2, 'B looked as soon as the lock was free')
})
