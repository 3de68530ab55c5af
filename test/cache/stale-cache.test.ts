// Callers keep getting answers when Adobe fails: stale-if-error and
// stale-while-revalidate (RFC 5861), through the proxy over HTTP, with the
// sandbox's fault API and a clock the test moves by hand.
import t, { type Test } from 'tap'
import { entryTimes } from '../../src/cache/freshness.js'
import { ResponseCache } from '../../src/cache/response-cache.js'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { assertProblem, call, eventually, startProxy, startSandbox, type RawResponse, type RunningProxy } from '../helpers/app.js'
import type { Sandbox } from '../../src/sandbox/server.js'

const REPORT = '/cmu/v2/year/month/day/hour?start=2026-11-27T00:00'
const HOUR = 3600_000

function manualClock (start = Date.parse('2026-11-27T10:00:00Z')): { now: () => number, advance: (ms: number) => void } {
  let now = start
  return { now: () => now, advance: (ms) => { now += ms } }
}

interface Setup { sandbox: Sandbox, proxy: RunningProxy, clock: ReturnType<typeof manualClock>, fresh: RawResponse }

/** A proxy with one cached hour report (1 h TTL), the clock moved past its TTL. */
async function expiredEntry (t: Test, env: Record<string, string> = {}, pastTtlMs = 60_000): Promise<Setup> {
  const clock = manualClock()
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true', ...env }, now: clock.now })
  const fresh = await call(proxy.url, REPORT)
  t.equal(fresh.headers['x-cache'], 'MISS')
  clock.advance(HOUR + pastTtlMs)
  return { sandbox, proxy, clock, fresh }
}

function assertStale (t: Test, answer: RawResponse, fresh: RawResponse, detail: string): void {
  t.equal(answer.status, 200, `${detail}: 200`)
  t.equal(answer.headers['x-cache'], 'STALE', `${detail}: X-Cache`)
  t.equal(answer.text, fresh.text, `${detail}: the cached body`)
  t.match(answer.headers.age, /^\d+$/, `${detail}: Age`)
  t.ok(Number(answer.headers.age) >= 3600, `${detail}: Age counts from when it was stored`)
  t.match(answer.headers['cache-status'], new RegExp(`^cmu-proxy; (hit|fwd=stale(; fwd-status=\\d+)?); ttl=-\\d+; detail=${detail}$`), `${detail}: Cache-Status`)
}

