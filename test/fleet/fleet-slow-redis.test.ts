// Issue 20, D2 end to end: one member's Redis replies are delayed 400 ms by
// a TCP proxy, past its 250 ms command timeout, just as it takes a report's
// lock. Its SET landed, but it cannot know: it takes the lock back by
// compare-and-delete, fetches alone, and still tells the others what it got.
// No lock is left held, and Adobe gets at most one extra call.
import t from 'tap'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { allAnswerOk, member, rawRedis, statuses } from '../helpers/fleet.js'
import { call, eventually, startSandbox, whenInFlight } from '../helpers/app.js'
import { startDelayingProxy } from '../helpers/delaying-proxy.js'
import { startRedisServer } from '../helpers/redis-server.js'

const LOCK_TTL_MS = 5_000
const TIMINGS = { CACHE_ENABLED: 'true', REDIS_COMMAND_TIMEOUT_MS: '250', REDIS_LOCK_TTL_MS: String(LOCK_TTL_MS) }

t.test('a member whose lock reply comes 400 ms late: no lock left held, the others do not wait out the TTL, at most one extra Adobe call', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const raw = await rawRedis(t, redis)
  const proxy = await startDelayingProxy(t, redis.port)
  const statement = makeSoftwareStatement()
  const slow = await member(t, sandbox, redis, { statement, env: { ...TIMINGS, REDIS_URL: proxy.url } })
  const others = await Promise.all([0, 1].map(async () => await member(t, sandbox, redis, { statement, env: TIMINGS })))
  t.ok(await allAnswerOk([slow, ...others], '/readyz'), 'all ready')
  const lockKeys = async (): Promise<string[]> => (await raw.keys('*:lock:*')).map(String)

  const adobe = heldAnswer()
  t.teardown(adobe.release)
  sandbox.faults.failNext('cmu', Infinity, { until: adobe.until })
  const path = '/cmu/v2/year/month?start=2026-03'
  proxy.delayRepliesAfter(':lock:cache:', 400)
  const started = performance.now()
  const first = call(slow.url, path)
  t.ok(await eventually(() => sandbox.calls.cmu === 1), 'the slow member asks Adobe (alone: its lock reply never came in time)')
  t.ok(proxy.delayed > 0, 'its reply was held')
  // Its compare-and-delete reached Redis right behind the SET: the lock is gone long before its TTL.
  let gone = false
  while (!gone && performance.now() - started < LOCK_TTL_MS / 2) {
    gone = (await lockKeys()).length === 0
    if (!gone) await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.ok(gone, `no lock held ${Math.round(performance.now() - started)} ms after it was taken (TTL ${LOCK_TTL_MS} ms)`)

  const asked = performance.now()
  const rest = Promise.all(others.map(async (p) => await call(p.url, path)))
  // Released once every other member has the request in hand (waiting on the fleet), not after a guess at how long that takes.
  for (const other of others) t.ok(await whenInFlight(other.url, 1), 'another member is answering')
  adobe.release()
  const answers = [await first, ...await rest]
  const waited = performance.now() - asked
  t.same(statuses(answers), [200], 'every caller got the report')
  t.ok(sandbox.calls.cmu <= 2, `${sandbox.calls.cmu} Adobe calls for one report (one extra at most)`)
  t.ok(waited < LOCK_TTL_MS / 2, `the others answered in ${Math.round(waited)} ms, not after the lock TTL`)
  t.ok(await eventually(async () => (await lockKeys()).length === 0, 1_000), 'and no lock is left behind')
  t.ok(await eventually(async () => (await call(others[0]?.url ?? '', path)).headers['x-cache'] === 'HIT', 1_000), 'the report is shared')
})
