// OpenTelemetry traces: a local OTLP/HTTP receiver on loopback gets the spans
// of real requests through the proxy; the caller's trace is continued, log
// lines carry the ids, no secret lands in an attribute, and with tracing off
// nothing is exported.
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { COMMAND_TIMEOUT_MS, lockAttempts, member, waitingOnLock } from '../helpers/fleet.js'
import { call, eventually, startProxy, startSandbox, whenInFlight } from '../helpers/app.js'
import { attribute, jsonExport, startReceiver, tracedProxy, type OtlpSpan } from '../helpers/otlp-receiver.js'
import { startRedisServer } from '../helpers/redis-server.js'

const TRACE_ID = '0af7651916cd43dd8448eb211c80319c'
const TRACEPARENT = `00-${TRACE_ID}-b7ad6b7169203331-01`

/** Semantic conventions: recorded on resends only, from 1. */
function resendCount (span: OtlpSpan): number | undefined {
  const value = attribute(span, 'http.request.resend_count')
  return value === undefined ? undefined : Number(value)
}

t.test('the caller\'s trace is continued: server span, token wait, upstream attempts with the retry marked', async (t) => {
  const { proxy, receiver, sandbox } = await tracedProxy(t)
  t.ok(await eventually(async () => (await call(proxy.url, '/readyz')).status === 200), 'a token is held')
  // A revoked token: the first attempt gets a 401, the caller waits for a new token, the second attempt succeeds.
  sandbox.dcr.revokeTokens()
  const response = await call(proxy.url, '/cmu/v2/year?limit=3', { headers: { traceparent: TRACEPARENT } })
  t.equal(response.status, 200)
  await proxy.close()

  const spans = receiver.spans().filter((s) => s.traceId === TRACE_ID)
  const server = spans.find((s) => s.name === 'GET /cmu/*')
  t.ok(server !== undefined, 'a server span named after the route')
  t.equal(server?.parentSpanId, 'b7ad6b7169203331', "a child of the caller's span")
  t.equal(attribute(server, 'http.request.method'), 'GET')
  t.equal(attribute(server, 'url.path'), '/cmu/v2/year')
  t.equal(attribute(server, 'url.query'), 'limit=3')
  t.equal(attribute(server, 'http.route'), '/cmu/*')
  t.equal(Number(attribute(server, 'http.response.status_code')), 200)
  const attempts = spans.filter((s) => s.name === 'GET' && s.kind === 3)
  t.same(attempts.map((s) => Number(attribute(s, 'http.response.status_code'))).sort(), [200, 401], 'two attempts: the 401 and the retry with a fresh token')
  t.same(attempts.map((s) => [Number(attribute(s, 'http.response.status_code')), resendCount(s)]).sort(), [[200, 1], [401, undefined]], 'the retry with a fresh token is a resend')
  t.equal(spans.filter((s) => s.name === 'cmu_proxy.token.wait').length, 1, 'the caller waited for the new token once')
  t.ok(spans.every((s) => s === server || s.parentSpanId !== undefined), 'every span hangs off the trace')
})

t.test('a dropped connection: the retry is its own attempt, marked with http.request.resend_count', async (t) => {
  const { proxy, receiver, sandbox } = await tracedProxy(t)
  await call(proxy.url, '/readyz')
  sandbox.faults.failNext('cmu', 1, { drop: true })
  t.equal((await call(proxy.url, '/cmu/v2', { headers: { traceparent: TRACEPARENT } })).status, 200)
  await proxy.close()
  const attempts = receiver.spans().filter((s) => s.traceId === TRACE_ID && s.name === 'GET')
  // Semantic conventions: the first send carries no resend_count.
  t.same(attempts.map((s) => resendCount(s)).sort(), [1, undefined])
  t.ok(attempts.some((s) => attribute(s, 'error.type') !== undefined), 'the dropped one says why')
})

