// Membership (src/fleet/membership.ts, issue 20 D3) and the logs of values
// that cannot be used (D7), at unit level: members with different key lists
// on one memory store, as instances on one Redis.
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { CredentialStore } from '../../src/adobe/credential-store.js'
import type { SharedEntry } from '../../src/cache/shared-cache.js'
import { Membership } from '../../src/fleet/membership.js'
import { SharedCredentials } from '../../src/fleet/shared-credentials.js'
import { RebuildableValues } from '../../src/fleet/unusable-values.js'
import { stateKey, type StateKey } from '../../src/store/encryption-keys.js'
import { StoreUnavailableError } from '../../src/store/errors.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { SealedStore } from '../../src/store/sealed-store.js'
import type { StoreLock } from '../../src/store/state-store.js'
import { capturedLogger, eventually, temporaryDirectory } from '../helpers/app.js'
import { memberParts } from '../helpers/fleet-parts.js'

const PROBE = 'test:member-check'
const CREDENTIALS = 'test:credentials'

function membership (store: MemoryStore, key: StateKey, credentialsKey: string | undefined = CREDENTIALS): { membership: Membership, store: SealedStore, logs: string[] } {
  const { logger, lines } = capturedLogger('debug')
  const sealed = new SealedStore(store, [key])
  return { membership: new Membership({ store: sealed, probeKey: PROBE, credentialsKey, logger }), store: sealed, logs: lines }
}

const unsealable = (logs: string[]): string[] => logs.filter((l) => l.includes('"code":"CMU_PROXY_STATE_UNSEALABLE"'))

t.test('the first instance on an empty store writes the probe; one with another key list is not a member, and says so once', async (t) => {
  const inner = new MemoryStore()
  const good = membership(inner, stateKey(randomBytes(32)))
  t.equal(await good.membership.check(), 'member')
  t.ok(await inner.get(PROBE), 'the probe is written')
  const stranger = membership(inner, stateKey(randomBytes(32)))
  t.equal(await stranger.membership.check(), 'not-member')
  t.equal(await stranger.membership.check(), 'not-member')
  t.match(stranger.membership.mismatch, /key id [0-9a-f]{16}/)
  t.equal(unsealable(stranger.logs).length, 1, 'one line with CMU_PROXY_STATE_UNSEALABLE, however often it looks')
  t.match(JSON.parse(unsealable(stranger.logs)[0] ?? '{}'), { level: 50, reason: 'fleet_key_mismatch', key: PROBE })
  t.equal(unsealable(good.logs).length, 0)
})

t.test('the credentials decide over the probe: a probe written by a stranger (after a flush) does not make the fleet strangers', async (t) => {
  const inner = new MemoryStore()
  const fleetKey = stateKey(randomBytes(32))
  const good = membership(inner, fleetKey)
  await good.store.set(CREDENTIALS, Buffer.from('{"client_id":"a","client_secret":"b"}'))
  const stranger = membership(inner, stateKey(randomBytes(32)))
  await stranger.store.set(PROBE, Buffer.from('{}'))
  t.equal(await good.membership.check(), 'member', 'the credentials open')
  t.ok(await good.store.get(PROBE), 'and the probe is written back with the fleet\'s key')
  t.equal(await stranger.membership.check(), 'not-member', 'the credentials do not open for the stranger')
})

t.test('an instance found out stays out while nothing says otherwise: it never writes the probe', async (t) => {
  const inner = new MemoryStore()
  const good = membership(inner, stateKey(randomBytes(32)), undefined)
  t.equal(await good.membership.check(), 'member')
  const stranger = membership(inner, stateKey(randomBytes(32)), undefined)
  t.equal(await stranger.membership.check(), 'not-member')
  await inner.delete(PROBE)
  t.equal(await stranger.membership.check(), 'not-member', 'still out')
  t.equal(await inner.get(PROBE), undefined, 'and wrote nothing')
  t.equal(await good.membership.check(), 'member', 'a member writes it back')
  t.ok(await inner.get(PROBE))
})

t.test('store trouble decides nothing', async (t) => {
  class DownStore extends MemoryStore {
    override async get (): Promise<Buffer | undefined> { throw new StoreUnavailableError('get', 'ECONNREFUSED') }
  }
  const { membership: m } = membership(new DownStore(), stateKey(randomBytes(32)))
  t.equal(await m.check(), 'unknown')
  t.equal(await m.ensure(), 'unknown')
})

/** Counts what reaches the store underneath the sealing. */
class CountingStore extends MemoryStore {
  locks = 0
  publishes = 0
  writes = 0
  override lock (key: string): StoreLock { this.locks++; return super.lock(key) }
  override async publish (channel: string, message: Buffer): Promise<void> { this.publishes++; await super.publish(channel, message) }
  override async set (key: string, value: Buffer, ttlMs?: number): Promise<void> { this.writes++; await super.set(key, value, ttlMs) }
}

