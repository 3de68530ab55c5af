// One contract, run against every store (as oauth2-proxy runs one session
// suite against every backend and undici one cache-store suite against every
// cache store). A fixture says how to reach a backend; the contract says what
// any store over it must do.
import { randomBytes, randomUUID } from 'node:crypto'
import type { Test } from 'tap'
import { stateKey, type StateKey } from '../../src/store/encryption-keys.js'
import { StateSealError, StoreUnavailableError } from '../../src/store/errors.js'
import { stateNamespace } from '../../src/store/namespace.js'
import { SealedStore } from '../../src/store/sealed-store.js'
import type { StateStore } from '../../src/store/state-store.js'
import { eventually } from './app.js'
import type { RedisServer } from './redis-server.js'

export interface Backend {
  /** A store over this backend, connected, as another instance of the fleet would have; closed by the backend's teardown. */
  connect: () => Promise<StateStore>
  /** The bytes at `key` exactly as the backend holds them, read without the code under test. */
  raw: (key: string) => Promise<Buffer | undefined>
  /** Writes bytes at `key` without the code under test (a value written by someone else). */
  rawSet: (key: string, value: Buffer) => Promise<void>
  /** Messages on `channel` exactly as the backend carries them. */
  rawSubscribe: (channel: string, handler: (message: Buffer) => void) => Promise<void>
  /** For backends that can fail: the server, and the store's command timeout. */
  server?: { redis: RedisServer, commandTimeoutMs: number }
}

export interface StoreFixture {
  name: string
  /** Opens a fresh backend for one test and closes it at the end of that test. */
  backend: (t: Test) => Promise<Backend>
  /** Seal with these keys (a SealedStore over the backend's stores); absent: plain. */
  sealed: boolean
  /** Keys in one hash slot, as on a Redis Cluster (namespace.ts). */
  hashTag?: boolean
}

/** A guard against a hung test, not a budget: a loaded 2-core machine can take many times longer than an idle one (issue 18). */
const quickly = { timeout: 120_000 }
/** Timing bounds allow for a busy 2-core CI machine (four test files at a time beside other work); they still tell "the timeout" from "hanging". */
const SCHEDULING_SLACK_MS = 1_000
/** Short lifetimes, yet long enough that the few commands a test sends before one runs out fit in them on a loaded machine. */
const SHORT_TTL_MS = 1_000