t.test('no secret and no query-string token lands in an exported attribute', async (t) => {
  const key = 'inbound-key-0123456789'
  const { proxy, receiver, sandbox } = await tracedProxy(t, { PROXY_API_KEYS: key, CACHE_ENABLED: 'true' })
  await call(proxy.url, '/cmu/v2/year?access_token=caller-secret-token&%61ccess_token=encoded-secret&API_KEY=query-api-key&token=query-token', { headers: { authorization: `Bearer ${key}`, traceparent: TRACEPARENT } })
  sandbox.dcr.revokeTokens()
  await call(proxy.url, '/cmu/v2/month', { headers: { 'x-api-key': key } })
  const clientSecret = JSON.parse(await readFile(proxy.credentialsFile, 'utf8')).client_secret as string
  await proxy.close()
  const exported = receiver.bodies().join('\n')
  t.ok(receiver.spans().length > 3, 'spans were exported')
  for (const secret of [key, 'caller-secret-token', 'encoded-secret', 'query-api-key', 'query-token', proxy.statement, clientSecret, ...sandbox.dcr.issued.map((i) => i.token)]) {
    t.notOk(exported.includes(secret), `not exported: ${secret.slice(0, 10)}…`)
  }
  t.match(exported, /access_token=\[redacted\]/, 'the masked form is what is recorded')
})

t.test('each request line carries trace_id and span_id', async (t) => {
  const { proxy } = await tracedProxy(t)
  await call(proxy.url, '/cmu/v2', { headers: { traceparent: TRACEPARENT, 'x-request-id': 'traced-1' } })
  const line = proxy.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'request' && l.reqId === 'traced-1')
  t.equal(line?.trace_id, TRACE_ID)
  t.match(line?.span_id, /^[0-9a-f]{16}$/)
})

t.test('traceparent goes on to Adobe only when TRACE_PROPAGATE_TO_ADOBE=true, and never the caller\'s tracestate or baggage', async (t) => {
  for (const [setting, sent] of [['false', false], ['true', true]] as const) {
    const { proxy, sandbox } = await tracedProxy(t, { TRACE_PROPAGATE_TO_ADOBE: setting })
    await call(proxy.url, '/cmu/v2', { headers: { traceparent: TRACEPARENT, tracestate: 'vendor=internal-secret', baggage: 'user.email=alice%40corp.example' } })
    const seen = sandbox.cmuRequests.at(-1)?.headers
    const forwarded = seen?.traceparent
    t.equal(typeof forwarded === 'string' && forwarded.includes(TRACE_ID), sent, `TRACE_PROPAGATE_TO_ADOBE=${setting}`)
    if (sent) t.match(forwarded, /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/, 'a well-formed traceparent of the attempt span')
    else t.equal(forwarded, undefined, "not even the caller's own")
    t.equal(seen?.tracestate, undefined, 'no tracestate')
    t.equal(seen?.baggage, undefined, 'no baggage')
  }
})

t.test('a collector that is down does not hold up shutdown', async (t) => {
  const sandbox = await startSandbox(t)
  // A port nothing listens on: every export is refused.
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  await new Promise((resolve) => server.close(resolve))
  const proxy = await startProxy(t, sandbox, { env: { OTEL_EXPORTER_OTLP_ENDPOINT: url } })
  await call(proxy.url, '/cmu/v2')
  const started = Date.now()
  await proxy.close()
  t.ok(Date.now() - started < 3_000, `closed in ${Date.now() - started} ms`)
})

t.test('with tracing off nothing is exported and lines carry no ids', async (t) => {
  const receiver = await startReceiver(t)
  const sandbox = await startSandbox(t)
  // An endpoint, but the exporter switched off: the standard way to say "no".
  const proxy = await startProxy(t, sandbox, { env: { ...jsonExport(receiver), OTEL_TRACES_EXPORTER: 'none' } })
  await call(proxy.url, '/cmu/v2', { headers: { traceparent: TRACEPARENT } })
  await proxy.close()
  t.equal(receiver.bodies().length, 0, 'nothing exported')
  t.notOk(proxy.logs.some((l) => l.includes('trace_id')), 'no ids in the logs')
})