t.test('stale-if-error: Adobe answering 503, then 429, dropping connections, timing out, or no token: the stale copy, marked', async (t) => {
  const { sandbox, proxy, fresh, clock } = await expiredEntry(t, { CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0', UPSTREAM_HEADERS_TIMEOUT_MS: '300' })

  // After each failure the key rests 5 s (Adobe gets no request for it): move past that each time.
  const pastBackoff = (): void => { clock.advance(6_000) }
  sandbox.faults.failNext('cmu', 1, { status: 503, body: 'Service Unavailable' })
  const on503 = await call(proxy.url, REPORT)
  assertStale(t, on503, fresh, 'upstream_5xx')
  t.match(on503.headers['cache-status'], /^cmu-proxy; fwd=stale; fwd-status=503; ttl=-60; detail=upstream_5xx$/)
  pastBackoff()

  sandbox.faults.failNext('cmu', 1, { status: 429, body: 'Too many', headers: { 'retry-after': '5' } })
  assertStale(t, await call(proxy.url, REPORT), fresh, 'upstream_429')
  pastBackoff()

  sandbox.faults.failNext('cmu', Infinity, { drop: true })
  assertStale(t, await call(proxy.url, REPORT), fresh, 'unreachable')
  sandbox.faults.clear()
  pastBackoff()

  sandbox.faults.failNext('cmu', Infinity, { hang: true })
  assertStale(t, await call(proxy.url, REPORT), fresh, 'timeout')
  sandbox.faults.clear()
  pastBackoff()

  // The token Adobe refuses, and the token endpoint down: no token can be had.
  sandbox.dcr.revokeTokens()
  sandbox.faults.failNext('token', Infinity, { status: 503 })
  const noToken = await call(proxy.url, REPORT)
  assertStale(t, noToken, fresh, 'no_token')
  t.match(noToken.headers['cache-status'], /^cmu-proxy; hit; /, 'Adobe was not asked: a hit')
  sandbox.faults.clear()

  const metrics = (await call(proxy.url, '/metrics')).text
  for (const reason of ['upstream_5xx', 'upstream_429', 'unreachable', 'timeout', 'no_token']) {
    t.match(metrics, new RegExp(`cmu_proxy_cache_stale_total\\{reason="${reason}"\\} 1\\n`), `counted: ${reason}`)
  }
  const logged = proxy.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request' && l.cache === 'STALE')
  t.equal(logged.length, 5, 'each stale serve is on its request line')
  t.match(logged[0], { statusCode: 200, cacheStatus: /detail=upstream_5xx/ })

  // Adobe is back, and the token back-off has passed: the entry is refreshed and fresh again.
  clock.advance(120_000)
  sandbox.faults.clear()
  const refreshed = await call(proxy.url, REPORT)
  t.equal(refreshed.headers['x-cache'], 'MISS')
  t.equal((await call(proxy.url, REPORT)).headers['x-cache'], 'HIT')
})

t.test("Adobe's 4xx answers other than 429 are passed through, never masked by a stale copy", async (t) => {
  const { sandbox, proxy } = await expiredEntry(t, { CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0' })
  for (const status of [400, 403, 404]) {
    sandbox.faults.failNext('cmu', 1, { status, body: `Adobe says ${status}` })
    const answer = await call(proxy.url, REPORT)
    t.equal(answer.status, status)
    t.equal(answer.text, `Adobe says ${status}`)
    t.equal(answer.headers['cache-status'], undefined)
  }
})

t.test('past the stale-if-error window the failure passes through', async (t) => {
  const { sandbox, proxy, clock } = await expiredEntry(t, { CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0', CACHE_STALE_IF_ERROR_SECONDS: '600' })
  sandbox.faults.failNext('cmu', 1, { status: 503, body: 'down' })
  t.equal((await call(proxy.url, REPORT)).headers['x-cache'], 'STALE', 'inside the window')
  clock.advance(600_000)
  sandbox.faults.failNext('cmu', 1, { status: 503, body: 'down' })
  const late = await call(proxy.url, REPORT)
  t.equal(late.status, 503, "Adobe's own answer")
  t.equal(late.text, 'down')
  // The key rests (5 s): with no copy that may stand in, the next caller hears when to come back.
  clock.advance(5_000)
  sandbox.faults.failNext('cmu', Infinity, { drop: true })
  assertProblem(t, await call(proxy.url, REPORT), 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
})

t.test('a resting key with no copy that may stand in: 503 with Retry-After, and Adobe is not asked until the rest is over', async (t) => {
  const { sandbox, proxy, clock } = await expiredEntry(t, { CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0', CACHE_STALE_IF_ERROR_SECONDS: '0' })
  sandbox.faults.failNext('cmu', 1, { status: 429, body: 'Too many', headers: { 'retry-after': '30' } })
  const throttled = await call(proxy.url, REPORT)
  t.equal(throttled.status, 429, "Adobe's 429 passes through (no copy may stand in)")
  const asked = sandbox.calls.cmu
  for (const [waited, retryAfter] of [[0, '30'], [20_000, '10'], [9_000, '1']] as const) {
    clock.advance(waited)
    const resting = await call(proxy.url, REPORT)
    assertProblem(t, resting, 503, 'CMU_PROXY_UPSTREAM_FAILING')
    t.equal(resting.headers['retry-after'], retryAfter, `${retryAfter} s left of Adobe's 30`)
    t.match(resting.json().detail, /upstream_429/)
  }
  assertProblem(t, await call(proxy.url, REPORT, { headers: { 'cache-control': 'no-cache' } }), 503, 'CMU_PROXY_UPSTREAM_FAILING')
  t.pass('no-cache does not end a rest either')
  assertProblem(t, await call(proxy.url, REPORT, { headers: { 'if-none-match': '"x"' } }), 503, 'CMU_PROXY_UPSTREAM_FAILING')
  t.pass('nor does a conditional request')
  t.equal(sandbox.calls.cmu, asked, 'Adobe was not asked while the key rests')
  clock.advance(1_000)
  const after = await call(proxy.url, REPORT)
  t.equal(after.status, 200, 'asked again once the rest is over')
  t.equal(sandbox.calls.cmu, asked + 1)
})

t.test('a rest for a failure of this instance\'s own (no token) refuses no caller: the token problem says why', async (t) => {
  const { sandbox, proxy, clock } = await expiredEntry(t, { CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0', CACHE_STALE_IF_ERROR_SECONDS: '0', TOKEN_RETRY_BASE_MS: '1', TOKEN_RETRY_MAX_MS: '1' })
  sandbox.dcr.revokeTokens()
  sandbox.faults.failNext('token', 1, { status: 503 })
  const first = await call(proxy.url, REPORT)
  t.equal(first.status, 503)
  t.not(first.json().code, 'CMU_PROXY_UPSTREAM_FAILING', 'a token code')
  // Past the token back-off, inside the key's 5 s rest.
  clock.advance(1_000)
  t.equal((await call(proxy.url, REPORT)).status, 200, 'the next caller is not refused for the rest')
})

t.test('stale-while-revalidate: callers are answered at once while exactly one background refresh runs', async (t) => {
  const { sandbox, proxy, fresh } = await expiredEntry(t)
  const before = sandbox.calls.cmu
  // Adobe holds its answer until all ten callers have theirs (or, if they wait for it, a minute passes): none of them waited for it.
  const adobe = heldAnswer()
  let heldTooLong = false
  const giveUp = setTimeout(() => { heldTooLong = true; adobe.release() }, 60_000)
  t.teardown(() => { clearTimeout(giveUp); adobe.release() })
  sandbox.faults.failNext('cmu', 1, { until: adobe.until })
  const answers = await Promise.all(Array.from({ length: 10 }, async () => await call(proxy.url, REPORT)))
  t.notOk(heldTooLong, 'ten callers answered while the refresh waits for Adobe')
  adobe.release()
  for (const answer of answers) assertStale(t, answer, fresh, 'revalidating')
  t.notMatch(answers[0]?.headers['cache-status'], /fwd=/, 'not forwarded on behalf of this caller')
  t.match((await call(proxy.url, '/metrics')).text, /cmu_proxy_cache_stale_total\{reason="revalidating"\} 10\n/)
  t.ok(await eventually(() => sandbox.calls.cmu === before + 1, 3_000), 'one refresh reached Adobe')
  t.ok(await eventually(async () => (await call(proxy.url, REPORT)).headers['x-cache'] === 'HIT', 3_000), 'the refreshed entry serves as a hit')
  t.equal(sandbox.calls.cmu, before + 1, 'exactly one upstream call for all of it')
})

t.test('a failed background refresh keeps the stale copy and logs the failure', async (t) => {
  const { sandbox, proxy, fresh, clock } = await expiredEntry(t)
  sandbox.faults.failNext('cmu', 1, { status: 500, body: 'oops' })
  assertStale(t, await call(proxy.url, REPORT), fresh, 'revalidating')
  t.ok(await eventually(() => proxy.logs.some((l) => l.includes('background cache refresh'))), 'logged')
  const calls = sandbox.calls.cmu
  const resting = await call(proxy.url, REPORT)
  assertStale(t, resting, fresh, 'upstream_5xx')
  t.match(resting.headers['cache-status'], /^cmu-proxy; hit; /, 'answered without asking Adobe')
  t.equal(sandbox.calls.cmu, calls, 'the key rests after a failed refresh')
  clock.advance(6_000)
  sandbox.faults.failNext('cmu', Infinity, { drop: true })
  assertStale(t, await call(proxy.url, REPORT), fresh, 'revalidating')
  t.ok(await eventually(() => proxy.logs.filter((l) => l.includes('background cache refresh failed')).length >= 1), 'a dropped refresh is logged too')
  sandbox.faults.clear()
})

for (const [window, env] of [['inside', {}], ['past', { CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0' }]] as const) {
  t.test(`Adobe throttling a report (429, Retry-After: 3600) is asked once, not once per caller (${window} the revalidate window)`, async (t) => {
    const { sandbox, proxy, fresh, clock } = await expiredEntry(t, env)
    const before = sandbox.calls.cmu
    sandbox.faults.failNext('cmu', Infinity, { status: 429, body: 'slow down', headers: { 'retry-after': '3600' } })
    const first = await call(proxy.url, REPORT)
    t.equal(first.status, 200)
    t.ok(await eventually(() => sandbox.calls.cmu === before + 1), 'one call reached Adobe')
    const answers = []
    for (let i = 0; i < 50; i++) answers.push(await call(proxy.url, REPORT))
    for (const answer of answers) assertStale(t, answer, fresh, 'upstream_429')
    t.equal(sandbox.calls.cmu, before + 1, 'fifty more callers, no more calls to Adobe')
    clock.advance(3_600_000)
    await call(proxy.url, REPORT)
    t.ok(await eventually(() => sandbox.calls.cmu === before + 2), 'asked again once Retry-After has passed')
    sandbox.faults.clear()
  })
}

t.test('a no-cache request whose refresh fails gets the fresh entry, marked, not a failure', async (t) => {
  const clock = manualClock()
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true' }, now: clock.now })
  const fresh = await call(proxy.url, REPORT)
  sandbox.faults.failNext('cmu', 1, { status: 503, body: 'down' })
  const answer = await call(proxy.url, REPORT, { headers: { 'cache-control': 'no-cache' } })
  t.equal(answer.status, 200)
  t.equal(answer.text, fresh.text)
  t.equal(answer.headers['x-cache'], 'HIT', 'still fresh: a hit, not STALE')
  t.match(answer.headers['cache-status'], /^cmu-proxy; fwd=request; fwd-status=503; ttl=\d+; detail=upstream_5xx$/)
})

t.test('the revalidate window is 10% of the TTL (at least 30 s) by default, and 0 turns it off', async (t) => {
  // An hour report: 6 minutes of stale-while-revalidate.
  const inside = await expiredEntry(t, {}, 5 * 60_000)
  // The refresh behind it waits for Adobe until the stale answer is out: the caller cannot have waited for it.
  const adobe = heldAnswer()
  t.teardown(adobe.release)
  inside.sandbox.faults.failNext('cmu', 1, { until: adobe.until })
  t.equal((await call(inside.proxy.url, REPORT)).headers['x-cache'], 'STALE', '5 min past a 1 h TTL')
  adobe.release()
  const outside = await expiredEntry(t, {}, 7 * 60_000)
  t.equal((await call(outside.proxy.url, REPORT)).headers['x-cache'], 'MISS', '7 min past it: a blocking refresh')
  const off = await expiredEntry(t, { CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0' }, 1_000)
  t.equal((await call(off.proxy.url, REPORT)).headers['x-cache'], 'MISS', 'off')
})

t.test('stale entries count against the byte bound and are evicted before fresh ones', async (t) => {
  const clock = manualClock()
  const cache = new ResponseCache({ maxBytes: 5_000, maxEntryBytes: 1_500, now: clock.now })
  const body = Buffer.alloc(1_000)
  const store = (key: string, ttlSeconds: number, staleSeconds: number): void => {
    const at = clock.now()
    const times = { requestedAt: at, respondedAt: at, respondedAtWall: at }
    cache.put(key, { status: 200, headers: {}, body, ...entryTimes({}, ttlSeconds, times, { ttlMaxSeconds: 86_400, staleIfErrorSeconds: staleSeconds, staleWhileRevalidateSeconds: 0, ignoreOriginFreshness: false }) })
  }
  store('old', 60, 3600)
  clock.advance(61_000)
  store('fresh-1', 600, 3600)
  store('fresh-2', 600, 3600)
  t.ok(cache.peek('old') !== undefined, 'the stale entry is kept, and now the most recently used')
  t.ok(cache.stats().bytes > 3_000, 'its bytes are counted')
  store('fresh-3', 600, 3600)
  t.equal(cache.peek('old'), undefined, 'the stale entry made room first')
  for (const key of ['fresh-1', 'fresh-2', 'fresh-3']) t.ok(cache.peek(key) !== undefined, `${key} kept`)
  t.equal(cache.stats().evictions, 1)
  clock.advance(4 * 3600_000)
  t.equal(cache.peek('fresh-1'), undefined, 'past its stale window an entry is dead')
})
