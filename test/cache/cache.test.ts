// The response cache and request coalescing, through the proxy over HTTP.
import { brotliCompressSync, gunzipSync, gzipSync } from 'node:zlib'
import t from 'tap'
import { Agent, request } from 'undici'
import { CacheLayer, type CacheOutcome } from '../../src/cache/cache-layer.js'
import { ResponseCache } from '../../src/cache/response-cache.js'
import { createLogger } from '../../src/kernel/logger.js'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { callerResponseHeaders } from '../../src/upstream/header-policy.js'
import type { Origin } from '../../src/upstream/origin.js'
import { request as httpRequest } from 'node:http'
import { assertProblem, call, eventually, startProxy, startSandbox, startScriptedServer, whenInFlight } from '../helpers/app.js'

const CACHE_ON = { CACHE_ENABLED: 'true' }
const RANGE = 'start=2026-11-01&end=2026-11-03'

/** A clock the test moves by hand; the proxy's broker and cache both read it. */
function manualClock (start = Date.parse('2026-11-27T10:00:00Z')): { now: () => number, advance: (ms: number) => void } {
  let now = start
  return { now: () => now, advance: (ms) => { now += ms } }
}

t.test('100 identical concurrent misses make one upstream request; the next 100 make none', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHE_ON })
  await call(proxy.url, '/readyz')
  // Adobe answers once all 100 are at the proxy (a delay would not do on a loaded machine, issue 18).
  const adobe = heldAnswer()
  sandbox.faults.failNext('cmu', 1, { until: adobe.until })
  const path = `/cmu/v2/year/month/day?${RANGE}`
  const asked = Date.now()
  const asking = Promise.all(Array.from({ length: 100 }, async () => await call(proxy.url, path)))
  t.ok(await whenInFlight(proxy.url, 100), 'all 100 are waiting')
  adobe.release()
  const first = await asking
  t.equal(sandbox.calls.cmu, 1, 'one upstream request for 100 callers')
  t.same(new Set(first.map((r) => r.status)), new Set([200]))
  t.same(new Set(first.map((r) => r.headers['x-cache'])), new Set(['MISS']))
  t.equal(new Set(first.map((r) => r.headers['x-request-id'])).size, 100, 'each caller keeps its own headers')
  const second = await Promise.all(Array.from({ length: 100 }, async () => await call(proxy.url, path)))
  t.equal(sandbox.calls.cmu, 1, 'no upstream request for hits')
  t.same(new Set(second.map((r) => r.headers['x-cache'])), new Set(['HIT']))
  const bodies = new Set([...first, ...second].map((r) => r.text))
  t.equal(bodies.size, 1, 'identical bodies')
  t.equal(second[0]?.headers['content-length'], String(second[0]?.body.length))
  // Age counts from when Adobe was asked, its held answer included (RFC 9111 §4.2.3).
  t.ok(Number(second[0]?.headers.age) <= Math.ceil((Date.now() - asked) / 1000), `Age ${String(second[0]?.headers.age)}: at most the seconds since Adobe was asked`)
})