t.test('cache spans: the lookup says hit or miss, coalescing says leader or waiter', async (t) => {
  const { proxy, receiver, sandbox } = await tracedProxy(t, { CACHE_ENABLED: 'true' })
  await call(proxy.url, '/readyz')
  const adobe = heldAnswer()
  t.teardown(adobe.release)
  sandbox.faults.failNext('cmu', 1, { until: adobe.until })
  const ids = ['0af7651916cd43dd8448eb211c800001', '0af7651916cd43dd8448eb211c800002']
  const both = Promise.all(ids.map(async (id) => await call(proxy.url, '/cmu/v2/year', { headers: { traceparent: `00-${id}-b7ad6b7169203331-01` } })))
  t.ok(await whenInFlight(proxy.url, 2), 'both callers wait for Adobe')
  adobe.release()
  await both
  const hitId = '0af7651916cd43dd8448eb211c800003'
  await call(proxy.url, '/cmu/v2/year', { headers: { traceparent: `00-${hitId}-b7ad6b7169203331-01` } })
  await proxy.close()
  const spans = receiver.spans()
  const of = (traceId: string, name: string): OtlpSpan[] => spans.filter((s) => s.traceId === traceId && s.name === name)
  t.same(ids.map((id) => attribute(of(id, 'cmu_proxy.cache.lookup')[0], 'cmu_proxy.cache.result')), ['miss', 'miss'])
  t.same(ids.map((id) => attribute(of(id, 'cmu_proxy.cache.coalesce')[0], 'cmu_proxy.coalesce.role')).sort(), ['leader', 'waiter'])
  t.equal(ids.reduce((n, id) => n + of(id, 'GET').length, 0), 1, "one upstream attempt, in the leader's trace")
  t.equal(attribute(of(hitId, 'GET /cmu/*')[0], 'cmu_proxy.cache.result'), 'hit', 'a hit from memory: the server span says so')
  t.equal(of(hitId, 'cmu_proxy.cache.lookup').length, 0, 'without a lookup span of its own (microseconds of work)')
  t.equal(of(hitId, 'GET').length, 0, 'a hit never goes upstream')
})

t.test('in a fleet, the lookup span covers the look in Redis, and waiting on the instance asking Adobe is a fleet_wait span', async (t) => {
  const receiver = await startReceiver(t)
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const statement = makeSoftwareStatement()
  const env = { ...jsonExport(receiver), CACHE_ENABLED: 'true' }
  const a = await member(t, sandbox, redis, { statement, env })
  const b = await member(t, sandbox, redis, { statement, env })
  t.ok(await eventually(async () => (await call(a.url, '/readyz')).status === 200 && (await call(b.url, '/readyz')).status === 200))
  // Adobe answers A only once B waits on A's turn, and some time after (the wait the span must show).
  const adobe = heldAnswer()
  t.teardown(adobe.release)
  sandbox.faults.failNext('cmu', 1, { until: adobe.until })
  const leaderId = '0af7651916cd43dd8448eb211c800011'
  const waiterId = '0af7651916cd43dd8448eb211c800012'
  const leading = call(a.url, '/cmu/v2/year', { headers: { traceparent: `00-${leaderId}-b7ad6b7169203331-01` } })
  t.ok(await eventually(() => sandbox.calls.cmu >= 1, 2_000), 'A is asking Adobe')
  const before = await lockAttempts(b)
  const waiting = call(b.url, '/cmu/v2/year', { headers: { traceparent: `00-${waiterId}-b7ad6b7169203331-01` } })
  t.ok(await waitingOnLock([b], [before]), 'B found the fleet\'s lock taken')
  await new Promise((resolve) => setTimeout(resolve, 150))
  adobe.release()
  t.same([(await leading).status, (await waiting).status], [200, 200])
  t.equal(sandbox.calls.cmu, 1, 'Adobe was asked once for the fleet')
  // A hung Redis: the look there lasts until its command timeout (COMMAND_TIMEOUT_MS), and the lookup span says so.
  const hungId = '0af7651916cd43dd8448eb211c800013'
  redis.pause()
  t.equal((await call(b.url, '/cmu/v2/year/month', { headers: { traceparent: `00-${hungId}-b7ad6b7169203331-01` } })).status, 200, 'answered on its own')
  redis.resume()
  await Promise.all([a.close(), b.close()])

  const spans = receiver.spans()
  const one = (traceId: string, name: string): OtlpSpan | undefined => spans.find((s) => s.traceId === traceId && s.name === name)
  const nanos = (value: string | undefined): bigint => BigInt(value ?? '0')
  t.equal(attribute(one(leaderId, 'cmu_proxy.cache.fleet_wait'), 'cmu_proxy.fleet.turn'), 'lead', 'A took the fleet\'s turn')
  const wait = one(waiterId, 'cmu_proxy.cache.fleet_wait')
  t.equal(attribute(wait, 'cmu_proxy.fleet.turn'), 'landed', 'B waited for what A stored')
  t.ok(nanos(wait?.endTimeUnixNano) - nanos(wait?.startTimeUnixNano) > 100_000_000n, 'and the span shows the wait (Adobe answered 150 ms after B began waiting)')
  const lookup = one(waiterId, 'cmu_proxy.cache.lookup')
  const server = one(waiterId, 'GET /cmu/*')
  t.equal(attribute(lookup, 'cmu_proxy.cache.result'), 'miss')
  // Span starts are whole milliseconds (Date.now()), durations are not: the lookup's end may pass the wait's start by under 1 ms.
  t.ok(nanos(lookup?.startTimeUnixNano) >= nanos(server?.startTimeUnixNano) && nanos(lookup?.endTimeUnixNano) < nanos(wait?.startTimeUnixNano) + 1_000_000n, 'the lookup sits inside the request, before the wait')
  const hung = one(hungId, 'cmu_proxy.cache.lookup')
  t.ok(nanos(hung?.endTimeUnixNano) - nanos(hung?.startTimeUnixNano) >= BigInt(COMMAND_TIMEOUT_MS - 100) * 1_000_000n, 'a lookup lasts as long as the look in Redis took')
})