export function storeContract (t: Test, fixture: StoreFixture): void {
  /** The store under test and a peer on the same backend, keys in a namespace of their own. */
  async function open (t: Test, keys: readonly StateKey[] = [stateKey(randomBytes(32))]) {
    const backend = await fixture.backend(t)
    const wrap = (inner: StateStore, withKeys = keys): StateStore => fixture.sealed ? new SealedStore(inner, withKeys) : inner
    const ns = stateNamespace('test:', { clientId: randomUUID() }, { hashTag: fixture.hashTag === true })
    return { backend, store: wrap(await backend.connect()), peer: wrap(await backend.connect()), wrap, keys, ns }
  }

  t.test(`${fixture.name}: values round-trip byte for byte; absent is undefined`, quickly, async (t) => {
    const { store, peer, ns } = await open(t)
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
    await store.set(ns.key('bytes'), bytes)
    t.same(await store.get(ns.key('bytes')), bytes, 'every byte value survives')
    t.same(await peer.get(ns.key('bytes')), bytes, 'another instance reads it')
    await store.set(ns.key('empty'), Buffer.alloc(0))
    t.same(await store.get(ns.key('empty')), Buffer.alloc(0), 'an empty value is a value, not absent')
    t.equal(await store.get(ns.key('never-written')), undefined, 'absent')
    await store.set(ns.key('bytes'), Buffer.from('second'))
    t.equal((await peer.get(ns.key('bytes')))?.toString(), 'second', 'set replaces')
  })

  t.test(`${fixture.name}: TTLs expire; set without a TTL clears an earlier one`, quickly, async (t) => {
    const { store, ns } = await open(t)
    await store.set(ns.key('short'), Buffer.from('v'), SHORT_TTL_MS)
    await store.set(ns.key('long'), Buffer.from('v'), 60_000)
    await store.set(ns.key('cleared'), Buffer.from('v'), 60)
    await store.set(ns.key('cleared'), Buffer.from('w'))
    t.equal((await store.get(ns.key('short')))?.toString(), 'v', 'there before the TTL')
    t.ok(await eventually(async () => await store.get(ns.key('short')) === undefined, 2_000), 'gone after the TTL')
    t.equal((await store.get(ns.key('long')))?.toString(), 'v', 'a longer TTL still holds')
    t.equal((await store.get(ns.key('cleared')))?.toString(), 'w', 'no TTL after a set without one')
    for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await t.rejects(store.set(ns.key('bad'), Buffer.from('v'), bad), RangeError, `ttl ${bad} is refused`)
    }
  })

  t.test(`${fixture.name}: deleteByPrefix deletes every key under the prefix and nothing else`, quickly, async (t) => {
    const { store, peer, ns } = await open(t)
    // More keys than one SCAN batch asks for, so the walk takes several rounds.
    const many = Array.from({ length: 1_200 }, (_, i) => ns.key('cache', `k${i}`))
    // In slices of 50: the client refuses more than 1,000 waiting commands (bounded memory), and 200 at once outlasted a 500 ms command timeout over Sentinel on a loaded machine.
    for (let i = 0; i < many.length; i += 50) await Promise.all(many.slice(i, i + 50).map(async (key) => { await store.set(key, Buffer.from('v'), 60_000) }))
    await store.set(ns.key('cache', 'one', 'variant'), Buffer.from('v'))
    await store.set(ns.key('cached'), Buffer.from('not under cache:'))
    await store.set(ns.key('lock', 'cache', 'k1'), Buffer.from('a lock'))
    // Glob characters in a prefix are matched literally.
    await store.set(`${ns.key('glob')}*`, Buffer.from('v'))
    await store.set(`${ns.key('glob')}y`, Buffer.from('v'))
    t.equal(await peer.deleteByPrefix(ns.key('cache', 'one') + ':'), 1, 'one key under a narrow prefix')
    t.equal(await store.get(ns.key('cache', 'one', 'variant')), undefined, 'gone')
    t.equal(await peer.deleteByPrefix(ns.key('cache') + ':'), many.length, 'every key under the prefix, over several batches')
    t.equal(await store.get(ns.key('cache', 'k7')), undefined, 'gone')
    t.equal((await store.get(ns.key('cached')))?.toString(), 'not under cache:', 'a key that only starts alike stays')
    t.equal((await store.get(ns.key('lock', 'cache', 'k1')))?.toString(), 'a lock', 'other names stay')
    t.equal(await store.deleteByPrefix(`${ns.key('glob')}*`), 1, 'a * in the prefix is a star, not a wildcard')
    t.equal((await store.get(`${ns.key('glob')}y`))?.toString(), 'v')
    t.equal(await store.deleteByPrefix(ns.key('nothing-here')), 0, 'nothing to delete: 0')
  })

  t.test(`${fixture.name}: setIfAbsent stores only into an empty key, and never overwrites a newer value`, quickly, async (t) => {
    const { store, peer, ns } = await open(t)
    const key = ns.key('token')
    t.equal(await store.setIfAbsent(key, Buffer.from('put-back')), true, 'stored into an empty key')
    t.equal((await peer.get(key))?.toString(), 'put-back')
    await peer.set(key, Buffer.from('newer'))
    t.equal(await store.setIfAbsent(key, Buffer.from('older'), 60_000), false, 'a value is there: not stored')
    t.equal((await store.get(key))?.toString(), 'newer', 'the newer value stays')
    const concurrent = await Promise.all(Array.from({ length: 6 }, async (_, i) => await (i % 2 === 0 ? store : peer).setIfAbsent(ns.key('race'), Buffer.from(`v${i}`), 60_000)))
    t.equal(concurrent.filter(Boolean).length, 1, 'six at once: one stores')
    t.equal(await store.setIfAbsent(ns.key('short'), Buffer.from('v'), 60), true)
    t.ok(await eventually(async () => await store.get(ns.key('short')) === undefined, 2_000), 'its TTL runs')
    t.equal(await store.setIfAbsent(ns.key('short'), Buffer.from('again')), true, 'an expired key is empty again')
    await t.rejects(store.setIfAbsent(ns.key('bad'), Buffer.from('v'), 0), RangeError)
  })

  t.test(`${fixture.name}: get with a bound refuses a larger value without reading it`, quickly, async (t) => {
    const { backend, store, peer, ns } = await open(t)
    const key = ns.key('token')
    const value = randomBytes(2_048)
    await store.set(key, value)
    t.same(await peer.get(key, 2_048), value, 'up to the bound: read')
    await t.rejects(peer.get(key, 2_047), { name: 'StateValueTooLargeError', code: 'CMU_PROXY_STATE_VALUE_TOO_LARGE', key, message: /is \d+ bytes, more than the \d+ allowed/ }, 'one byte over: refused')
    t.equal(await peer.get(ns.key('absent'), 16), undefined, 'absent is still absent')
    t.equal(await store.deleteIf(key, value.subarray(0, 16)), false, 'compare-and-delete with a shorter value: not equal, nothing read')
    t.equal(await store.replaceIf(key, value.subarray(0, 16), Buffer.from('x')), false, 'nor compare-and-swap')
    t.same(await store.get(key), value, 'still there')
    // Written by someone else (anyone with access to Redis): a huge value under a key the proxy reads.
    await backend.rawSet(ns.key('huge'), Buffer.alloc(4 * 1024 * 1024))
    await t.rejects(store.get(ns.key('huge'), 16 * 1024), { name: 'StateValueTooLargeError' })
  })

  t.test(`${fixture.name}: delete, and compare-and-delete only while the value is unchanged`, quickly, async (t) => {
    const { store, peer, ns } = await open(t)
    const key = ns.key('token')
    await store.set(key, Buffer.from('token-1'))
    t.equal(await store.delete(key), true, 'deleted')
    t.equal(await store.delete(key), false, 'nothing left to delete')
    t.equal(await store.get(key), undefined)

    await store.set(key, Buffer.from('token-1'))
    await peer.set(key, Buffer.from('token-2'))
    t.equal(await store.deleteIf(key, Buffer.from('token-1')), false, 'a newer value is not deleted')
    t.equal((await store.get(key))?.toString(), 'token-2')
    t.equal(await store.deleteIf(key, Buffer.from('token-2')), true, 'the rejected value is deleted')
    t.equal(await store.get(key), undefined)
    t.equal(await store.deleteIf(key, Buffer.from('token-2')), false, 'absent: nothing deleted')
  })

  t.test(`${fixture.name}: compare-and-swap replaces only an unchanged value, and keeps its TTL`, quickly, async (t) => {
    const { store, peer, ns } = await open(t)
    const key = ns.key('credentials')
    await store.set(key, Buffer.from('v1'), 200)
    t.equal(await peer.replaceIf(key, Buffer.from('other'), Buffer.from('v2')), false, 'a changed value is left alone')
    t.equal(await peer.replaceIf(key, Buffer.from('v1'), Buffer.from('v2')), true, 'replaced')
    t.equal((await store.get(key))?.toString(), 'v2')
    t.ok(await eventually(async () => await store.get(key) === undefined, 2_000), 'the TTL of the replaced value still runs')
    t.equal(await store.replaceIf(key, Buffer.from('v2'), Buffer.from('v3')), false, 'absent: nothing replaced')
    t.equal(await store.get(key), undefined, 'and nothing created')
  })

  t.test(`${fixture.name}: counters increment atomically across instances and expire with their window`, quickly, async (t) => {
    const { store, peer, ns } = await open(t)
    const key = ns.key('rate', 'caller')
    const counts = await Promise.all(Array.from({ length: 10 }, async (_, i) => await (i % 2 === 0 ? store : peer).increment(key, SHORT_TTL_MS)))
    t.same(counts.map((c) => c.count).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'no increment lost, none counted twice')
    for (const { ttlMs } of counts) t.ok(ttlMs > 0 && ttlMs <= SHORT_TTL_MS, `ttl ${ttlMs} within the window`)
    t.ok(await eventually(async () => (await store.increment(key, 60_000)).count === 1, 2_000), 'a new window starts at 1 once the old one expired')
    t.ok((await peer.increment(key, SHORT_TTL_MS)).ttlMs > SHORT_TTL_MS, 'a later increment does not shorten the running window')
    await t.rejects(store.increment(key, 0), RangeError)
  })

  t.test(`${fixture.name}: waitUntilUp answers at once when connected; onUp can be stopped`, quickly, async (t) => {
    const { store } = await open(t)
    t.equal(await store.waitUntilUp(1_000), true)
    const stop = store.onUp(() => {})
    t.type(stop, 'function')
    stop()
    await store.close()
    t.equal(await store.waitUntilUp(10), false, 'never once closed')
  })

  t.test(`${fixture.name}: a lock is exclusive and only its holder releases it`, quickly, async (t) => {
    const { store, peer, ns } = await open(t)
    const mine = store.lock(ns.key('lock', 'register'))
    const theirs = peer.lock(ns.key('lock', 'register'))
    t.equal(mine.key, ns.key('lock', 'register'))
    t.equal(await mine.obtain(5_000), true, 'obtained')
    t.equal(await theirs.obtain(5_000), false, 'another instance cannot')
    t.equal(await mine.obtain(5_000), false, 'obtaining again is not re-entrant')
    t.equal(await theirs.release(), false, 'a non-holder cannot release')
    t.equal(await theirs.refresh(5_000), false, 'a non-holder cannot extend')
    t.equal(await theirs.obtain(5_000), false, 'still held')
    t.equal(await mine.release(), true, 'the holder releases')
    t.equal(await mine.release(), false, 'once')
    t.equal(await theirs.obtain(5_000), true, 'free again')
    const concurrent = await Promise.all(Array.from({ length: 10 }, async (_, i) => await (i % 2 === 0 ? store : peer).lock(ns.key('lock', 'race')).obtain(5_000)))
    t.equal(concurrent.filter(Boolean).length, 1, 'ten at once: one wins')
  })

  t.test(`${fixture.name}: a lock expires, and its old holder can then neither extend nor release the new one`, quickly, async (t) => {
    const { store, peer, ns } = await open(t)
    const stale = store.lock(ns.key('lock', 'token'))
    const next = peer.lock(ns.key('lock', 'token'))
    t.equal(await stale.obtain(60), true)
    t.ok(await eventually(async () => await next.obtain(5_000), 2_000), 'obtainable once the TTL has passed')
    t.equal(await stale.refresh(5_000), false, 'the old holder cannot extend')
    t.equal(await stale.release(), false, 'nor release the new holder\'s lock')
    t.equal(await store.lock(ns.key('lock', 'token')).obtain(5_000), false, 'the new holder still holds it')
  })

  t.test(`${fixture.name}: refresh extends a held lock`, quickly, async (t) => {
    const { store, peer, ns } = await open(t)
    const holder = store.lock(ns.key('lock', 'slow'))
    t.equal(await holder.obtain(SHORT_TTL_MS), true)
    t.equal(await holder.refresh(5_000), true, 'extended while held')
    await new Promise((resolve) => setTimeout(resolve, SHORT_TTL_MS + 200))
    t.equal(await peer.lock(ns.key('lock', 'slow')).obtain(5_000), false, 'still held past the first TTL')
    await t.rejects(holder.refresh(0), RangeError)
    await t.rejects(holder.obtain(-5), RangeError)
  })

  t.test(`${fixture.name}: notifications reach every subscriber until it unsubscribes`, quickly, async (t) => {
    const { store, peer, ns } = await open(t)
    const channel = ns.channel('token')
    const seen: string[] = []
    const seenByPeer: string[] = []
    const unsubscribe = await store.subscribe(channel, (m) => { seen.push(m.toString()) })
    const unsubscribePeer = await peer.subscribe(channel, (m) => { seenByPeer.push(m.toString()) })
    await peer.subscribe(ns.channel('other'), (m) => { seenByPeer.push(`other:${m.toString()}`) })
    await peer.publish(channel, Buffer.from('new-token-1'))
    t.ok(await eventually(() => seen.length === 1 && seenByPeer.length === 1, 2_000), 'delivered to both instances')
    t.same(seen, ['new-token-1'])
    await unsubscribe()
    await store.publish(channel, Buffer.from('new-token-2'))
    t.ok(await eventually(() => seenByPeer.length === 2, 2_000))
    t.same(seenByPeer, ['new-token-1', 'new-token-2'], 'the other channel heard nothing')
    t.same(seen, ['new-token-1'], 'nothing after unsubscribing')
    await unsubscribePeer()
    await unsubscribePeer()
  })

  t.test(`${fixture.name}: a throwing handler does not stop the other handlers`, quickly, async (t) => {
    const { store, ns } = await open(t)
    const seen: string[] = []
    await store.subscribe(ns.channel('c'), () => { throw new Error('handler bug') })
    await store.subscribe(ns.channel('c'), (m) => { seen.push(m.toString()) })
    await store.publish(ns.channel('c'), Buffer.from('m'))
    t.ok(await eventually(() => seen.length === 1, 2_000))
  })

  t.test(`${fixture.name}: stats count operations; a closed store refuses everything`, quickly, async (t) => {
    const { store, ns } = await open(t)
    await store.ping()
    await store.get(ns.key('a'))
    const stats = store.stats()
    t.equal(stats.up, true)
    t.ok(stats.operations >= 2, 'operations counted')
    t.equal(stats.errors, 0)
    t.ok(stats.latencyMs.count >= 2 && stats.latencyMs.total >= stats.latencyMs.max && stats.latencyMs.max >= 0)
    await store.close()
    t.equal(store.stats().up, false, 'down once closed')
    const lock = store.lock(ns.key('lock'))
    for (const [name, operation] of Object.entries({
      get: async () => await store.get(ns.key('a')),
      set: async () => { await store.set(ns.key('a'), Buffer.from('v')) },
      setIfAbsent: async () => await store.setIfAbsent(ns.key('a'), Buffer.from('v')),
      delete: async () => await store.delete(ns.key('a')),
      deleteIf: async () => await store.deleteIf(ns.key('a'), Buffer.from('v')),
      replaceIf: async () => await store.replaceIf(ns.key('a'), Buffer.from('v'), Buffer.from('w')),
      increment: async () => await store.increment(ns.key('a'), 1_000),
      'lock.obtain': async () => await lock.obtain(1_000),
      'lock.refresh': async () => await lock.refresh(1_000),
      'lock.release': async () => await lock.release(),
      subscribe: async () => await store.subscribe(ns.channel('c'), () => {}),
      publish: async () => { await store.publish(ns.channel('c'), Buffer.from('m')) },
      ping: async () => { await store.ping() }
    })) {
      await t.rejects(async () => { await operation() }, StoreUnavailableError, `${name} rejects`)
    }
    t.ok(store.stats().errors >= 13, 'failures counted')
    await store.close()
  })

  if (fixture.sealed) sealedContract(t, fixture, open)
  if (fixture.name.includes('redis')) backendDownContract(t, fixture, open)
}