t.test('representations are cached apart: gzip vs identity, CSV vs JSON', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHE_ON })
  const path = `/cmu/v2/year/month/day?${RANGE}`
  const gzip = await call(proxy.url, path, { headers: { 'accept-encoding': 'gzip' } })
  const plain = await call(proxy.url, path)
  t.equal(plain.headers['x-cache'], 'MISS', 'a gzip entry does not serve an identity caller')
  t.equal(plain.headers['content-encoding'], undefined)
  const gzipHit = await call(proxy.url, path, { headers: { 'accept-encoding': 'gzip, deflate' } })
  t.equal(gzipHit.headers['x-cache'], 'HIT')
  t.equal(gzipHit.headers['content-encoding'], 'gzip')
  t.equal(gunzipSync(gzipHit.body).toString(), plain.text)
  t.same(gzipHit.body, gzip.body)
  const plainHit = await call(proxy.url, path, { headers: { 'accept-encoding': 'gzip;q=0' } })
  t.equal(plainHit.headers['x-cache'], 'HIT')
  t.equal(plainHit.text, plain.text)

  const csv = await call(proxy.url, path, { headers: { accept: 'text/csv' } })
  t.equal(csv.headers['x-cache'], 'MISS', 'CSV is not the JSON entry')
  t.match(csv.headers['content-type'], /^text\/csv/)
  t.equal((await call(proxy.url, path, { headers: { accept: 'text/csv' } })).headers['x-cache'], 'HIT')
  t.match((await call(proxy.url, path)).headers['content-type'], /^application\/json/)
  const csvByExtension = await call(proxy.url, `/cmu/v2/year/month/day.csv?${RANGE}`, { headers: { accept: 'application/json' } })
  t.match(csvByExtension.headers['content-type'], /^text\/csv/)
  t.equal((await call(proxy.url, `/cmu/v2/year/month/day.csv?${RANGE}`, { headers: { accept: 'application/json' } })).headers['x-cache'], 'HIT')
  t.equal((await call(proxy.url, `/cmu/v2/year/month/day.csv?${RANGE}`, { headers: { accept: 'text/html' } })).headers['x-cache'], 'MISS', 'Adobe varies on Accept: another Accept is another entry')
  t.equal(sandbox.calls.cmu, 5)
})

/**
 * An upstream that negotiates like a CDN would: br when offered, else gzip,
 * else identity. Its answers wait for `release()` (the test releases them once
 * the callers it needs overlap are all at the proxy); later ones go at once.
 */
async function negotiatingUpstream (t: Parameters<typeof startScriptedServer>[0], extraHeaders: Record<string, string> = {}): Promise<{ url: string, requests: Array<{ headers: Record<string, string | string[] | undefined> }>, release: () => void }> {
  const adobe = heldAnswer()
  t.teardown(adobe.release)
  const server = await startScriptedServer(t, (req, res) => {
    const offered = String(req.headers['accept-encoding'] ?? '')
    const body = JSON.stringify({ report: [{ lang: req.headers['accept-language'] ?? 'none' }] })
    const [encoding, bytes] = /\bbr\b/.test(offered) ? ['br', brotliCompressSync(body)] : /\bgzip\b/.test(offered) ? ['gzip', gzipSync(body)] : [undefined, Buffer.from(body)]
    void adobe.until.then(() => {
      res.writeHead(200, { 'content-type': 'application/json', vary: 'Accept, Accept-Encoding, Accept-Language', ...(encoding === undefined ? {} : { 'content-encoding': encoding }), ...extraHeaders })
      res.end(bytes)
    })
  })
  return { ...server, release: adobe.release }
}

t.test('coalesced waiters and later hits only ever get an encoding they accepted', async (t) => {
  const upstream = await negotiatingUpstream(t)
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ...CACHE_ON, ADOBE_CMU_URL: `${upstream.url}/cmu` } })
  // What each offer may get: gzip only where it accepts gzip (RFC 9110 §12.5.3: an explicit q=0 beats *).
  const offers: Array<[string | undefined, boolean]> = [['gzip, br', true], ['gzip', true], [undefined, false], ['br', false], ['gzip, br', true], ['identity', false], ['gzip;q=0, *', false], ['*', true], ['br;q=1, gzip;q=0.5', true]]
  const asking = Promise.all(offers.map(async ([offer]) => await call(proxy.url, '/cmu/v2/year', { headers: offer === undefined ? {} : { 'accept-encoding': offer } })))
  t.ok(await whenInFlight(proxy.url, offers.length), 'all nine are waiting for Adobe')
  upstream.release()
  const answers = await asking
  for (const [i, answer] of answers.entries()) {
    const [offer, gzipAccepted] = offers[i] ?? []
    const encoding = answer.headers['content-encoding']
    t.equal(answer.status, 200)
    t.equal(encoding, gzipAccepted === true ? 'gzip' : undefined, `offered ${String(offer)}: got ${String(encoding)}`)
    t.same(JSON.parse((encoding === 'gzip' ? gunzipSync(answer.body) : answer.body).toString()), { report: [{ lang: 'none' }] })
  }
  t.same(new Set(upstream.requests.map((r) => r.headers['accept-encoding'])), new Set(['gzip', 'identity']), 'Adobe is offered exactly gzip or identity')
  t.equal(upstream.requests.length, 2, 'one request per representation')
  const brOnly = await call(proxy.url, '/cmu/v2/year', { headers: { 'accept-encoding': 'br' } })
  t.equal(brOnly.headers['x-cache'], 'HIT')
  t.equal(brOnly.headers['content-encoding'], undefined, 'a br-only caller gets identity from the cache')
  const gzipOnly = await call(proxy.url, '/cmu/v2/year', { headers: { 'accept-encoding': 'gzip' } })
  t.equal(gzipOnly.headers['x-cache'], 'HIT')
  t.equal(gzipOnly.headers['content-encoding'], 'gzip')
})

