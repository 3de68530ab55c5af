// RFC 9111 through the proxy over HTTP, with the cache on: the cases of
// issue 21, each run against one instance (origin-directives.test.ts) and
// against two instances of a fleet sharing a redis-server
// (test/fleet/fleet-origin-directives.test.ts). `a` and `b` are the same
// proxy in memory mode; in a fleet, what `a` stored reaches `b` only through
// the shared level. The sandbox sends the caching fields the test sets.
import type { Test } from 'tap'
import { heldAnswer } from '../../src/sandbox/faults.js'
import type { Sandbox } from '../../src/sandbox/server.js'
import { assertProblem, call, eventually, whenInFlight, type RawResponse, type RunningProxy } from '../helpers/app.js'

export interface Instances { sandbox: Sandbox, a: RunningProxy, b: RunningProxy, clock: ManualClock }
export type Start = (t: Test, env?: Record<string, string>) => Promise<Instances>

export interface ManualClock { now: () => number, advance: (ms: number) => void }

/** A clock the test moves by hand, starting now (the proxies' deadline and wall clocks both read it). */
export function manualClock (start = Date.now()): ManualClock {
  let now = start
  return { now: () => now, advance: (ms) => { now += ms } }
}

/** An hour report: the schedule would keep it for an hour (6 minutes of stale-while-revalidate after). */
const REPORT = '/cmu/v2/year/month/day/hour?start=2026-11-27T00:00'
const report = (n: number): string => `${REPORT}&limit=${n}`

/** The CMU requests the sandbox received so far. */
const cmuCalls = (sandbox: Sandbox): number => sandbox.calls.cmu