type Open = (t: Test, keys?: readonly StateKey[]) => Promise<{ backend: Backend, store: StateStore, peer: StateStore, wrap: (inner: StateStore, keys?: readonly StateKey[]) => StateStore, keys: readonly StateKey[], ns: ReturnType<typeof stateNamespace> }>

function sealedContract (t: Test, fixture: StoreFixture, open: Open): void {
  t.test(`${fixture.name}: only ciphertext reaches the backend`, quickly, async (t) => {
    const { backend, store, ns } = await open(t)
    const secret = 'client_secret=s3cr3t-value-that-must-not-leak'
    await store.set(ns.key('credentials'), Buffer.from(secret))
    await store.set(ns.key('credentials-2'), Buffer.from(secret))
    const raw = await backend.raw(ns.key('credentials'))
    const raw2 = await backend.raw(ns.key('credentials-2'))
    t.ok(raw !== undefined && raw2 !== undefined)
    for (const bytes of [raw, raw2]) {
      t.notOk(bytes?.includes(secret), 'no plaintext at rest')
      t.notOk(bytes?.includes('s3cr3t'), 'not even part of it')
      t.notOk(bytes?.includes(Buffer.from(secret).toString('base64')), 'nor its base64')
    }
    t.notOk(raw?.equals(raw2 ?? Buffer.alloc(0)), 'a fresh IV per write: equal values do not look equal')
    t.equal(raw?.length, 1 + 8 + 12 + 16 + secret.length, 'version, key id, IV, tag, ciphertext')

    const messages: Buffer[] = []
    await backend.rawSubscribe(ns.channel('token'), (m) => { messages.push(m) })
    await store.publish(ns.channel('token'), Buffer.from(secret))
    t.ok(await eventually(() => messages.length === 1, 2_000))
    t.notOk(messages[0]?.includes('s3cr3t'), 'notifications are sealed too')
  })

  t.test(`${fixture.name}: key rotation: the first key seals, every key opens`, quickly, async (t) => {
    const oldKey = stateKey(randomBytes(32))
    const newKey = stateKey(randomBytes(32))
    const { backend, store: oldStore, wrap, ns } = await open(t, [oldKey])
    await oldStore.set(ns.key('credentials'), Buffer.from('written-with-the-old-key'))
    const rotated = wrap(await backend.connect(), [newKey, oldKey])
    t.equal((await rotated.get(ns.key('credentials')))?.toString(), 'written-with-the-old-key', 'old values still open')
    t.ok(await eventually(async () => (await backend.raw(ns.key('credentials')))?.subarray(1, 9).equals(newKey.id) === true, 2_000), 'and are re-sealed under the new key as they are read')
    // Redis holds the new value a moment before the reply that counts it reaches this process.
    t.ok(await eventually(() => rotated.stats().resealed === 1, 2_000), 'counted')
    t.equal((await rotated.get(ns.key('credentials')))?.toString(), 'written-with-the-old-key', 'the same value')
    t.equal(rotated.stats().resealed, 1, 'once')
    await oldStore.set(ns.key('old-again'), Buffer.from('x'))
    await rotated.set(ns.key('token'), Buffer.from('written-with-the-new-key'))
    t.same((await backend.raw(ns.key('token')))?.subarray(1, 9), newKey.id, 'new values carry the new key id')
    const newOnly = wrap(await backend.connect(), [newKey])
    t.equal((await newOnly.get(ns.key('token')))?.toString(), 'written-with-the-new-key')
    t.equal((await newOnly.get(ns.key('credentials')))?.toString(), 'written-with-the-old-key', 'once re-sealed, the old key can go')
    const error = await newOnly.get(ns.key('old-again')).catch((err: unknown) => err)
    t.type(error, StateSealError, 'a value sealed with a dropped key is a typed error')
    t.match(error, { code: 'CMU_PROXY_STATE_UNSEALABLE', reason: 'unknown-key', key: ns.key('old-again') })
    t.match((error as Error).message, new RegExp(`key id ${oldKey.id.toString('hex')}`), 'names the key id it needs')
    t.equal(newOnly.stats().unsealFailures, 1, 'counted')
  })

  t.test(`${fixture.name}: a two-phase rotation keeps every value readable while old and new instances coexist`, quickly, async (t) => {
    const oldKey = stateKey(randomBytes(32))
    const newKey = stateKey(randomBytes(32))
    const { backend, store: old, wrap, ns } = await open(t, [oldKey])
    const keyIdOf = async (name: string): Promise<string | undefined> => (await backend.raw(ns.key(name)))?.subarray(1, 9).toString('hex')
    const read = async (store: StateStore, name: string): Promise<string | undefined> => (await store.get(ns.key(name)))?.toString()

    // Phase 1: OLD,NEW rolls out while instances with OLD alone still run. OLD still seals.
    const phase1 = wrap(await backend.connect(), [oldKey, newKey])
    await old.set(ns.key('credentials'), Buffer.from('from-an-old-instance'))
    await phase1.set(ns.key('token'), Buffer.from('from-a-phase-1-instance'))
    t.equal(await read(phase1, 'credentials'), 'from-an-old-instance')
    t.equal(await read(old, 'token'), 'from-a-phase-1-instance', 'an old instance opens what a phase-1 instance wrote')
    await phase1.ping()
    t.same([await keyIdOf('credentials'), await keyIdOf('token')], [oldKey.id.toString('hex'), oldKey.id.toString('hex')], 'a value sealed with the first key is never re-sealed with a later one')
    t.equal(phase1.stats().resealed, 0)

    // Phase 2: NEW,OLD rolls out while phase-1 instances still run. Both open everything.
    const phase2 = wrap(await backend.connect(), [newKey, oldKey])
    await phase2.set(ns.key('cache'), Buffer.from('from-a-phase-2-instance'))
    t.equal(await keyIdOf('cache'), newKey.id.toString('hex'), 'NEW seals')
    t.equal(await read(phase1, 'cache'), 'from-a-phase-2-instance', 'a phase-1 instance opens it')
    t.equal(await read(phase2, 'credentials'), 'from-an-old-instance', 'a phase-2 instance opens what OLD sealed...')
    t.ok(await eventually(async () => await keyIdOf('credentials') === newKey.id.toString('hex'), 2_000), '...and re-seals it with NEW')
    // (and may re-seal it back under OLD, their first key: harmless while both lists open both)
    t.equal(await read(phase1, 'credentials'), 'from-an-old-instance', 'which the phase-1 instances still open')
    await phase1.ping()

    // Phase 3: NEW alone, once no phase-1 instance is left and the phase-2 ones have read
    // every long-lived value again (each instance re-reads the credentials every 10 s).
    for (const name of ['credentials', 'token', 'cache']) {
      t.ok((await read(phase2, name)) !== undefined)
      t.ok(await eventually(async () => await keyIdOf(name) === newKey.id.toString('hex'), 2_000), `${name} now sealed with NEW`)
    }
    const phase3 = wrap(await backend.connect(), [newKey])
    t.same([await read(phase3, 'credentials'), await read(phase3, 'token'), await read(phase3, 'cache')], ['from-an-old-instance', 'from-a-phase-1-instance', 'from-a-phase-2-instance'])
  })

  t.test(`${fixture.name}: a wrong key, a moved value, or an unsealed value is a typed error, never garbage`, quickly, async (t) => {
    const { backend, store, wrap, ns } = await open(t)
    await store.set(ns.key('token'), Buffer.from('the-token'))
    const stranger = wrap(await backend.connect(), [stateKey(randomBytes(32))])
    await t.rejects(stranger.get(ns.key('token')), { name: 'StateSealError', reason: 'unknown-key' }, 'another key list')
    await t.rejects(stranger.deleteIf(ns.key('token'), Buffer.from('the-token')), { name: 'StateSealError', reason: 'unknown-key' }, 'compare-and-delete cannot compare')
    await t.rejects(stranger.replaceIf(ns.key('token'), Buffer.from('the-token'), Buffer.from('x')), { name: 'StateSealError', reason: 'unknown-key' }, 'nor compare-and-swap')
    t.equal((await store.get(ns.key('token')))?.toString(), 'the-token', 'and deleted nothing')

    const sealed = await backend.raw(ns.key('token'))
    await backend.rawSet(ns.key('moved'), sealed ?? Buffer.alloc(0))
    await t.rejects(store.get(ns.key('moved')), { name: 'StateSealError', reason: 'not-authentic' }, 'the key is authenticated: a copied value does not open')
    const flipped = Buffer.from(sealed ?? Buffer.alloc(0))
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 1
    await backend.rawSet(ns.key('token'), flipped)
    await t.rejects(store.get(ns.key('token')), { name: 'StateSealError', reason: 'not-authentic' }, 'an altered value does not open')
    await backend.rawSet(ns.key('plain'), Buffer.from('{"client_secret":"x"}'))
    await t.rejects(store.get(ns.key('plain')), { name: 'StateSealError', reason: 'malformed' }, 'an unsealed value is refused')
    await backend.rawSet(ns.key('short'), Buffer.of(1, 2, 3))
    await t.rejects(store.get(ns.key('short')), { name: 'StateSealError', reason: 'malformed' })
    t.equal(store.stats().unsealFailures, 4)
    t.equal(stranger.stats().unsealFailures, 3)
  })

  t.test(`${fixture.name}: notifications sealed with another key are dropped, not delivered`, quickly, async (t) => {
    const { backend, store, wrap, ns } = await open(t)
    const stranger = wrap(await backend.connect(), [stateKey(randomBytes(32))])
    const seen: string[] = []
    await store.subscribe(ns.channel('token'), (m) => { seen.push(m.toString()) })
    await stranger.publish(ns.channel('token'), Buffer.from('from-another-key'))
    await store.publish(ns.channel('token'), Buffer.from('from-the-fleet'))
    t.ok(await eventually(() => seen.length === 1, 2_000))
    await new Promise((resolve) => setTimeout(resolve, 30))
    t.same(seen, ['from-the-fleet'])
    t.equal(store.stats().unsealFailures, 1)
  })
}

