// One bounded retry of a dropped connection to Adobe (issue #14): when it
// happens, when it never does, the budget, and what logs and metrics say.
import type { Socket } from 'node:net'
import t from 'tap'
import type { Sandbox } from '../../src/sandbox/server.js'
import { assertProblem, call, eventually, startProxy, startSandbox, startScriptedServer, type RunningProxy } from '../helpers/app.js'

const RANGE = 'start=2026-01-01&end=2026-01-03'

async function metric (proxy: RunningProxy, series: string): Promise<number> {
  const text = (await call(proxy.url, '/metrics')).text
  const escaped = series.replace(/[.*+?^${}()|[\]\\]/g, (c) => `\\${c}`)
  const match = new RegExp(`^${escaped} (\\d+)$`, 'm').exec(text)
  return match === null ? NaN : Number(match[1])
}

function requestLines (proxy: RunningProxy, url: string): Array<Record<string, unknown>> {
  return proxy.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request' && l.url === url)
}

for (const CACHE_ENABLED of ['false', 'true']) {
  t.test(`one dropped connection: the caller gets a 200, Adobe sees two calls (cache ${CACHE_ENABLED})`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED } })
    const path = `/cmu/v2/year/month?${RANGE}`
    const expected = await call(sandbox.authUrl, path, { headers: { authorization: `Bearer ${await readyToken(proxy, sandbox)}` } })
    const before = sandbox.calls.cmu
    sandbox.faults.failNext('cmu', 1, { drop: true })
    const response = await call(proxy.url, path)
    t.equal(response.status, 200)
    t.equal(response.text, expected.text, 'the complete report')
    t.equal(sandbox.calls.cmu - before, 2, 'the drop and its retry')
    t.equal(await metric(proxy, 'cmu_proxy_upstream_retries_total{reason="closed"}'), 1)
    t.equal(await metric(proxy, 'cmu_proxy_upstream_retry_budget_exhausted_total'), 0)
    t.match(requestLines(proxy, path), [{ statusCode: 200, retried: true }], 'the request line says retried')
  })

  t.test(`two drops in a row: 502 after exactly two calls (cache ${CACHE_ENABLED})`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED } })
    await readyToken(proxy, sandbox)
    sandbox.faults.failNext('cmu', 2, { drop: true })
    assertProblem(t, await call(proxy.url, '/cmu/v2/year'), 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
    t.equal(sandbox.calls.cmu, 2, 'one retry, no more')
    t.match(requestLines(proxy, '/cmu/v2/year'), [{ statusCode: 502, code: 'CMU_PROXY_UPSTREAM_UNREACHABLE', retried: true }])
    // Another report: with the cache on, this one rests a few seconds (503 CMU_PROXY_UPSTREAM_FAILING) before Adobe is asked again.
    t.equal((await call(proxy.url, '/cmu/v2/year/month')).status, 200, 'the next request is fine')
    t.notOk('retried' in (requestLines(proxy, '/cmu/v2/year/month')[0] ?? { retried: 'missing line' }), 'a request without a retry has no retried field')
  })

  t.test(`a 503 from Adobe passes through and is not retried (cache ${CACHE_ENABLED})`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED } })
    await readyToken(proxy, sandbox)
    sandbox.faults.failNext('cmu', 1, { status: 503, body: 'Service Unavailable' })
    const response = await call(proxy.url, '/cmu/v2/year')
    t.equal(response.status, 503)
    t.equal(response.text, 'Service Unavailable', "Adobe's answer")
    t.equal(sandbox.calls.cmu, 1)
    t.equal(await metric(proxy, 'cmu_proxy_upstream_retries_total{reason="closed"}'), 0)
  })

  t.test(`a timeout is not retried: 504 after one call (cache ${CACHE_ENABLED})`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED, UPSTREAM_HEADERS_TIMEOUT_MS: '200' } })
    await readyToken(proxy, sandbox)
    sandbox.faults.failNext('cmu', 1, { hang: true })
    assertProblem(t, await call(proxy.url, '/cmu/v2/year'), 504, 'CMU_PROXY_UPSTREAM_TIMEOUT')
    t.equal(sandbox.calls.cmu, 1)
    // In the latency histogram at the time it took, so that CmuProxyAdobeSlow sees calls that never got an answer.
    t.equal(await metric(proxy, 'cmu_proxy_upstream_duration_seconds_count{status_class="timeout"}'), 1)
    t.equal(await metric(proxy, 'cmu_proxy_upstream_duration_seconds_bucket{le="0.1",status_class="timeout"}'), 0, 'observed at 200 ms or more')
    t.equal(await metric(proxy, 'cmu_proxy_upstream_duration_seconds_bucket{le="+Inf",status_class="timeout"}'), 1)
  })

  t.test(`a 401 whose body stalls past UPSTREAM_BODY_TIMEOUT_MS counts as Adobe's answer in the latency histogram, never as a timeout too (cache ${CACHE_ENABLED})`, async (t) => {
    const upstream = await startScriptedServer(t, (_req, res) => {
      res.writeHead(401, { 'content-type': 'text/plain', 'content-length': '100' })
      res.write('Unauthor')
    })
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED, ADOBE_CMU_URL: `${upstream.url}/cmu`, UPSTREAM_BODY_TIMEOUT_MS: '200' } })
    await call(proxy.url, '/readyz')
    t.ok((await call(proxy.url, '/cmu/v2/year')).status >= 500, 'answered with a failure')
    t.ok(await metric(proxy, 'cmu_proxy_upstream_duration_seconds_count{status_class="4xx"}') >= 1, 'Adobe\'s 401')
    t.ok(Number.isNaN(await metric(proxy, 'cmu_proxy_upstream_duration_seconds_count{status_class="timeout"}')), 'no timeout: the headers came')
  })

  t.test(`a drop in mid-body is not retried (cache ${CACHE_ENABLED})`, async (t) => {
    const upstream = await startScriptedServer(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/csv', 'content-length': '100' })
      res.write('year,month\n', () => { setTimeout(() => res.socket?.destroy(), 20) })
    })
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED, ADOBE_CMU_URL: `${upstream.url}/cmu` } })
    await call(proxy.url, '/readyz')
    const outcome = await call(proxy.url, '/cmu/v2/year.csv').catch((err: Error) => err)
    if (CACHE_ENABLED === 'false') {
      // The status line and 11 bytes were out: the caller's connection is cut, never answered a second time.
      t.type(outcome, Error, 'the caller sees a cut connection')
      t.match((outcome as Error & { code?: string }).code ?? (outcome as Error).message, /ECONNRESET|aborted/)
    } else {
      // Read into memory for the cache: nothing had reached the caller, so a clean problem.
      assertProblem(t, outcome as Awaited<ReturnType<typeof call>>, 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
    }
    t.equal(upstream.requests.length, 1, 'one upstream call')
  })
}