t.test('Accept-Language is part of the key', async (t) => {
  const upstream = await negotiatingUpstream(t)
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ...CACHE_ON, ADOBE_CMU_URL: `${upstream.url}/cmu` } })
  upstream.release()
  const [fr, de] = await Promise.all(['fr', 'de'].map(async (lang) => await call(proxy.url, '/cmu/v2/year', { headers: { 'accept-language': lang } })))
  t.same(fr?.json(), { report: [{ lang: 'fr' }] })
  t.same(de?.json(), { report: [{ lang: 'de' }] })
  t.equal((await call(proxy.url, '/cmu/v2/year', { headers: { 'accept-language': 'de' } })).json().report[0].lang, 'de')
  t.equal(upstream.requests.length, 2)
})

for (const vary of ['User-Agent', '*']) {
  t.test(`an answer with Vary: ${vary} is neither shared with waiters nor cached`, async (t) => {
    const upstream = await negotiatingUpstream(t, { vary })
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { ...CACHE_ON, ADOBE_CMU_URL: `${upstream.url}/cmu` } })
    const asking = Promise.all(['a/1', 'b/2', 'c/3'].map(async (agent) => await call(proxy.url, '/cmu/v2/year', { headers: { 'user-agent': agent } })))
    t.ok(await whenInFlight(proxy.url, 3), 'the three overlap')
    upstream.release()
    const answers = await asking
    t.same(answers.map((a) => a.status), [200, 200, 200])
    t.equal(upstream.requests.length, 3, 'each caller went upstream with its own User-Agent')
    t.same(upstream.requests.map((r) => r.headers['user-agent']).sort(), ['a/1', 'b/2', 'c/3'])
    t.equal((await call(proxy.url, '/cmu/v2/year')).headers['x-cache'], 'MISS', 'not cached')
  })
}

for (const CACHE_ENABLED of ['true', 'false']) {
  t.test(`an upstream that ignores Accept-Encoding never hands a caller an encoding it refused (cache ${CACHE_ENABLED})`, async (t) => {
    const upstream = await startScriptedServer(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'br' })
      res.end(brotliCompressSync('{"report":[]}'))
    })
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED, ADOBE_CMU_URL: `${upstream.url}/cmu` } })
    for (const offer of ['gzip', 'identity']) {
      const answer = await call(proxy.url, '/cmu/v2/year', { headers: { 'accept-encoding': offer } })
      assertProblem(t, answer, 502, 'CMU_PROXY_UPSTREAM_BAD_ENCODING')
    }
  })
}

