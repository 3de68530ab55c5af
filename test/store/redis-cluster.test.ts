// The store over a Redis Cluster (node-redis's cluster client), with real
// --cluster-enabled redis-server nodes: the store contract with every key in
// one hash slot, as the fleet's namespace puts them; and a Cluster met with
// the wrong settings is refused with one clear line, never half used.
import { randomUUID } from 'node:crypto'
import { createCluster, RESP_TYPES } from '@redis/client'
import t, { type Test } from 'tap'
import { stateNamespace } from '../../src/store/namespace.js'
import { RedisStore, type RedisStoreOptions } from '../../src/store/redis-store.js'
import { capturedLogger } from '../helpers/app.js'
import { standalone, startRedisServer } from '../helpers/redis-server.js'
import { rawNodeClient, startCluster, type ClusterSetup } from '../helpers/redis-topologies.js'
import { storeContract, type Backend } from '../helpers/store-contract.js'

const FAST: Omit<RedisStoreOptions, 'redis'> = { commandTimeoutMs: 500, reconnectBaseMs: 10, reconnectMaxMs: 200, connectTimeoutMs: 500 }

async function openStore (t: Test, redis: RedisStoreOptions['redis'], options: Partial<RedisStoreOptions> = {}): Promise<RedisStore> {
  const store = new RedisStore({ redis, ...FAST, ...options })
  t.teardown(async () => { await store.close() })
  return store
}

/** node-redis's cluster client, to see what the store wrote without going through it. */
async function rawCluster (t: Test, cluster: ClusterSetup) {
  const client = createCluster({ rootNodes: [{ url: cluster.env.REDIS_URL }], RESP: 2 }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => { client.destroy() })
  return client
}

async function clusterBackend (t: Test, cluster: ClusterSetup): Promise<Backend> {
  const raw = await rawCluster(t, cluster)
  return {
    connect: async () => {
      const store = await openStore(t, cluster.redis)
      t.ok(await store.waitUntilUp(10_000), 'connected to the cluster')
      return store
    },
    raw: async (key) => (await raw.get(key)) ?? undefined,
    rawSet: async (key, value) => { await raw.set(key, value) },
    rawSubscribe: async (channel, handler) => { await raw.subscribe(channel, handler, true) }
  }
}

t.test('a Redis Cluster', async (t) => {
  const cluster = await startCluster(t)

  t.test('the store contract, every key in one hash slot', async (t) => {
    storeContract(t, { name: 'cluster', sealed: false, hashTag: true, backend: async (t) => await clusterBackend(t, cluster) })
  })

  t.test('an application\'s keys and channels share one slot, so its scripts and locks touch one node', async (t) => {
    const store = await openStore(t, cluster.redis)
    t.ok(await store.waitUntilUp(10_000))
    const ns = stateNamespace('cmu-proxy:', { softwareStatement: `a.${randomUUID()}.c` }, { hashTag: true })
    const names = ['credentials', 'token', 'lock', 'cache', 'rate']
    for (const name of names) await store.set(ns.key(name), Buffer.from(name))
    t.equal(await store.lock(ns.key('lock', 'token')).obtain(1_000), true)
    t.equal(await store.replaceIf(ns.key('token'), Buffer.from('token'), Buffer.from('token-2')), true, 'compare-and-swap (a script) on the key\'s node')
    const nodes = new Set(await Promise.all([...names.map((n) => ns.key(n)), ns.key('lock', 'token'), ns.channel('events')].map(async (key) => (await cluster.nodeFor(key)).port)))
    t.equal(nodes.size, 1, 'one node serves them all')
    const [port] = nodes
    const node = await rawNodeClient(t, { host: '127.0.0.1', port: port ?? 0 })
    t.equal((await node.get(ns.key('credentials')))?.toString(), 'credentials', 'and holds them')
  })

  t.test('a Cluster node under plain REDIS_URL (no REDIS_CLUSTER): refused with one clear line, never half used', async (t) => {
    const [seed] = cluster.nodes
    const { logger, lines } = capturedLogger()
    const store = await openStore(t, standalone({ port: seed?.port ?? 0 }), { logger })
    t.equal(await store.waitUntilUp(5_000), false, 'never up')
    t.match(store.stats(), { up: false, lastProblem: { reason: /REDIS_URL is a node of a Redis Cluster.*set REDIS_CLUSTER=true/, configuration: true } })
    const started = performance.now()
    await t.rejects(store.set('k', Buffer.from('v')), { name: 'StoreUnavailableError', message: /set REDIS_CLUSTER=true/ })
    t.ok(performance.now() - started < 100, 'refused at once')
    t.match(lines.map((l) => JSON.parse(l)), [{ level: 50, msg: /^redis is not usable with these settings/, reason: /REDIS_CLUSTER=true/ }], 'one error line')
  })

  t.test('an ACL user without INFO on a Cluster node: the first MOVED says the same', async (t) => {
    const [seed] = cluster.nodes
    const admin = await rawNodeClient(t, { host: '127.0.0.1', port: seed?.port ?? 0 })
    await admin.sendCommand(['ACL', 'SETUSER', 'no-info', 'on', '>no-info-password', '~*', '&*', '+@all', '-info'])
    const store = await openStore(t, standalone({ port: seed?.port ?? 0 }, { username: 'no-info', password: 'no-info-password' }))
    t.ok(await store.waitUntilUp(5_000), 'it looks like one Redis at first')
    let moved: unknown
    for (let i = 0; i < 50 && moved === undefined; i++) moved = await store.set(`key-${i}`, Buffer.from('v')).then(() => undefined, (err: unknown) => err)
    t.match(moved, { name: 'StoreUnavailableError', message: /Redis answered MOVED: REDIS_URL is a node of a Redis Cluster: set REDIS_CLUSTER=true/ })
    t.equal(store.stats().up, false, 'then it is down, for good')
    await t.rejects(store.get('key-0'), { message: /set REDIS_CLUSTER=true/ })
  })
})

t.test('REDIS_CLUSTER=true for a Redis that is no Cluster: refused with one clear line', async (t) => {
  const redis = await startRedisServer(t)
  const { logger, lines } = capturedLogger()
  const store = await openStore(t, { topology: { kind: 'cluster', seeds: [{ host: '127.0.0.1', port: redis.port }] }, target: redis.url }, { logger })
  t.equal(await store.waitUntilUp(5_000), false)
  t.match(store.stats().lastProblem, { reason: /^REDIS_CLUSTER=true, but REDIS_URL is not a node of a Redis Cluster/, configuration: true })
  t.equal(lines.filter((l) => /"level":50/.test(l)).length, 1)
})
