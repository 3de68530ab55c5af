// Issue 20, D7 end to end: a Redis outage under traffic is logged once when
// it starts and once when it ends, with what was skipped meanwhile; the
// cache writes it skipped are counted, not logged one by one.
import t from 'tap'
import { fleetOf, statuses } from '../helpers/fleet.js'
import { call, eventually, startSandbox } from '../helpers/app.js'
import { startRedisServer } from '../helpers/redis-server.js'

interface Line { level: number, msg: string, refused?: number, failed?: number }

t.test('a Redis outage with twenty cache writes: one line when it goes, one when it returns, none per write', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const [proxy] = await fleetOf(t, sandbox, redis, 1, { CACHE_ENABLED: 'true', REDIS_COMMAND_TIMEOUT_MS: '250', REDIS_LOCK_TTL_MS: '1000' })
  if (proxy === undefined) throw new Error('no member')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  const from = proxy.logs.length
  await redis.kill()
  t.ok(await eventually(async () => (await call(proxy.url, '/metrics')).text.includes('cmu_proxy_redis_up 0')), 'down')
  const answers = []
  for (let i = 0; i < 20; i++) answers.push(await call(proxy.url, `/cmu/v2/year?limit=${i + 1}`))
  t.same(statuses(answers), [200], 'every caller answered from this instance alone')
  await redis.restart()
  t.ok(await eventually(async () => (await call(proxy.url, '/metrics')).text.includes('cmu_proxy_redis_up 1'), 5_000), 'back')
  const lines = proxy.logs.slice(from).map((l) => JSON.parse(l) as Line).filter((l) => l.msg !== 'request')
  const loud = lines.filter((l) => l.level >= 40)
  t.same(loud.map((l) => l.msg), ['redis unavailable; serving from local state and retrying'], 'one warning: when it went')
  const back = lines.filter((l) => l.msg === 'redis available again')
  t.equal(back.length, 1, 'one line when it returned')
  t.ok((back[0]?.refused ?? 0) + (back[0]?.failed ?? 0) >= 20, `with what was skipped meanwhile (refused ${back[0]?.refused}, failed ${back[0]?.failed})`)
})