export function directiveCases (t: Test, start: Start): void {
  t.test('a response\'s no-cache (max-age=10000, no-cache) is stored and revalidated before every use, never a plain HIT', async (t) => {
    const { sandbox, a, b } = await start(t)
    sandbox.reportHeaders = { cacheControl: 'max-age=10000, no-cache', etag: true }
    const first = await call(a.url, report(1))
    t.equal(first.headers['x-cache'], 'MISS')
    t.equal(first.headers['cache-status'], 'cmu-proxy; fwd=uri-miss; detail=no-cache', 'says why every use will ask')
    const second = await call(b.url, report(1))
    t.equal(second.status, 200)
    t.equal(second.headers['x-cache'], 'REVALIDATED', 'asked Adobe, which confirmed the copy')
    t.match(second.headers['cache-status'], /^cmu-proxy; fwd=stale; fwd-status=304; ttl=\d+; detail=no-cache$/)
    t.equal(second.text, first.text, 'the stored body')
    t.equal(sandbox.calls.cmuNotModified, 1)
    t.equal(sandbox.cmuRequests.at(-1)?.headers['if-none-match'], first.headers.etag, 'revalidated with its ETag')
    t.equal(cmuCalls(sandbox), 2)

    // Without a validator, every use is a full fetch: nothing is kept for it.
    sandbox.reportHeaders = { cacheControl: 'max-age=10000, no-cache' }
    for (const proxy of [a, b]) {
      const answer = await call(proxy.url, report(2))
      t.equal(answer.headers['x-cache'], 'MISS')
      t.equal(answer.headers['cache-status'], 'cmu-proxy; fwd=uri-miss; detail=no-cache')
    }
    t.equal(cmuCalls(sandbox), 4)
  })

  t.test('a stale copy is never served where the origin forbids it: must-revalidate, proxy-revalidate, s-maxage, no-cache', async (t) => {
    const { sandbox, a, b, clock } = await start(t)
    const forbidding = ['max-age=60, must-revalidate', 'max-age=60, proxy-revalidate', 's-maxage=60', 'max-age=60, no-cache']
    const cases = [...forbidding, 'max-age=60']
    for (const [i, cacheControl] of cases.entries()) {
      sandbox.reportHeaders = { cacheControl, etag: true }
      t.equal((await call(a.url, report(10 + i))).status, 200)
    }
    // Within what would be the stale-while-revalidate window: asked first, confirmed by a 304.
    clock.advance(61_000)
    for (const [i, cacheControl] of forbidding.entries()) {
      sandbox.reportHeaders = { cacheControl, etag: true }
      const answer = await call(b.url, report(10 + i))
      t.equal(answer.headers['x-cache'], 'REVALIDATED', `${cacheControl}: not served stale while revalidating`)
    }
    // Past it, with Adobe unreachable: the failure passes through, never the copy (RFC 9111 §4.2.4).
    clock.advance(300_000)
    sandbox.faults.failNext('cmu', Infinity, { drop: true })
    for (const [i, cacheControl] of forbidding.entries()) {
      assertProblem(t, await call(b.url, report(10 + i)), 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
      t.pass(`${cacheControl}: no stale copy on error`)
    }
    const allowed = await call(b.url, report(10 + forbidding.length))
    t.equal(allowed.headers['x-cache'], 'STALE', 'max-age alone: the stale copy stands in')
    t.match(allowed.headers['cache-status'], /^cmu-proxy; fwd=stale; ttl=-\d+; detail=unreachable$/)
    sandbox.faults.clear()
  })

  t.test("Age: the origin's Age and the time held here; an answer already stale on arrival is not taken as fresh", async (t) => {
    const { sandbox, a, b, clock } = await start(t)
    sandbox.reportHeaders = { cacheControl: 'max-age=3600', age: 30 }
    const miss = await call(a.url, report(1))
    t.equal(miss.headers['x-cache'], 'MISS')
    t.equal(miss.headers.age, '30', 'a miss passes the age Adobe said')
    clock.advance(3_000)
    const hit = await call(b.url, report(1))
    t.equal(hit.headers['x-cache'], 'HIT')
    t.equal(hit.headers.age, '33', "Adobe's 30 s and 3 s held here")

    sandbox.reportHeaders = { cacheControl: 'max-age=1500', age: 2000 }
    for (const proxy of [a, b]) {
      const answer = await call(proxy.url, report(2))
      t.equal(answer.headers['x-cache'], 'MISS', 'never a fresh hit')
      t.equal(answer.headers.age, '2000')
      t.equal(answer.headers['cache-status'], 'cmu-proxy; fwd=uri-miss; detail=stale-on-arrival')
    }
  })

  t.test("the origin's explicit freshness replaces the schedule, both ways", async (t) => {
    const { sandbox, a, b, clock } = await start(t)
    sandbox.reportHeaders = { cacheControl: 'max-age=1' }
    t.equal((await call(a.url, report(1))).headers['x-cache'], 'MISS')
    sandbox.reportHeaders = { cacheControl: 'max-age=86400' }
    t.equal((await call(a.url, report(2))).headers['x-cache'], 'MISS')
    sandbox.reportHeaders = {}
    t.equal((await call(a.url, report(3))).headers['x-cache'], 'MISS')
    clock.advance(2_000)
    t.equal((await call(b.url, report(1))).headers['x-cache'], 'STALE', 'max-age=1 is stale after 2 s (an hour by the schedule)')
    clock.advance(2 * 3_600_000)
    t.equal((await call(b.url, report(2))).headers['x-cache'], 'HIT', 'max-age=86400 is fresh after 2 h (past the schedule)')
    t.equal((await call(b.url, report(3))).headers['x-cache'], 'MISS', 'no explicit freshness: the schedule (1 h) decided')
  })

  t.test('a stale entry is revalidated with its validators, and a 304 refreshes it', async (t) => {
    const { sandbox, a, b, clock } = await start(t)
    sandbox.reportHeaders = { etag: true }
    const first = await call(a.url, report(1))
    sandbox.reportHeaders = { lastModified: 'Tue, 24 Nov 2026 10:00:00 GMT' }
    await call(a.url, report(2))
    clock.advance(3_600_000 + 600_000)
    sandbox.reportHeaders = { etag: true }
    const revalidated = await call(b.url, report(1))
    t.equal(revalidated.headers['x-cache'], 'REVALIDATED')
    t.match(revalidated.headers['cache-status'], /^cmu-proxy; fwd=stale; fwd-status=304; ttl=3600$/, 'fresh again for the schedule')
    t.equal(revalidated.headers.age, '0', 'confirmed just now')
    t.equal(revalidated.text, first.text)
    t.equal(sandbox.cmuRequests.at(-1)?.headers['if-none-match'], first.headers.etag)
    t.equal((await call(a.url, report(1))).headers['x-cache'], 'HIT', 'and serves as a hit again')

    sandbox.reportHeaders = { lastModified: 'Tue, 24 Nov 2026 10:00:00 GMT' }
    t.equal((await call(b.url, report(2))).headers['x-cache'], 'REVALIDATED')
    t.equal(sandbox.cmuRequests.at(-1)?.headers['if-modified-since'], 'Tue, 24 Nov 2026 10:00:00 GMT')
    t.equal(sandbox.calls.cmuNotModified, 2)

    // Inside the stale-while-revalidate window the refresh runs behind a stale answer, and is a 304 too.
    clock.advance(3_600_000 + 60_000)
    t.equal((await call(b.url, report(2))).headers['x-cache'], 'STALE')
    t.ok(await eventually(async () => (await call(b.url, report(2))).headers['x-cache'] === 'HIT'), 'refreshed in the background')
    t.equal(sandbox.calls.cmuNotModified, 3)
  })

  t.test("a 304 refreshes the stored fields and the freshness they give (RFC 9111 §4.3.4)", async (t) => {
    const { sandbox, a, b, clock } = await start(t)
    sandbox.reportHeaders = { etag: true, cacheControl: 'max-age=60' }
    await call(a.url, report(1))
    clock.advance(200_000)
    sandbox.reportHeaders = { etag: true, cacheControl: 'max-age=600' }
    const revalidated = await call(b.url, report(1))
    t.equal(revalidated.headers['x-cache'], 'REVALIDATED')
    t.equal(revalidated.headers['cache-control'], 'max-age=600', "the 304's Cache-Control")
    t.match(revalidated.headers['cache-status'], /; ttl=600$/)
    clock.advance(300_000)
    const hit = await call(a.url, report(1))
    t.equal(hit.headers['x-cache'], 'HIT', 'fresh for the new max-age')
    t.equal(hit.headers.age, '300')
  })

  t.test('a 304 about another answer (another ETag) never relabels the stored copy: dropped, and Adobe asked once more, unconditionally (RFC 9111 §4.3.4)', async (t) => {
    const { sandbox, a, b, clock } = await start(t)
    sandbox.reportHeaders = { etag: true, cacheControl: 'max-age=60' }
    const first = await call(a.url, report(1))
    clock.advance(200_000)
    for (const other of ['"another"', `W/"another"`, `"${String(first.headers.etag).slice(1, -1)}-other"`]) {
      sandbox.faults.failNext('cmu', 1, { status: 304, body: '', headers: { etag: other } })
      const before = cmuCalls(sandbox)
      const answer = await call(b.url, report(1))
      t.equal(answer.status, 200, other)
      t.equal(answer.headers['x-cache'], 'MISS', 'not REVALIDATED: the 304 was about another answer')
      t.equal(answer.headers.etag, first.headers.etag, "the body's own ETag, not the 304's")
      t.equal(answer.text, first.text)
      t.equal(cmuCalls(sandbox), before + 2, 'the conditional request, then one unconditional one')
      t.equal(sandbox.cmuRequests.at(-2)?.headers['if-none-match'], first.headers.etag, 'asked about the stored copy')
      t.equal(sandbox.cmuRequests.at(-1)?.headers['if-none-match'], undefined, 'then for the whole answer')
      clock.advance(200_000)
    }
    // A weak 304 for the same tag confirms it (weak comparison is what §4.3.4 asks of a weak validator).
    sandbox.faults.failNext('cmu', 1, { status: 304, body: '', headers: { etag: `W/${String(first.headers.etag)}` } })
    t.equal((await call(a.url, report(1))).headers['x-cache'], 'REVALIDATED')
  })

  t.test('a 304 to a request that was not conditional is a broken answer: 502 CMU_PROXY_UPSTREAM_BAD_RESPONSE, never passed on', async (t) => {
    const { sandbox, a } = await start(t)
    sandbox.faults.failNext('cmu', 1, { status: 304, body: '', headers: { etag: '"x"' } })
    assertProblem(t, await call(a.url, report(1)), 502, 'CMU_PROXY_UPSTREAM_BAD_RESPONSE')
    t.equal(sandbox.cmuRequests.at(-1)?.headers['if-none-match'], undefined, 'the request was not conditional')
  })

  t.test('a 304 that now keeps the answer out (no-store, private, Set-Cookie, Vary: Cookie) serves it once and drops it at both levels', async (t) => {
    const { sandbox, a, b, clock } = await start(t)
    sandbox.reportHeaders = { etag: true, cacheControl: 'max-age=60' }
    const cases: Array<[Record<string, string>, string]> = [[{ 'cache-control': 'no-store' }, 'no-store'], [{ 'cache-control': 'private, max-age=600' }, 'private'], [{ 'set-cookie': 'session=1' }, 'set-cookie'], [{ vary: 'Cookie' }, 'vary']]
    const stored = await Promise.all(cases.map(async (_, i) => await call(a.url, report(10 + i))))
    clock.advance(200_000)
    for (const [i, [headers, reason]] of cases.entries()) {
      sandbox.faults.failNext('cmu', 1, { status: 304, body: '', headers: { etag: String(stored[i]?.headers.etag), ...headers } })
      const revalidated = await call(b.url, report(10 + i))
      t.equal(revalidated.headers['x-cache'], 'REVALIDATED', `${reason}: served this once`)
      t.match(revalidated.headers['cache-status'], new RegExp(`^cmu-proxy; fwd=stale; fwd-status=304; ttl=-?\\d+; detail=${reason}$`))
      t.equal(revalidated.text, stored[i]?.text)
      t.equal(revalidated.headers['set-cookie'], undefined, 'a Set-Cookie never crosses')
      const next = await call(b.url, report(10 + i))
      t.equal(next.headers['x-cache'], 'MISS', `${reason}: nothing kept to serve or revalidate`)
      t.equal(sandbox.cmuRequests.at(-1)?.headers['if-none-match'], undefined, `${reason}: asked for the whole answer`)
    }
    t.match((await call(b.url, '/metrics')).text, /^cmu_proxy_cache_uncacheable_total\{reason="no-store"\} 1$/m)
  })

  t.test('coalesced waiters do not share a revalidated answer that varies on a header outside the key', async (t) => {
    const { sandbox, a, b, clock } = await start(t)
    sandbox.reportHeaders = { etag: true, cacheControl: 'max-age=60' }
    const first = await call(a.url, report(1))
    clock.advance(200_000)
    const adobe = heldAnswer()
    t.teardown(adobe.release)
    sandbox.faults.failNext('cmu', 1, { status: 304, body: '', headers: { etag: String(first.headers.etag), vary: 'Cookie' }, until: adobe.until })
    const before = cmuCalls(sandbox)
    const asking = Promise.all([1, 2, 3].map(async () => await call(b.url, report(1))))
    t.ok(await whenInFlight(b.url, 3), 'three callers wait on one revalidation')
    adobe.release()
    const answers = await asking
    t.same(answers.map((answer) => answer.headers['x-cache']).sort(), ['MISS', 'MISS', 'REVALIDATED'], 'the leader gets it; each waiter asks for its own')
    t.equal(cmuCalls(sandbox), before + 3)
  })

  t.test("a caller's no-cache (or max-age=0, or Pragma: no-cache) reaches Adobe, conditional or not; its no-store keeps Adobe's answer out", async (t) => {
    const { sandbox, a, b } = await start(t)
    sandbox.reportHeaders = { etag: true, cacheControl: 'max-age=600' }
    const first = await call(a.url, report(1))
    const etag = String(first.headers.etag)
    const calls = cmuCalls(sandbox)
    const asks: Array<Record<string, string>> = [{ 'cache-control': 'no-cache' }, { 'cache-control': 'max-age=0' }, { pragma: 'no-cache' }]
    for (const ask of asks) {
      const conditional = await call(b.url, report(1), { headers: { 'if-none-match': etag, ...ask } })
      t.equal(conditional.status, 304, `${JSON.stringify(ask)}: Adobe's own 304`)
      t.equal(conditional.headers['x-cache'], 'BYPASS')
      // A copy in b's memory is confirmed by Adobe first; in a fleet, b's first one is fetched whole (no-cache does not ask the fleet).
      const plain = await call(b.url, report(1), { headers: ask })
      t.match(plain.headers['x-cache'], /^(REVALIDATED|BYPASS)$/, `${JSON.stringify(ask)}: from Adobe, never a plain hit`)
    }
    t.equal(cmuCalls(sandbox), calls + 2 * asks.length, 'each of them asked Adobe')
    t.equal((await call(b.url, report(1), { headers: { 'cache-control': 'max-age=60', pragma: 'no-cache' } })).headers['x-cache'], 'HIT', 'Pragma is ignored beside Cache-Control (§5.4)')

    const noStore = await call(a.url, report(2), { headers: { 'cache-control': 'no-store' } })
    t.equal(noStore.status, 200)
    t.equal(noStore.headers['x-cache'], 'BYPASS')
    t.equal((await call(b.url, report(2))).headers['x-cache'], 'MISS', 'what Adobe answered a no-store request was not kept')
    t.equal((await call(a.url, report(2), { headers: { 'cache-control': 'no-store' } })).headers['x-cache'], 'HIT', 'a fresh stored copy may still answer it (§5.2.1.5)')
  })

  t.test('invalid freshness (max-age=-1, abc, 1.5, a first invalid one, an invalid s-maxage) is stale, never the schedule', async (t) => {
    const { sandbox, a, b } = await start(t)
    for (const [i, cacheControl] of ['max-age=-1', 'max-age=abc', 'max-age=1.5', 'max-age', 'max-age=abc, max-age=600', 's-maxage=x, max-age=600'].entries()) {
      sandbox.reportHeaders = { cacheControl }
      const first = await call(a.url, report(1 + i))
      t.equal(first.headers['cache-status'], 'cmu-proxy; fwd=uri-miss; detail=stale-on-arrival', `${cacheControl}: stale on arrival`)
      t.equal((await call(b.url, report(1 + i))).headers['x-cache'], 'MISS', `${cacheControl}: not an hour of the schedule`)
    }
  })

  t.test("the origin's stale-while-revalidate and stale-if-error (RFC 5861), bounded by ours", async (t) => {
    const { sandbox, a, b, clock } = await start(t, { CACHE_STALE_IF_ERROR_SECONDS: '30' })
    sandbox.reportHeaders = { cacheControl: 'max-age=60, stale-while-revalidate=5, stale-if-error=20' }
    await call(a.url, report(1))
    sandbox.reportHeaders = { cacheControl: 'max-age=60, stale-if-error=600' }
    await call(a.url, report(2))
    clock.advance(63_000)
    // The refresh behind it fails only once the stale answer is out: it cannot have waited for it.
    const adobe = heldAnswer()
    t.teardown(adobe.release)
    const before = cmuCalls(sandbox)
    sandbox.faults.failNext('cmu', 1, { status: 503, until: adobe.until })
    t.equal((await call(b.url, report(1))).headers['x-cache'], 'STALE', "inside the origin's 5 s: served while revalidating")
    adobe.release()
    t.ok(await eventually(() => b.logs.some((line) => line.includes('background cache refresh')) && cmuCalls(sandbox) === before + 1), 'the refresh failed')
    clock.advance(7_000)
    sandbox.faults.failNext('cmu', Infinity, { drop: true })
    const onError = await call(b.url, report(1))
    t.equal(onError.headers['x-cache'], 'STALE', "past it, inside the origin's 20 s of stale-if-error")
    t.match(onError.headers['cache-status'], /detail=unreachable$/)
    clock.advance(20_000)
    assertProblem(t, await call(b.url, report(1)), 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
    t.pass("past the origin's stale-if-error: the failure")
    assertProblem(t, await call(b.url, report(2)), 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
    t.pass("the origin's 600 s bounded by CACHE_STALE_IF_ERROR_SECONDS=30")
    sandbox.faults.clear()
  })

  t.test("a caller's conditional request: 304 from a fresh entry whose validator matches, else forwarded", async (t) => {
    const { sandbox, a, b } = await start(t)
    sandbox.reportHeaders = { etag: true, cacheControl: 'max-age=600' }
    const first = await call(a.url, report(1))
    const etag = String(first.headers.etag)
    const calls = cmuCalls(sandbox)
    const notModified = await call(b.url, report(1), { headers: { 'if-none-match': etag } })
    t.equal(notModified.status, 304)
    t.equal(notModified.headers['x-cache'], 'HIT')
    t.equal(notModified.headers.etag, etag)
    t.equal(notModified.headers['cache-control'], 'max-age=600')
    t.equal(notModified.headers['content-length'], undefined)
    t.equal(notModified.body.length, 0)
    t.equal(cmuCalls(sandbox), calls, 'Adobe was not asked')
    const other = await call(b.url, report(1), { headers: { 'if-none-match': '"something-else"' } })
    t.equal(other.status, 200, "forwarded: Adobe's own answer")
    t.equal(other.headers['x-cache'], 'BYPASS')
    t.equal(sandbox.cmuRequests.at(-1)?.headers['if-none-match'], '"something-else"', "with the caller's validator")
    t.equal(cmuCalls(sandbox), calls + 1)
  })

  t.test("when Adobe's directives keep reports out, Cache-Status, a counter and one log line say why", async (t) => {
    const { sandbox, a, b } = await start(t)
    sandbox.reportHeaders = { cacheControl: 'no-store' }
    const answers: RawResponse[] = []
    for (const proxy of [a, a, b]) answers.push(await call(proxy.url, report(1)))
    for (const answer of answers) {
      t.equal(answer.headers['x-cache'], 'MISS')
      t.equal(answer.headers['cache-status'], 'cmu-proxy; fwd=uri-miss; detail=no-store')
    }
    t.equal(cmuCalls(sandbox), 3)
    t.match((await call(a.url, '/metrics')).text, /^cmu_proxy_cache_uncacheable_total\{reason="no-store"\} [23]$/m)
    const told = a.logs.filter((line) => line.includes('"reason":"no-store"') && line.includes('CACHE_IGNORE_ORIGIN_FRESHNESS'))
    t.equal(told.length, 1, 'one line, naming the switch')
    t.match(told[0], /does not override this/)
    sandbox.reportHeaders = { cacheControl: 'max-age=0' }
    await call(a.url, report(2))
    t.ok(a.logs.some((line) => line.includes('"reason":"stale-on-arrival"') && line.includes('CACHE_IGNORE_ORIGIN_FRESHNESS=true applies the report schedule instead')))
  })

  t.test('CACHE_IGNORE_ORIGIN_FRESHNESS=true: the schedule decides, but no-store still keeps a report out', async (t) => {
    const { sandbox, a, b } = await start(t, { CACHE_IGNORE_ORIGIN_FRESHNESS: 'true' })
    sandbox.reportHeaders = { cacheControl: 'max-age=0, no-cache' }
    t.equal((await call(a.url, report(1))).headers['x-cache'], 'MISS')
    t.equal((await call(b.url, report(1))).headers['x-cache'], 'HIT')
    sandbox.reportHeaders = { cacheControl: 'no-store' }
    t.equal((await call(a.url, report(2))).headers['x-cache'], 'MISS')
    t.equal((await call(b.url, report(2))).headers['x-cache'], 'MISS')
  })

  t.test('the cache key is what is forwarded: one caller cannot poison another representation (issue 19)', async (t) => {
    const { sandbox, a, b } = await start(t)
    const odd = 'text/ht ml,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'
    const browser = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'
    const xml = await call(a.url, report(1), { headers: { accept: odd } })
    t.match(xml.headers['content-type'], /^application\/xml/)
    t.equal(sandbox.cmuRequests.at(-1)?.headers.accept, odd, 'forwarded as it will be keyed')
    const html = await call(b.url, report(1), { headers: { accept: browser } })
    t.equal(html.headers['x-cache'], 'MISS', 'another request, not the XML one')
    t.match(html.headers['content-type'], /^text\/html/)
    const respelled = await call(b.url, report(1), { headers: { accept: 'Text/HTML, application/xhtml+xml , application/xml; q=0.9, */*; q=0.8' } })
    t.equal(respelled.headers['x-cache'], 'HIT', 'the same request spelled otherwise shares it')
    t.match(respelled.headers['content-type'], /^text\/html/)
    t.equal(cmuCalls(sandbox), 2)
  })
}
