// The store over Redis behind Sentinel (node-redis's Sentinel client), with
// real redis-server and redis-sentinel processes: the store contract, and a
// failover under traffic, which callers of the store see only as
// StoreUnavailableError for the moment of the switch, after which the store
// writes to the new master.
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { StoreUnavailableError } from '../../src/store/errors.js'
import { RedisStore, type RedisStoreOptions } from '../../src/store/redis-store.js'
import { capturedLogger, eventually } from '../helpers/app.js'
import { rawNodeClient, startSentinelSetup, type SentinelSetup } from '../helpers/redis-topologies.js'
import { storeContract, type Backend } from '../helpers/store-contract.js'

const FAST: Omit<RedisStoreOptions, 'redis'> = { commandTimeoutMs: 500, reconnectBaseMs: 10, reconnectMaxMs: 200, connectTimeoutMs: 500 }

async function openStore (t: Test, setup: SentinelSetup, options: Partial<RedisStoreOptions> = {}): Promise<RedisStore> {
  const store = new RedisStore({ redis: setup.redis, ...FAST, ...options })
  t.teardown(async () => { await store.close() })
  t.ok(await store.waitUntilUp(10_000), 'connected through the sentinel')
  return store
}

async function sentinelBackend (t: Test, setup: SentinelSetup): Promise<Backend> {
  const raw = await rawNodeClient(t, await setup.master())
  const subscriber = raw.duplicate()
  subscriber.on('error', () => {})
  t.teardown(() => { subscriber.destroy() })
  return {
    connect: async () => await openStore(t, setup),
    raw: async (key) => (await raw.get(key)) ?? undefined,
    rawSet: async (key, value) => { await raw.set(key, value) },
    rawSubscribe: async (channel, handler) => {
      if (!subscriber.isOpen) await subscriber.connect()
      await subscriber.subscribe(channel, handler, true)
    }
  }
}

t.test('the store contract over Sentinel', async (t) => {
  const setup = await startSentinelSetup(t)
  // Sealing is a decorator over any store: its contract runs over one Redis (store.test.ts).
  storeContract(t, { name: 'sentinel', sealed: false, backend: async (t) => await sentinelBackend(t, setup) })
})

t.test('sentinel: a failover under traffic: callers see StoreUnavailableError at most, for the switch only; then the store writes to the new master', async (t) => {
  const setup = await startSentinelSetup(t)
  const { logger, lines } = capturedLogger()
  const store = await openStore(t, setup, { commandTimeoutMs: 200, logger })
  const notified: string[] = []
  await store.subscribe('events', (m) => { notified.push(m.toString()) })
  const failures: unknown[] = []
  /** Writes the old master accepted during the switch and never replicated (Redis replication is asynchronous). */
  const lost: string[] = []
  let answered = 0
  let running = true
  let n = 0
  const traffic = async (): Promise<void> => {
    while (running) {
      const key = `k${n++}`
      try {
        await store.set(key, Buffer.from(key), 60_000)
        const read = await store.get(key)
        if (read === undefined) lost.push(key)
        else if (read.toString() !== key) failures.push(new Error(`read ${read.toString()} back for ${key}`))
        answered++
      } catch (err) {
        failures.push(err)
      }
      await sleep(5)
    }
  }
  const workers = [traffic(), traffic(), traffic()]
  t.ok(await eventually(() => answered > 30, 10_000), 'traffic flows')
  const before = await setup.master()
  const after = await setup.failover()
  t.not(after.port, before.port, 'the replica is the master now')
  const newMaster = await rawNodeClient(t, after)
  t.ok(await eventually(async () => {
    const marker = `after-${Date.now()}`
    return await store.set(marker, Buffer.from('x')).then(async () => (await newMaster.get(marker))?.toString() === 'x', () => false)
  }, 15_000), 'the store writes to the new master')
  const settled = answered
  t.ok(await eventually(() => answered > settled + 30, 10_000), 'and traffic flows again')
  running = false
  await Promise.all(workers)
  t.same(failures.filter((err) => !(err instanceof StoreUnavailableError)), [], `every failure (${failures.length} of ${failures.length + answered}) is StoreUnavailableError, never a wrong value`)
  t.ok(lost.length <= 20, `a write made during the switch may be lost, as Redis replication allows (${lost.length}), never one made after it`)
  const afterSwitch = `after-switch-${Date.now()}`
  await store.set(afterSwitch, Buffer.from('kept'))
  t.equal((await newMaster.get(afterSwitch))?.toString(), 'kept')
  t.equal(store.stats().up, true)
  t.ok(await eventually(async () => {
    await store.publish('events', Buffer.from('after-failover'))
    return notified.includes('after-failover')
  }, 10_000), 'subscriptions moved to the new master')
  const warnings = lines.map((l) => JSON.parse(l) as { level: number, msg: string }).filter((l) => l.level >= 40)
  t.ok(warnings.length <= 1, `at most one warning for the switch (${warnings.map((w) => w.msg).join('; ')})`)
})