function backendDownContract (t: Test, fixture: StoreFixture, open: Open): void {
  t.test(`${fixture.name}: Redis killed: every operation rejects at once, never "absent"; after a restart it works again`, quickly, async (t) => {
    const { backend, store, peer, ns } = await open(t)
    const { redis, commandTimeoutMs } = serverOf(backend)
    await store.set(ns.key('token'), Buffer.from('t'))
    const seen: string[] = []
    await peer.subscribe(ns.channel('token'), (m) => { seen.push(m.toString()) })

    await redis.kill()
    t.ok(await eventually(() => !store.stats().up, 1_000), 'reported down')
    const lock = store.lock(ns.key('lock'))
    for (const [name, operation] of Object.entries({
      get: async () => await store.get(ns.key('token')),
      set: async () => { await store.set(ns.key('token'), Buffer.from('v'), 1_000) },
      deleteIf: async () => await store.deleteIf(ns.key('token'), Buffer.from('t')),
      'lock.obtain': async () => await lock.obtain(1_000),
      publish: async () => { await store.publish(ns.channel('token'), Buffer.from('m')) },
      ping: async () => { await store.ping() }
    })) {
      const started = performance.now()
      await t.rejects(async () => { await operation() }, { name: 'StoreUnavailableError', code: 'CMU_PROXY_STORE_UNAVAILABLE' }, `${name} rejects`)
      t.ok(performance.now() - started < commandTimeoutMs + SCHEDULING_SLACK_MS, `${name} within the command timeout`)
    }
    const late = store.subscribe(ns.channel('late'), (m) => { seen.push(`late:${m.toString()}`) })
    t.ok(typeof (await late) === 'function', 'a subscription made while down is kept')

    await redis.restart()
    const answers = async (s: StateStore): Promise<boolean> => await s.ping().then(() => true, () => false)
    t.ok(await eventually(async () => await answers(store) && await answers(peer), 3_000), 'both reconnect by themselves')
    t.equal(await store.get(ns.key('token')), undefined, 'Redis came back empty: now absent, which is the truth')
    await store.set(ns.key('token'), Buffer.from('again'))
    t.equal((await peer.get(ns.key('token')))?.toString(), 'again')
    // Subscriptions come back with the connection: publish until one lands.
    t.ok(await eventually(async () => {
      await store.publish(ns.channel('token'), Buffer.from('after'))
      await store.publish(ns.channel('late'), Buffer.from('after'))
      return seen.includes('after') && seen.includes('late:after')
    }, 3_000), 'notifications flow again, for old and new subscriptions')
    t.ok(store.stats().reconnects >= 1, 'reconnect counted')
  })

  t.test(`${fixture.name}: a hung Redis: commands time out within the configured timeout`, quickly, async (t) => {
    const { backend, store, ns } = await open(t)
    const { redis, commandTimeoutMs } = serverOf(backend)
    await store.set(ns.key('token'), Buffer.from('t'))
    redis.pause()
    t.teardown(() => { redis.resume() })
    for (let i = 0; i < 3; i++) {
      const started = performance.now()
      await t.rejects(store.get(ns.key('token')), { name: 'StoreUnavailableError', message: /no answer within/ })
      const elapsed = performance.now() - started
      t.ok(elapsed >= commandTimeoutMs - 5 && elapsed < commandTimeoutMs + SCHEDULING_SLACK_MS, `gave up after ${Math.round(elapsed)} ms`)
    }
    t.equal(store.stats().up, false, 'three timeouts in a row: reported down though the socket is open')
    t.ok(store.stats().timeouts >= 3)
    const started = performance.now()
    await t.rejects(store.get(ns.key('token')), { name: 'StoreUnavailableError', message: /not answering/ })
    t.ok(performance.now() - started < commandTimeoutMs / 2, 'from then on refused at once: callers stop paying a timeout each')
    redis.resume()
    t.ok(await eventually(async () => (await store.get(ns.key('token')).catch(() => undefined))?.toString() === 't', 3_000), 'answers again')
    t.equal(store.stats().up, true)
  })
}

function serverOf (backend: Backend): NonNullable<Backend['server']> {
  if (backend.server === undefined) throw new Error('this contract needs a backend that can fail')
  return backend.server
}
