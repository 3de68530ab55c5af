// Revalidation in a fleet: a 304 that arrives late, after memory took in a
// newer answer another instance fetched, must not put the old copy back.
import t from 'tap'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { manualClock } from '../cache/directives-cases.js'
import { call, eventually, startSandbox, whenInFlight, type RunningProxy } from '../helpers/app.js'
import { member } from '../helpers/fleet.js'
import { startRedisServer } from '../helpers/redis-server.js'

const redis = await startRedisServer(t)
const REPORT = '/cmu/v2/year/month/day/hour?start=2026-11-27T00:00'

/** How many SETs `proxy` has had answered by Redis (its cmu_proxy_redis_operation_duration_seconds count). */
async function setsDone (proxy: RunningProxy): Promise<number> {
  return Number(/^cmu_proxy_redis_operation_duration_seconds_count\{operation="set"\} (\d+)$/m.exec((await call(proxy.url, '/metrics')).text)?.[1] ?? 0)
}

t.test('a late 304 for the old copy never overwrites the newer answer memory took from the fleet meanwhile', async (t) => {
  const clock = manualClock()
  const sandbox = await startSandbox(t)
  const options = { statement: makeSoftwareStatement(), env: { CACHE_ENABLED: 'true' }, now: clock.now }
  const a = await member(t, sandbox, redis, options)
  const b = await member(t, sandbox, redis, options)
  sandbox.reportHeaders = { etag: '"A"', cacheControl: 'max-age=60' }
  t.equal((await call(a.url, REPORT)).headers.etag, '"A"', 'A stored, at a and in the fleet')
  clock.advance(200_000)

  // a revalidates A; Adobe's 304 for it comes late.
  const late = heldAnswer()
  t.teardown(late.release)
  sandbox.faults.failNext('cmu', 1, { status: 304, body: '', headers: { etag: '"A"', 'cache-control': 'max-age=60' }, until: late.until })
  const asked = sandbox.calls.cmu
  const revalidating = call(a.url, REPORT)
  t.ok(await eventually(() => sandbox.calls.cmu === asked + 1), "a's conditional request is at Adobe")

  // Meanwhile b fetches B (its caller asked for no-cache) and shares it; a takes it from the fleet for its next caller.
  sandbox.reportHeaders = { etag: '"B"', cacheControl: 'max-age=600' }
  const sets = await setsDone(b)
  t.equal((await call(b.url, REPORT, { headers: { 'cache-control': 'no-cache' } })).headers.etag, '"B"')
  t.ok(await eventually(async () => await setsDone(b) > sets), 'B is in the fleet')
  const fromFleet = await call(a.url, REPORT)
  t.same([fromFleet.headers['x-cache'], fromFleet.headers.etag], ['HIT', '"B"'], 'a holds B now')
  t.ok(await whenInFlight(a.url, 1), 'the revalidation of A still waits')

  late.release()
  const confirmed = await revalidating
  t.same([confirmed.headers['x-cache'], confirmed.headers.etag], ['REVALIDATED', '"A"'], 'its own caller gets what Adobe confirmed')
  const after = await call(a.url, REPORT)
  t.same([after.headers['x-cache'], after.headers.etag], ['HIT', '"B"'], 'memory still holds the newer answer')
  // A member with nothing in memory reads the fleet's copy.
  const c = await member(t, sandbox, redis, options)
  t.equal((await call(c.url, REPORT)).headers.etag, '"B"', 'and so does the fleet')
})