t.test('token refreshes and registrations are traces of their own', async (t) => {
  const { proxy, receiver } = await tracedProxy(t)
  t.ok(await eventually(async () => (await call(proxy.url, '/readyz')).status === 200))
  await proxy.close()
  const spans = receiver.spans()
  const refresh = spans.find((s) => s.name === 'cmu_proxy.token.refresh')
  t.ok(refresh !== undefined, 'the first token came in a refresh trace')
  t.equal(refresh?.parentSpanId, undefined, 'a root span')
  const children = spans.filter((s) => s.traceId === refresh?.traceId).map((s) => s.name).sort()
  t.same(children, ['cmu_proxy.register', 'cmu_proxy.token.refresh', 'cmu_proxy.token.request'], 'the registration and the token call under it')
})

t.test('an ESM request: its server span names the route and the API, its attempt the ESM URL', async (t) => {
  const { proxy, receiver, sandbox } = await tracedProxy(t)
  t.equal((await call(proxy.url, '/esm/v3/year?limit=3', { headers: { traceparent: TRACEPARENT } })).status, 200)
  t.equal((await call(proxy.url, '/cmu/v2/year?limit=3', { headers: { traceparent: TRACEPARENT } })).status, 200)
  await proxy.close()
  const spans = receiver.spans().filter((s) => s.traceId === TRACE_ID)
  const server = spans.find((s) => s.name === 'GET /esm/*')
  t.equal(attribute(server, 'http.route'), '/esm/*')
  t.equal(attribute(server, 'cmu_proxy.api'), 'esm')
  t.equal(attribute(spans.find((s) => s.name === 'GET /cmu/*'), 'cmu_proxy.api'), 'cmu')
  t.ok(spans.some((s) => s.name === 'GET' && attribute(s, 'url.full') === `${sandbox.esmUrl}/v3/year?limit=3`), 'the attempt went to ADOBE_ESM_URL')
  t.ok(proxy.logs.some((line) => line.includes('"api":"esm"') && line.includes('"url":"/esm/v3/year?limit=3"')), 'the request line names the API')
})
