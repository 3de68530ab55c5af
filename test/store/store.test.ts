// The store contract against every store: memory, Redis, and both sealed;
// then what only Redis can do wrong (down at start, error replies, close
// while hung). Redis is a real redis-server on a loopback port (redis-server.ts).
import { randomBytes, randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { stateKey } from '../../src/store/encryption-keys.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { stateNamespace } from '../../src/store/namespace.js'
import { RedisStore, type RedisStoreOptions } from '../../src/store/redis-store.js'
import { SealedStore } from '../../src/store/sealed-store.js'
import type { StateStore } from '../../src/store/state-store.js'
import { capturedLogger, eventually } from '../helpers/app.js'
import { STARTUP_DEADLINE_MS } from '../helpers/processes.js'
import { rawRedisClient, standalone, startRedisServer, type RedisServer } from '../helpers/redis-server.js'
import { storeContract, type Backend } from '../helpers/store-contract.js'

/** Long enough that a loaded machine (issue 18) answers within it; the hung-server tests wait it out a few times. */
const COMMAND_TIMEOUT_MS = 1_000
/** Quick reconnects keep the restart tests short. */
const FAST: Omit<RedisStoreOptions, 'redis'> = { commandTimeoutMs: COMMAND_TIMEOUT_MS, reconnectBaseMs: 10, reconnectMaxMs: 100, connectTimeoutMs: 500 }

function memoryBackend (t: Test): Backend {
  const memory = new MemoryStore()
  t.teardown(async () => { await memory.close() })
  return {
    connect: async () => memory,
    raw: async (key) => await memory.get(key),
    rawSet: async (key, value) => { await memory.set(key, value) },
    rawSubscribe: async (channel, handler) => { await memory.subscribe(channel, handler) }
  }
}

const rawClient = rawRedisClient

async function openRedisStore (t: Test, redis: RedisServer, options: Partial<RedisStoreOptions> = {}): Promise<RedisStore> {
  const store = new RedisStore({ redis: standalone(redis), ...FAST, ...options })
  t.teardown(async () => { await store.close() })
  return store
}

async function redisBackend (t: Test, redis: RedisServer): Promise<Backend> {
  const raw = await rawClient(t, redis)
  const subscriber = raw.duplicate()
  subscriber.on('error', () => {})
  t.teardown(() => { subscriber.destroy() })
  return {
    connect: async () => {
      const store = await openRedisStore(t, redis)
      t.ok(await store.waitUntilUp(STARTUP_DEADLINE_MS), 'connected')
      return store
    },
    raw: async (key) => (await raw.get(key)) ?? undefined,
    rawSet: async (key, value) => { await raw.set(key, value) },
    rawSubscribe: async (channel, handler) => {
      if (!subscriber.isOpen) await subscriber.connect()
      await subscriber.subscribe(channel, handler, true)
    },
    server: { redis, commandTimeoutMs: COMMAND_TIMEOUT_MS }
  }
}

t.test('the store contract in memory', async (t) => {
  storeContract(t, { name: 'memory', sealed: false, backend: async (t) => memoryBackend(t) })
  storeContract(t, { name: 'sealed(memory)', sealed: true, backend: async (t) => memoryBackend(t) })
})

t.test('the store contract over Redis', async (t) => {
  const redis = await startRedisServer(t)
  storeContract(t, { name: 'redis', sealed: false, backend: async (t) => await redisBackend(t, redis) })
  storeContract(t, { name: 'sealed(redis)', sealed: true, backend: async (t) => await redisBackend(t, redis) })
})

t.test('redis: down at start, operations reject at once; it connects when Redis appears', async (t) => {
  const redis = await startRedisServer(t)
  await redis.kill()
  const { logger, lines } = capturedLogger()
  // A long command timeout: what is measured here is that nothing waits for it.
  const store = await openRedisStore(t, redis, { logger, commandTimeoutMs: 5_000 })
  const ns = stateNamespace('test:', { clientId: randomUUID() })
  t.equal(await store.waitUntilUp(50), false, 'not up')
  const started = performance.now()
  await t.rejects(store.get(ns.key('a')), { name: 'StoreUnavailableError', operation: 'get', message: /offline/ })
  t.ok(performance.now() - started < 1_000, 'refused at once while disconnected: no offline queue')
  const unsubscribe = await store.subscribe(ns.channel('c'), () => {})
  t.equal(store.stats().up, false)

  await redis.restart()
  t.ok(await store.waitUntilUp(STARTUP_DEADLINE_MS), 'connected once Redis is there')
  t.equal(await store.waitUntilUp(10), true, 'at once when already up')
  await store.set(ns.key('a'), Buffer.from('v'))
  t.equal((await store.get(ns.key('a')))?.toString(), 'v')
  t.equal(store.stats().reconnects, 0, 'a first connection is not a reconnect')
  await unsubscribe()
  const logged = lines.map((l) => JSON.parse(l) as { level: number, msg: string, redis?: string })
  const warnings = logged.filter((l) => l.level === 40)
  t.match(warnings, [{ msg: 'redis unavailable; serving from local state and retrying', redis: `redis://127.0.0.1:${redis.port}` }], 'the outage is logged once, not once per retry')
  t.ok(logged.some((l) => l.msg === 'redis connected'))
})

t.test('redis: an error reply (wrong type) is unavailability with the reply\'s code, not absence', async (t) => {
  const redis = await startRedisServer(t)
  const raw = await rawClient(t, redis)
  await raw.lPush('a-list', 'x')
  const store = await openRedisStore(t, redis)
  t.ok(await store.waitUntilUp(STARTUP_DEADLINE_MS))
  await t.rejects(store.get('a-list'), { name: 'StoreUnavailableError', message: /Redis answered WRONGTYPE$/ })
  t.equal(store.stats().errors, 1)
  t.equal(store.stats().up, true, 'an error reply is not an outage')
})

t.test('redis: close does not wait on a hung server; subscriptions end with the store', async (t) => {
  const redis = await startRedisServer(t)
  const store = await openRedisStore(t, redis)
  t.ok(await store.waitUntilUp(STARTUP_DEADLINE_MS))
  await store.subscribe('c', () => {})
  const pending = store.get('k').catch((err: unknown) => err)
  redis.pause()
  t.teardown(() => { redis.resume() })
  const hung = store.get('k').catch((err: unknown) => err)
  const started = performance.now()
  await store.close()
  t.ok(performance.now() - started < COMMAND_TIMEOUT_MS * 3, 'closed within the command timeout')
  await pending
  t.type(await hung, Error, 'the hung command was settled')
  await store.close()
  await t.rejects(store.subscribe('c', () => {}), { name: 'StoreUnavailableError' })
  t.equal(await store.waitUntilUp(10), false)
})

t.test('redis: a hung server stays down (background probes neither fill the queue nor count as answers) and the socket is made anew', async (t) => {
  const redis = await startRedisServer(t)
  const { logger, lines } = capturedLogger('debug')
  // A small queue, so that unanswered probes would fill it within the test.
  const store = await openRedisStore(t, redis, { commandTimeoutMs: 100, maxPendingCommands: 3, logger })
  t.ok(await store.waitUntilUp(STARTUP_DEADLINE_MS))
  redis.pause()
  t.teardown(() => { redis.resume() })
  for (let i = 0; i < 3; i++) await t.rejects(store.get('k'), { message: /no answer within 100 ms/ })
  t.equal(store.stats().up, false, 'down after three timeouts')
  const seenUp: boolean[] = []
  const until = performance.now() + 2_500
  while (performance.now() < until) {
    seenUp.push(store.stats().up)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.notOk(seenUp.includes(true), `reported down for as long as Redis is hung (${seenUp.length} samples)`)
  const reconnects = lines.filter((l) => /"msg":"redis is not answering on this connection: connecting again"/.test(l)).length
  t.ok(reconnects >= 2, `the hung connection was dropped and made anew, and again when the new one got no answer either (${reconnects} times)`)
  redis.resume()
  t.ok(await eventually(async () => await store.ping().then(() => true, () => false), 3_000), 'answers again once Redis does')
  t.equal(store.stats().up, true)
  t.ok(store.stats().reconnects >= 1, 'counted as a reconnection')
})

t.test('redis: a burst that overfills the queue of a server that answers sheds commands, and the store stays up', async (t) => {
  const redis = await startRedisServer(t)
  const { logger, lines } = capturedLogger()
  const store = await openRedisStore(t, redis, { commandTimeoutMs: 1_000, maxPendingCommands: 3, logger })
  t.ok(await store.waitUntilUp(STARTUP_DEADLINE_MS))
  await store.get('k')
  const results = await Promise.all(Array.from({ length: 200 }, async () => await store.get('k').then(() => 'answered', () => 'shed')))
  t.ok(results.includes('shed'), 'the queue overflowed')
  t.ok(results.includes('answered'), 'and the server answered the rest')
  t.equal(store.stats().up, true, 'not marked down')
  t.notOk(lines.some((l) => /connecting again/.test(l)), 'and the connection was not torn down')
  t.equal(await store.get('k'), undefined, 'it answers the next command')
})

t.test('redis: the password authenticates (REDIS_PASSWORD_FILE); a wrong one is said at once, never shown', async (t) => {
  const redis = await startRedisServer(t)
  const raw = await rawClient(t, redis)
  await raw.configSet('requirepass', 'a-test-password')
  const { logger, lines } = capturedLogger()
  // A connect timeout a loaded machine cannot run into: the reason logged must be the password.
  const refused = await openRedisStore(t, redis, { redis: standalone(redis, { password: 'wrong-password' }), logger, connectTimeoutMs: 30_000 })
  const accepted = await openRedisStore(t, redis, { redis: standalone(redis, { password: 'a-test-password' }) })
  t.ok(await accepted.waitUntilUp(STARTUP_DEADLINE_MS))
  await accepted.set('k', Buffer.from('v'))
  const started = performance.now()
  t.equal(await refused.waitUntilUp(5_000), false, 'a wrong password: the connection never becomes ready')
  t.ok(performance.now() - started < 2_000, 'and waitUntilUp says so without waiting out its budget')
  t.match(refused.stats().lastProblem, { reason: /^Redis answered WRONGPASS: wrong user name or password/, configuration: true })
  await t.rejects(refused.get('k'), { name: 'StoreUnavailableError' })
  t.ok(await eventually(() => lines.length > 0), 'logged')
  t.match(lines.map((l) => JSON.parse(l)), [{ msg: /^redis unavailable/, redis: `redis://127.0.0.1:${redis.port}`, reason: /WRONGPASS/ }], 'logged once, with the reason')
  t.notOk(lines.join('\n').includes('wrong-password'), 'never the password')
})

t.test('memory: bounded by entries; TTLs follow the injected clock', async (t) => {
  let now = 1_000_000
  const store: StateStore = new MemoryStore({ maxEntries: 3, now: () => now })
  t.teardown(async () => { await store.close() })
  for (const key of ['a', 'b', 'c', 'd']) await store.set(key, Buffer.from(key))
  t.equal(await store.get('a'), undefined, 'the least recently used went')
  t.equal((await store.get('d'))?.toString(), 'd')
  await store.set('ttl', Buffer.from('v'), 1_000)
  now += 999
  t.equal((await store.get('ttl'))?.toString(), 'v')
  now += 2
  t.equal(await store.get('ttl'), undefined, 'expired once the TTL has passed')
})

t.test('sealed: a sealed store needs a key, and owns the store it wraps', async (t) => {
  const memory = new MemoryStore()
  t.throws(() => new SealedStore(memory, []), RangeError)
  const sealed = new SealedStore(memory, [stateKey(randomBytes(32))])
  await sealed.ping()
  await sealed.close()
  await t.rejects(memory.get('k'), { name: 'StoreUnavailableError' }, 'closing the sealed store closed the inner one')
})