t.test('TTL follows the finest time dimension, capped, and expired entries refetch', async (t) => {
  const clock = manualClock()
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ...CACHE_ON, CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0' }, now: clock.now })
  const cases: Array<[string, number]> = [
    ['/cmu/v2/year/month/day/hour/minute', 60],
    ['/cmu/v2/year/month/day/hour', 3600],
    ['/cmu/v2/year/month/day.csv', 3 * 3600],
    ['/cmu/v2/year/month', 2 * 86400],
    ['/cmu/v2/year', 2 * 86400],
    ['/cmu/v2/tenant/mvpd', 86400]
  ]
  for (const [path, ttl] of cases) {
    const url = `${path}?limit=5`
    t.equal((await call(proxy.url, url)).headers['x-cache'], 'MISS', `${path}: first`)
    clock.advance((ttl - 1) * 1000)
    const hit = await call(proxy.url, url)
    t.equal(hit.headers['x-cache'], 'HIT', `${path}: fresh at ${ttl - 1} s`)
    t.equal(hit.headers.age, String(ttl - 1), 'Age')
    clock.advance(1000)
    t.equal((await call(proxy.url, url)).headers['x-cache'], 'MISS', `${path}: refetched at ${ttl} s`)
  }
})

t.test('CACHE_TTL_MAX_SECONDS caps the TTL; reports that ended long ago are kept for the cap', async (t) => {
  const clock = manualClock()
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ...CACHE_ON, CACHE_TTL_MAX_SECONDS: '600', CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0' }, now: clock.now })
  await call(proxy.url, '/cmu/v2/year/month/day?limit=3')
  clock.advance(600_000)
  t.equal((await call(proxy.url, '/cmu/v2/year/month/day?limit=3')).headers['x-cache'], 'MISS', 'a 3 h TTL capped at 10 min')

  const past = '/cmu/v2/year/month/day/hour/minute?start=2026-01-01&end=2026-01-01T01:00'
  await call(proxy.url, past)
  clock.advance(599_000)
  t.equal((await call(proxy.url, past)).headers['x-cache'], 'HIT', 'a minute report from January outlives its 60 s TTL')
})

t.test('the byte bound evicts least-recently-used entries; oversized bodies stream uncached', async (t) => {
  const sandbox = await startSandbox(t)
  const maxBytes = 40_000
  const proxy = await startProxy(t, sandbox, { env: { ...CACHE_ON, CACHE_MAX_BYTES: String(maxBytes), CACHE_MAX_ENTRY_BYTES: '12000' } })
  const cache = proxy.app.responseCache
  const report = (day: number): string => `/cmu/v2/year/month/day/hour?start=2026-10-${String(day).padStart(2, '0')}&end=2026-10-${String(day).padStart(2, '0')}T12:00`
  const sizes: number[] = []
  for (let day = 1; day <= 12; day++) {
    sizes.push((await call(proxy.url, report(day))).body.length)
    await call(proxy.url, report(1)) // keep day 1 recently used
    t.ok((cache?.stats().bytes ?? Infinity) <= maxBytes, `held bytes within the bound after ${day} reports`)
  }
  t.ok(sizes.every((s) => s > 2_000 && s < 12_000), 'entries of a few KB')
  const stats = cache?.stats()
  t.ok((stats?.evictions ?? 0) > 0, `evicted ${stats?.evictions ?? 0}`)
  t.equal((await call(proxy.url, report(1))).headers['x-cache'], 'HIT', 'the recently used entry survived')
  t.equal((await call(proxy.url, report(2))).headers['x-cache'], 'MISS', 'the least recently used one was evicted')

  const big = '/cmu/v2/year/month/day/hour?start=2026-10-01&end=2026-10-05'
  const before = sandbox.calls.cmu
  const first = await call(proxy.url, big)
  const second = await call(proxy.url, big)
  t.ok(first.body.length > 12_000, `body of ${first.body.length} bytes is over the entry limit`)
  t.equal(first.json().report.length, 96, 'streamed complete')
  t.equal(second.text, first.text)
  t.equal(sandbox.calls.cmu - before, 2, 'not cached')
  t.equal(first.headers['x-cache'], 'MISS')
})