t.test('a HEAD whose connection drops is retried too', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  await readyToken(proxy, sandbox)
  sandbox.faults.failNext('cmu', 1, { drop: true })
  const head = await call(proxy.url, `/cmu/v2/year.csv?${RANGE}`, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.match(head.headers['content-type'], /^text\/csv/)
  t.equal(sandbox.calls.cmu, 2)
})

t.test('a refused connection is retried once, then 502', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ADOBE_CMU_URL: 'http://127.0.0.1:1/cmu' } })
  assertProblem(t, await call(proxy.url, '/cmu/v2'), 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
  t.equal(await metric(proxy, 'cmu_proxy_upstream_retries_total{reason="refused"}'), 1)
})

t.test('the retry goes out on a fresh connection, never on another pooled keep-alive one', async (t) => {
  const stale = new Set<Socket>()
  const seen = new Set<Socket>()
  const used: Array<{ fresh: boolean, connection: string | undefined }> = []
  const upstream = await startScriptedServer(t, (req, res) => {
    const socket = res.socket as Socket
    used.push({ fresh: !seen.has(socket), connection: req.headers.connection })
    seen.add(socket)
    // What a load balancer that closed idle connections looks like to the next request on one.
    if (stale.has(socket)) return void socket.destroy()
    setTimeout(() => { res.writeHead(200, { 'content-type': 'application/json' }).end('{}') }, 50)
  })
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ADOBE_CMU_URL: `${upstream.url}/cmu` } })
  await call(proxy.url, '/readyz')
  // Three keep-alive connections in the pool, then every one of them goes stale.
  await Promise.all([1, 2, 3].map(async (n) => await call(proxy.url, `/cmu/v2?n=${n}`)))
  for (const socket of seen) stale.add(socket)
  t.equal(stale.size, 3, 'three pooled connections')
  used.length = 0
  const response = await call(proxy.url, '/cmu/v2?n=4')
  t.equal(response.status, 200)
  t.same(used, [{ fresh: false, connection: 'keep-alive' }, { fresh: true, connection: 'close' }], 'dropped on a pooled connection, answered on a new one that serves only the retry')
})

