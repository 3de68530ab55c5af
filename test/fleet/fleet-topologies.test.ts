// A fleet on Redis beyond one node, end to end (issue 20, D8): proxies on
// Redis behind Sentinel keep answering callers through a failover and make
// one registration; on a Redis Cluster they become ready and share one
// registration; and a Cluster node given as plain REDIS_URL is reported
// down (cmu_proxy_redis_up 0) with one line naming REDIS_CLUSTER, never
// "up" while nothing works.
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { allAnswerOk, fleetOf, statuses } from '../helpers/fleet.js'
import { call, eventually, startSandbox } from '../helpers/app.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { startCluster, startSentinelSetup } from '../helpers/redis-topologies.js'

t.test('Sentinel: a failover under traffic: every caller answered, one registration, and the fleet follows the new master', async (t) => {
  const sandbox = await startSandbox(t)
  const setup = await startSentinelSetup(t)
  const [node] = setup.nodes
  if (node === undefined) throw new Error('no node')
  const fleet = await fleetOf(t, sandbox, node, 2, { REDIS_URL: undefined, ...setup.env, REDIS_COMMAND_TIMEOUT_MS: '200', REDIS_LOCK_TTL_MS: '1000', CACHE_ENABLED: 'true' })
  t.ok(await allAnswerOk(fleet, '/readyz', 10_000), 'ready through the sentinel')
  const statusesSeen: number[] = []
  let running = true
  let i = 0
  const traffic = async (): Promise<void> => {
    while (running) {
      const member = fleet[i++ % fleet.length]
      statusesSeen.push((await call(member?.url ?? '', `/cmu/v2/year?limit=${1 + i % 5}`)).status)
      await sleep(10)
    }
  }
  const callers = [traffic(), traffic()]
  t.ok(await eventually(() => statusesSeen.length > 20, 10_000), 'traffic flows')
  await setup.failover()
  t.ok(await eventually(async () => {
    const metrics = await Promise.all(fleet.map(async (p) => (await call(p.url, '/metrics')).text))
    return metrics.every((text) => /^cmu_proxy_redis_up 1$/m.test(text))
  }, 15_000), 'every member up on the new master')
  const seen = statusesSeen.length
  t.ok(await eventually(() => statusesSeen.length > seen + 20, 10_000), 'traffic flows on')
  running = false
  await Promise.all(callers)
  t.same([...new Set(statusesSeen)], [200], `every one of ${statusesSeen.length} callers got 200`)
  t.equal(sandbox.calls.register, 1, 'one registration for the fleet, failover or not')
})

t.test('Cluster: with REDIS_CLUSTER=true the fleet is ready and shares one registration; as plain REDIS_URL it is reported down, with the setting to change', async (t) => {
  const sandbox = await startSandbox(t)
  const cluster = await startCluster(t)
  const [seed] = cluster.nodes
  if (seed === undefined) throw new Error('no node')
  const fleet = await fleetOf(t, sandbox, seed, 2, cluster.env)
  t.ok(await allAnswerOk(fleet, '/readyz', 10_000), 'ready')
  t.same(statuses(await Promise.all(fleet.map(async (p) => await call(p.url, '/cmu/v2')))), [200])
  t.equal(sandbox.calls.register, 1, 'one registration for the fleet')
  t.equal(sandbox.calls.token, 1, 'one token call')
  for (const p of fleet) t.match((await call(p.url, '/metrics')).text, /^cmu_proxy_redis_up 1$/m)

  const other = await startSandbox(t)
  const [plain] = await fleetOf(t, other, seed, 1, { REDIS_URL: seed.url })
  t.ok(await eventually(async () => /^cmu_proxy_redis_up 0$/m.test((await call(plain?.url ?? '', '/metrics')).text), 5_000), 'Redis reported down, never up while nothing works')
  t.ok(plain?.logs.some((line) => /"level":50/.test(line) && /set REDIS_CLUSTER=true/.test(line)), 'one line says what to set')
  t.equal(plain?.logs.filter((line) => /redis is not usable with these settings/.test(line)).length, 1, 'once')
})

t.test('Redis killed and back: the fleet\'s log has one line for the outage and one for its end', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const [member] = await fleetOf(t, sandbox, redis, 1, { CACHE_ENABLED: 'true', REDIS_COMMAND_TIMEOUT_MS: '200', REDIS_LOCK_TTL_MS: '1000' })
  t.equal((await call(member?.url ?? '', '/cmu/v2')).status, 200)
  await redis.kill()
  for (let i = 0; i < 20; i++) t.equal((await call(member?.url ?? '', `/cmu/v2/year/month?limit=${1 + i}`)).status, 200, 'served on its own')
  await redis.restart()
  t.ok(await eventually(() => member?.logs.some((line) => /redis available again/.test(line)) === true, 10_000), 'back')
  const storeLines = member?.logs.filter((line) => /"msg":"redis (unavailable|available again)/.test(line)) ?? []
  t.equal(storeLines.length, 2, 'one line when it went, one when it came back')
  t.match(JSON.parse(storeLines[1] ?? '{}'), { refused: Number, failed: Number, unavailableMs: Number })
})