t.test('concurrent misses for a body over the entry limit each get it complete', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ...CACHE_ON, CACHE_MAX_ENTRY_BYTES: '1000' } })
  await call(proxy.url, '/readyz')
  const adobe = heldAnswer()
  t.teardown(adobe.release)
  sandbox.faults.failNext('cmu', 1, { until: adobe.until })
  const path = `/cmu/v2/year/month/day?${RANGE}`
  const asking = Promise.all(Array.from({ length: 5 }, async () => await call(proxy.url, path)))
  t.ok(await whenInFlight(proxy.url, 5), 'all five are waiting')
  adobe.release()
  const answers = await asking
  t.same(answers.map((a) => a.status), [200, 200, 200, 200, 200])
  t.equal(new Set(answers.map((a) => a.text)).size, 1, 'same complete body')
  t.equal(answers[0]?.json().report.length, 2)
})

t.test('no-cache bypasses and refreshes; errors are not cached and every waiter sees them', async (t) => {
  const clock = manualClock()
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHE_ON, now: clock.now })
  const path = `/cmu/v2/year?${RANGE}`
  await call(proxy.url, path)
  const bypass = await call(proxy.url, path, { headers: { 'cache-control': 'no-cache' } })
  t.equal(bypass.headers['x-cache'], 'BYPASS')
  t.equal(sandbox.calls.cmu, 2)
  t.equal((await call(proxy.url, path, { headers: { pragma: 'no-cache' } })).headers['x-cache'], 'BYPASS')
  t.equal((await call(proxy.url, path)).headers['x-cache'], 'HIT', 'the refreshed entry serves')

  const failing = `/cmu/v2/tenant?${RANGE}`
  const failure = heldAnswer()
  sandbox.faults.failNext('cmu', 1, { status: 500, body: 'Internal error', until: failure.until })
  const waiting = Promise.all(Array.from({ length: 10 }, async () => await call(proxy.url, failing)))
  t.ok(await whenInFlight(proxy.url, 10), 'ten waiters')
  failure.release()
  const waiters = await waiting
  t.same(new Set(waiters.map((w) => w.status)), new Set([500]), 'every waiter got the 500')
  t.same(new Set(waiters.map((w) => w.text)), new Set(['Internal error']))
  const countAfterError = sandbox.calls.cmu
  // The key rests a few seconds after Adobe's 500: with no copy to serve, a caller hears when to come back.
  assertProblem(t, await call(proxy.url, failing), 503, 'CMU_PROXY_UPSTREAM_FAILING')
  t.equal(sandbox.calls.cmu, countAfterError, 'Adobe is not asked while the key rests')
  clock.advance(5_000)
  const retry = await call(proxy.url, failing)
  t.equal(retry.status, 200, 'not cached')
  t.equal(sandbox.calls.cmu, countAfterError + 1)
})

t.test('a request dropped twice (the call and its one retry): every coalesced waiter sees the 502', async (t) => {
  // Adobe drops the first connection once all five callers wait on it, and the retry at once.
  const adobe = heldAnswer()
  t.teardown(adobe.release)
  const upstream = await startScriptedServer(t, (req, res) => {
    if (upstream.requests.length === 1) void adobe.until.then(() => res.socket?.destroy())
    else res.socket?.destroy()
  })
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ...CACHE_ON, ADOBE_CMU_URL: `${upstream.url}/cmu` } })
  const asking = Promise.all(Array.from({ length: 5 }, async () => await call(proxy.url, `/cmu/v2/mvpd?${RANGE}`)))
  t.ok(await whenInFlight(proxy.url, 5), 'all five wait on one call')
  adobe.release()
  for (const answer of await asking) assertProblem(t, answer, 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
  t.equal(upstream.requests.length, 2, 'one request and one retry for all five')
})

t.test('upstream no-store, private and Set-Cookie prevent caching', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHE_ON })
  const refusals: Array<Record<string, string>> = [{ 'cache-control': 'no-store' }, { 'cache-control': 'private, max-age=60' }, { 'set-cookie': 'a=b' }]
  for (const headers of refusals) {
    const path = `/cmu/v2?case=${encodeURIComponent(JSON.stringify(headers))}`
    sandbox.faults.failNext('cmu', 1, { status: 200, body: '{"report":[]}', contentType: 'application/json', headers })
    t.equal((await call(proxy.url, path)).status, 200)
    t.equal((await call(proxy.url, path)).headers['x-cache'], 'MISS', JSON.stringify(headers))
  }
})