t.test('an instance that is not a member takes no lock, writes and publishes nothing, reads no cache', async (t) => {
  const inner = new CountingStore()
  await memberParts(t, new SealedStore(inner, [stateKey(randomBytes(32))]))
  const stranger = await memberParts(t, new SealedStore(inner, [stateKey(randomBytes(32))]))
  t.equal(stranger.membership.state, 'not-member')
  const counts = { ...inner }
  await t.rejects(stranger.coordination.obtainToken({ acceptable: () => true, fetch: async () => { throw new Error('must not fetch') }, describeFailure: () => ({ code: 'CMU_PROXY_NOT_REGISTERED', detail: '', minDelayMs: 0, slow: false }) }), /not a member/)
  t.equal(await stranger.cache.get('k'), 'unavailable')
  const turn = await stranger.cache.turn('k', new AbortController().signal)
  t.equal(turn.kind, 'alone')
  if (turn.kind === 'alone') turn.done(undefined, { reason: 'upstream_5xx', restMs: 5_000 })
  stranger.cache.put('k', entry())
  stranger.coordination.dropToken('x')
  await stranger.coordination.reconcile()
  await new Promise((resolve) => setImmediate(resolve))
  t.match(inner, { locks: counts.locks, publishes: counts.publishes, writes: counts.writes }, 'no lock, no notice, no write')
})

function entry (): SharedEntry {
  const now = Date.now()
  return { status: 200, headers: {}, body: Buffer.from('{}'), storedAt: now, bornAt: now, freshUntil: now + 60_000, revalidateUntil: now + 60_000, errorUntil: now + 60_000, staleUntil: now + 60_000, noCache: false }
}

t.test('D7: values that cannot be used are logged as a run: one line when it starts, one with the count when it ends', async (t) => {
  const inner = new MemoryStore()
  const foreign = new SealedStore(inner, [stateKey(randomBytes(32)), stateKey(randomBytes(32))])
  const ours = new SealedStore(inner, [stateKey(randomBytes(32))])
  const { logger, lines } = capturedLogger('debug')
  const values = new RebuildableValues(ours, logger, { quietAfterMs: 50 })
  t.teardown(() => { values.close() })
  for (let i = 0; i < 10; i++) {
    await foreign.set(`test:cache:${i}`, Buffer.from('{}'))
    t.equal(typeof await values.read(`test:cache:${i}`, 1024, 'a shared cached report'), 'symbol')
  }
  const logged = (): Array<{ level: number, msg: string, unusable?: number }> => lines.map((l) => JSON.parse(l) as { level: number, msg: string })
  t.equal(logged().filter((l) => l.level === 40).length, 1, 'one warning for ten values')
  t.ok(await eventually(() => logged().some((l) => l.unusable === 10), 1_000), 'and one line with the count once they stop')
  t.equal(logged().length, 2)
  t.equal(values.total, 10)
})

t.test('D7: cache writes while the store is down are counted, never logged one by one', async (t) => {
  class DownForWrites extends MemoryStore {
    down = false
    override async set (key: string, value: Buffer, ttlMs?: number): Promise<void> {
      if (this.down) throw new StoreUnavailableError('set', 'the connection is closed')
      await super.set(key, value, ttlMs)
    }
  }
  const store = new DownForWrites()
  const member = await memberParts(t, store)
  store.down = true
  const before = member.logs.length
  for (let i = 0; i < 20; i++) member.cache.put(`key-${i}`, entry())
  t.ok(await eventually(() => member.turns.counts.skipped === 20, 1_000), 'twenty writes skipped, counted')
  t.same(member.logs.slice(before).map((l) => JSON.parse(l) as { level: number }).filter((l) => l.level >= 40), [], 'and no warning for any of them')
})

t.test('a pod that is not a member never puts its CREDENTIALS_FILE credentials into the fleet\'s store', async (t) => {
  const inner = new MemoryStore()
  const good = membership(inner, stateKey(randomBytes(32)))
  t.equal(await good.membership.check(), 'member', 'the fleet\'s probe, no credentials yet')
  const strangerKey = stateKey(randomBytes(32))
  const stranger = membership(inner, strangerKey)
  t.equal(await stranger.membership.check(), 'not-member')
  const file = new CredentialStore(join(temporaryDirectory(t), 'credentials.json'), 'h.p.s')
  await file.save({ client_id: 'stranger-client', client_secret: 'fixture-not-a-secret' })
  const shared = new SharedCredentials({ file, store: stranger.store, key: CREDENTIALS, logger: capturedLogger('silent').logger, isMember: () => stranger.membership.state === 'member' })
  t.match(await shared.load(), { status: 'found', credentials: { client_id: 'stranger-client' } }, 'it serves on its own file')
  t.equal(await inner.get(CREDENTIALS), undefined, 'nothing sealed under its key reaches the fleet')
  t.equal(await good.membership.check(), 'member', 'so the fleet\'s members stay members')
})
