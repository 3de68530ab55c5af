// Issue 20, D5: Adobe's failure rest is the fleet's. A 5xx or 429 for a
// report sets a marker in Redis (SET PX, Retry-After honoured) that every
// member reads before it asks Adobe for that report: one call per rest for
// the whole fleet, callers served stale, or 503 with Retry-After when there
// is no copy. One clock, moved by the test, for the four members.
import t from 'tap'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { member, statuses } from '../helpers/fleet.js'
import { assertProblem, call, eventually, startSandbox } from '../helpers/app.js'
import { rawRedisClient, startRedisServer } from '../helpers/redis-server.js'

const ENV = { CACHE_ENABLED: 'true', CACHE_TTL_MAX_SECONDS: '1', CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0' }

t.test('Adobe answers 503 with Retry-After: 5 for a stale report while 4 instances ask in turn every 250 ms for 10 s: at most 3 calls, every caller a stale 200', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  let clock = Date.now()
  const statement = makeSoftwareStatement()
  const fleet = await Promise.all([0, 1, 2, 3].map(async () => await member(t, sandbox, redis, { statement, env: ENV, now: () => clock })))
  const path = '/cmu/v2/year/month?start=2026-01'
  t.same((await Promise.all(fleet.map(async (p) => (await call(p.url, path)).headers['x-cache']))).sort(), ['HIT', 'HIT', 'HIT', 'MISS'], 'every instance holds a copy')
  const before = sandbox.calls.cmu
  clock += 2_000
  sandbox.faults.failNext('cmu', Infinity, { status: 503, headers: { 'retry-after': '5' } })
  const answers = []
  for (let i = 0; i < 40; i++) {
    clock += 250
    answers.push(await call(fleet[i % fleet.length]?.url ?? '', path))
  }
  t.same(statuses(answers), [200], 'every caller got a 200')
  t.same([...new Set(answers.map((a) => a.headers['x-cache']))], ['STALE'], 'the stale copy')
  t.ok(answers.every((a) => /detail=upstream_5xx/.test(String(a.headers['cache-status']))), 'Cache-Status says why')
  const calls = sandbox.calls.cmu - before
  t.ok(calls >= 2 && calls <= 3, `${calls} calls to Adobe in 10 s of rests of 5 s, for four instances`)
})

t.test('a report with no copy anywhere: the member that asked gets Adobe\'s answer; the others a 503 with Retry-After, without asking', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  let clock = Date.now()
  const statement = makeSoftwareStatement()
  const [a, b, c] = await Promise.all([0, 1, 2].map(async () => await member(t, sandbox, redis, { statement, env: ENV, now: () => clock })))
  const path = '/cmu/v2/year/month/day?start=2026-02'
  sandbox.faults.failNext('cmu', Infinity, { status: 429, headers: { 'retry-after': '8' } })
  t.equal((await call(a?.url ?? '', path)).status, 429, 'Adobe\'s own answer to the one that asked')
  // The marker is written, and a's turn ends, as the caller is answered: once both are done, b reads the
  // marker on the moved clock (before, b could find the lock still held and take a's notice, a rest
  // counted from a's moment).
  const client = await rawRedisClient(t, redis)
  t.ok(await eventually(async () => (await client.keys('*:rest:*')).length === 1 && (await client.keys('*:lock:*')).length === 0), 'the rest marker is in Redis, the lock released')
  clock += 1_000
  const told = await call(b?.url ?? '', path)
  assertProblem(t, told, 503, 'CMU_PROXY_UPSTREAM_FAILING')
  t.equal(told.headers['retry-after'], '7', 'what is left of Adobe\'s Retry-After')
  clock += 3_000
  assertProblem(t, await call(c?.url ?? '', path), 503, 'CMU_PROXY_UPSTREAM_FAILING')
  t.equal(sandbox.calls.cmu, 1, 'one call to Adobe')
  clock += 4_500
  t.equal((await call(c?.url ?? '', path)).status, 429, 'after the rest, one member asks again')
  t.equal(sandbox.calls.cmu, 2)
})