t.test('conditional requests bypass the cache; HEAD is served from it', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHE_ON })
  const path = `/cmu/v2/year.csv?${RANGE}`
  const get = await call(proxy.url, path)
  const head = await call(proxy.url, path, { method: 'HEAD' })
  t.equal(head.headers['x-cache'], 'HIT')
  t.equal(head.headers['content-length'], String(get.body.length))
  t.equal(head.body.length, 0)
  const conditional = await call(proxy.url, path, { headers: { 'if-none-match': '"abc"' } })
  t.equal(conditional.headers['x-cache'], 'BYPASS')
  t.equal(sandbox.calls.cmu, 2)
})

t.test('a token refresh neither flushes nor corrupts the cache', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHE_ON })
  const path = `/cmu/v2/year/month?${RANGE}`
  const before = await call(proxy.url, path)
  sandbox.dcr.revokeTokens()
  await proxy.app.broker.refreshNow()
  t.equal(sandbox.calls.token, 2, 'a new token')
  const after = await call(proxy.url, path)
  t.equal(after.headers['x-cache'], 'HIT')
  t.equal(after.text, before.text)
  t.equal(sandbox.calls.cmu, 1)
  t.equal((await call(proxy.url, `/cmu/v2/year?${RANGE}`)).status, 200, 'misses use the new token')
})

t.test('CACHE_ENABLED=false: no X-Cache, every request goes upstream', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'false' } })
  const first = await call(proxy.url, '/cmu/v2')
  await call(proxy.url, '/cmu/v2')
  t.equal(first.headers['x-cache'], undefined)
  t.equal(proxy.app.responseCache, undefined)
  t.equal(sandbox.calls.cmu, 2)
})

t.test('past CACHE_MAX_INFLIGHT_BYTES, concurrent misses stream uncached instead of piling up in memory', async (t) => {
  const body = 'x'.repeat(4_000)
  const ends = heldAnswer()
  t.teardown(ends.release)
  const upstream = await startScriptedServer(t, (_req, res) => {
    // The whole body at once, the end once the test says: all three are being read at the same time.
    res.writeHead(200, { 'content-type': 'text/csv' })
    res.write(body)
    void ends.until.then(() => res.end())
  })
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ...CACHE_ON, ADOBE_CMU_URL: `${upstream.url}/cmu`, CACHE_MAX_INFLIGHT_BYTES: '10000' } })
  await call(proxy.url, '/readyz')
  // Two bodies fill the budget and wait for their end; the third does not fit, so its caller gets the headers at once.
  let streamed = (): void => {}
  const oneStreams = new Promise<void>((resolve) => { streamed = resolve })
  const asking = Promise.all([1, 2, 3].map(async (n) => await callWithHeaders(proxy.url, `/cmu/v2/year.csv?n=${n}`, streamed)))
  await oneStreams
  ends.release()
  const answers = await asking
  t.same(answers.map((a) => a.text), [body, body, body], 'every caller got the complete body')
  const hits = await Promise.all([1, 2, 3].map(async (n) => (await call(proxy.url, `/cmu/v2/year.csv?n=${n}`)).headers['x-cache']))
  t.equal(hits.filter((h) => h === 'HIT').length, 2, 'two fitted in the budget and were cached; the third streamed')
  t.match((await call(proxy.url, '/metrics')).text, /cmu_proxy_cache_buffering_bytes 0\n/, 'the budget is given back')
})