t.test('past the budget (10% of requests in 10 s, at least 3) drops are no longer retried, and the metrics say so', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  await readyToken(proxy, sandbox)
  for (let i = 0; i < 3; i++) {
    sandbox.faults.failNext('cmu', 1, { drop: true })
    t.equal((await call(proxy.url, `/cmu/v2/year?limit=${i + 1}`)).status, 200, `drop ${i + 1} retried`)
  }
  sandbox.faults.failNext('cmu', 1, { drop: true })
  const before = sandbox.calls.cmu
  assertProblem(t, await call(proxy.url, '/cmu/v2/year?limit=4'), 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
  t.equal(sandbox.calls.cmu - before, 1, 'not retried')
  t.equal(await metric(proxy, 'cmu_proxy_upstream_retries_total{reason="closed"}'), 3)
  t.equal(await metric(proxy, 'cmu_proxy_upstream_retry_budget_exhausted_total'), 1)
  t.notOk('retried' in (requestLines(proxy, '/cmu/v2/year?limit=4')[0] ?? { retried: 'missing line' }), 'not logged as retried')
})

t.test('a coalesced miss whose connection drops is retried once for all its waiters', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true' } })
  await readyToken(proxy, sandbox)
  const path = `/cmu/v2/year/month/day?${RANGE}`
  // Dropped late enough that every waiter has joined the leader's request.
  sandbox.faults.failNext('cmu', 1, { drop: true, afterMs: 300 })
  const answers = await Promise.all(Array.from({ length: 10 }, async () => await call(proxy.url, path)))
  t.same(new Set(answers.map((a) => a.status)), new Set([200]), 'every waiter got a 200')
  t.equal(new Set(answers.map((a) => a.text)).size, 1, 'the same bytes')
  t.equal(sandbox.calls.cmu, 2, 'one drop, one retry, for all ten')
  t.equal(await metric(proxy, 'cmu_proxy_upstream_retries_total{reason="closed"}'), 1)
  t.equal(requestLines(proxy, path).filter((line) => line.retried === true).length, 10, "every waiter's line says retried")
  t.equal((await call(proxy.url, path)).headers['x-cache'], 'HIT', 'and the retried answer was cached')
  t.notOk('retried' in (requestLines(proxy, path)[10] ?? { retried: 'missing line' }), 'a hit was not retried')
})

t.test('the token call is retried once on a dropped connection; registration never is', async (t) => {
  const sandbox = await startSandbox(t)
  sandbox.faults.failNext('token', 1, { drop: true })
  const proxy = await startProxy(t, sandbox)
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  t.equal(sandbox.calls.token, 2, 'the drop and its retry')
  t.match(proxy.app.broker.status().counts, { tokenRequests: 1, tokenFailures: 0 }, 'one successful token request for the broker')
  t.equal(await metric(proxy, 'cmu_proxy_upstream_retries_total{reason="closed"}'), 1)

  const other = await startSandbox(t)
  other.faults.failNext('register', 1, { drop: true })
  // A long backoff: nothing but a retry could make a second registration now.
  const unregistered = await startProxy(t, other, { env: { TOKEN_RETRY_BASE_MS: '60000', TOKEN_RETRY_MAX_MS: '60000' } })
  assertProblem(t, await call(unregistered.url, '/cmu/v2'), 503, 'CMU_PROXY_NOT_REGISTERED')
  t.equal(other.calls.register, 1, 'registration is not idempotent: not retried')
})

/** Waits for the proxy's first token and returns it (so that tests count only CMU calls). */
async function readyToken (proxy: RunningProxy, sandbox: Sandbox): Promise<string> {
  await eventually(async () => (await call(proxy.url, '/readyz')).status === 200)
  return sandbox.dcr.issued.at(-1)?.token ?? ''
}