t.test('a caller arriving after everyone else left starts afresh instead of joining cancelled work', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHE_ON })
  await call(proxy.url, '/readyz')
  // The next report call waits for a token Adobe holds: the shared work is stuck before it reaches Adobe.
  sandbox.dcr.revokeTokens()
  await call(proxy.url, '/cmu/v2/tenant')
  const tokens = sandbox.calls.token
  const token = heldAnswer()
  t.teardown(token.release)
  sandbox.faults.failNext('token', 1, { until: token.until })
  const path = `/cmu/v2/year?${RANGE}`
  sandbox.faults.failNext('cmu', 1, { status: 401, body: 'expired' })
  const leaving = new AbortController()
  const first = call(proxy.url, path, { signal: leaving.signal }).catch((err: Error) => err)
  t.ok(await eventually(() => sandbox.calls.token === tokens + 1), 'the shared work waits for a token')
  leaving.abort()
  await first
  // Only the /metrics call that asks is in flight.
  t.ok(await eventually(async () => /^cmu_proxy_requests_in_flight 1$/m.test((await call(proxy.url, '/metrics')).text)), 'the proxy saw the caller go')
  const second = call(proxy.url, path)
  t.ok(await whenInFlight(proxy.url, 1), 'the later caller arrived while the cancelled work still waits')
  token.release()
  t.equal((await second).status, 200, 'the later caller gets the report, not a 499 meant for the one who left')
})

t.test('a body read into memory stays charged to CACHE_MAX_INFLIGHT_BYTES until its callers have sent it', async (t) => {
  const body = Buffer.alloc(6_000, 'x')
  const upstream = await startScriptedServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/csv', 'cache-control': 'no-store' })
    res.end(body)
  })
  const cache = new ResponseCache({ maxBytes: 100_000, maxEntryBytes: 50_000 })
  const dispatcher = new Agent()
  t.teardown(async () => { await dispatcher.close() })
  // The simplest origin: the scripted server, no token.
  const origin: Origin = {
    fetch: async () => {
      const dispatchedAt = Date.now()
      const response = await request(`${upstream.url}/cmu/v2/year.csv`, { dispatcher })
      return { status: response.statusCode, headers: response.headers, body: response.body, retried: false, dispatchedAt }
    }
  }
  const layer = new CacheLayer({ cache, origin, callerHeaders: callerResponseHeaders, ttlMaxSeconds: 600, staleIfErrorSeconds: 0, staleWhileRevalidateSeconds: 0, bufferingMaxBytes: 10_000, logger: createLogger('silent'), now: Date.now, wallNow: Date.now })
  const caller = { callerGone: () => new AbortController().signal }
  const ask = async (n: number): Promise<CacheOutcome> => await layer.answer({ target: { api: 'cmu', path: '/v2/year.csv', query: `n=${n}` }, headers: {}, id: `r${n}`, ip: '127.0.0.1', gzipAccepted: false, accept: undefined, acceptLanguage: undefined }, caller)

  const slow = await ask(1)
  t.equal(slow.kind === 'fetched' && slow.answer.kind, 'buffered', 'the first body is read into memory (no-store: not cached)')
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(layer.bufferingBytes, 6_000, 'and stays charged while its caller has not sent it')
  const next = await ask(2)
  t.equal(next.kind === 'fetched' && next.answer.kind, 'streamed', 'past the budget, the next one streams instead of piling up')
  if (next.kind === 'fetched' && next.answer.kind === 'streamed') next.answer.claim()?.resume()
  if (slow.kind === 'fetched' && slow.answer.kind === 'buffered') slow.answer.release()
  t.equal(layer.bufferingBytes, 0, 'given back once sent')
})

/** GET `path`, calling `onHeaders` when the response headers arrive (before the body); resolves with the body. */
async function callWithHeaders (baseUrl: string, path: string, onHeaders: () => void): Promise<{ text: string }> {
  const { hostname, port } = new URL(baseUrl)
  return await new Promise((resolve, reject) => {
    httpRequest({ host: hostname, port, path }, (res) => {
      onHeaders()
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c)).on('error', reject).on('end', () => { resolve({ text: Buffer.concat(chunks).toString('utf8') }) })
    }).on('error', reject).end()
  })
}
