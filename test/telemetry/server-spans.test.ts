// The server span the proxy makes itself (telemetry/server-spans.ts) and what
// goes with it: semantic-convention status, nothing but the server span for a
// 404, one lookup span when a stale copy stands in for Adobe, nothing recorded
// or logged for an unsampled request, protobuf when asked for, dropped spans
// counted, and the broker's warning tied to the request that met the 401.
import t from 'tap'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { call, eventually, startProxy, startSandbox, whenInFlight } from '../helpers/app.js'
import { attribute, jsonExport, startReceiver, tracedProxy, type OtlpSpan } from '../helpers/otlp-receiver.js'

const TRACE_ID = '0af7651916cd43dd8448eb211c80319d'
const sampled = (traceId = TRACE_ID): string => `00-${traceId}-b7ad6b7169203331-01`
/** OTLP's status codes: 0 unset, 2 error. */
const STATUS_ERROR = 2

function ofTrace (spans: OtlpSpan[], traceId = TRACE_ID): OtlpSpan[] {
  return spans.filter((s) => s.traceId === traceId)
}

t.test('a 404 is one server span, status unset; a 405 too; a 502 is an error with the problem code', async (t) => {
  const { proxy, receiver, sandbox } = await tracedProxy(t)
  const ids = ['0af7651916cd43dd8448eb211c800021', '0af7651916cd43dd8448eb211c800022', '0af7651916cd43dd8448eb211c800023']
  t.equal((await call(proxy.url, '/nowhere', { headers: { traceparent: sampled(ids[0]) } })).status, 404)
  t.equal((await call(proxy.url, '/cmu/v2', { method: 'DELETE', headers: { traceparent: sampled(ids[1]) } })).status, 405)
  sandbox.faults.failNext('cmu', Infinity, { drop: true })
  t.equal((await call(proxy.url, '/cmu/v2', { headers: { traceparent: sampled(ids[2]) } })).status, 502)
  await proxy.close()
  const spans = receiver.spans()

  const notFound = ofTrace(spans, ids[0])
  t.same(notFound.map((s) => s.name), ['GET'], 'only the server span: no handler or hook spans')
  t.equal(Number(attribute(notFound[0], 'http.response.status_code')), 404)
  t.notOk(notFound[0]?.status?.code, 'semantic conventions: a 4xx leaves a server span unset')
  const refused = ofTrace(spans, ids[1]).find((s) => s.kind === 2)
  t.equal(refused?.name, 'DELETE /cmu/*')
  t.notOk(refused?.status?.code, '405: unset')
  const failed = ofTrace(spans, ids[2]).find((s) => s.kind === 2)
  t.equal(failed?.status?.code, STATUS_ERROR, '5xx: an error')
  t.equal(attribute(failed, 'error.type'), 'CMU_PROXY_UPSTREAM_UNREACHABLE')
})

t.test('stale-if-error: one lookup span, and the server span says stale and why', async (t) => {
  let now = Date.parse('2026-11-27T10:00:00Z')
  const receiver = await startReceiver(t)
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { now: () => now, env: { ...jsonExport(receiver), CACHE_ENABLED: 'true', CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0' } })
  const report = '/cmu/v2/year/month/day/hour?start=2026-11-27T00:00'
  t.equal((await call(proxy.url, report)).headers['x-cache'], 'MISS')
  now += 3600_000 + 60_000
  sandbox.faults.failNext('cmu', 1, { status: 503, body: 'Service Unavailable' })
  const stale = await call(proxy.url, report, { headers: { traceparent: sampled() } })
  t.equal(stale.headers['x-cache'], 'STALE')
  await proxy.close()
  const spans = ofTrace(receiver.spans())
  const lookups = spans.filter((s) => s.name === 'cmu_proxy.cache.lookup')
  t.equal(lookups.length, 1, 'one lookup span')
  t.equal(attribute(lookups[0], 'cmu_proxy.cache.result'), 'miss', 'the lookup found only a stale copy')
  const server = spans.find((s) => s.kind === 2)
  t.equal(attribute(server, 'cmu_proxy.cache.result'), 'stale')
  t.match(attribute(server, 'cmu_proxy.cache.status'), /detail=upstream_5xx$/)
  t.notOk(server?.status?.code, 'the caller got a 200')
})

t.test('an unsampled request records nothing, sends no traceparent on, and its lines carry no ids', async (t) => {
  const { proxy, receiver, sandbox } = await tracedProxy(t, { CACHE_ENABLED: 'true', TRACE_PROPAGATE_TO_ADOBE: 'true' })
  t.ok(await eventually(async () => (await call(proxy.url, '/readyz')).status === 200))
  // The caller sampled its trace out (flags 00): parentbased_always_on follows it.
  const response = await call(proxy.url, '/cmu/v2/year', { headers: { traceparent: `00-${TRACE_ID}-b7ad6b7169203331-00`, 'x-request-id': 'unsampled-1' } })
  t.equal(response.status, 200)
  t.equal(sandbox.cmuRequests.at(-1)?.headers.traceparent, undefined, 'no traceparent to Adobe')
  await proxy.close()
  t.equal(ofTrace(receiver.spans()).length, 0, 'no span of that trace')
  t.ok(receiver.spans().some((s) => s.name === 'cmu_proxy.token.refresh'), 'while sampled traces are still exported')
  const line = proxy.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'request' && l.reqId === 'unsampled-1')
  t.equal(line?.trace_id, undefined)
})

t.test('OTEL_TRACES_SAMPLER=always_off: nothing at all is exported', async (t) => {
  const { proxy, receiver } = await tracedProxy(t, { OTEL_TRACES_SAMPLER: 'always_off', CACHE_ENABLED: 'true' })
  t.ok(await eventually(async () => (await call(proxy.url, '/readyz')).status === 200))
  for (const path of ['/cmu/v2', '/cmu/v2', '/nowhere']) await call(proxy.url, path, { headers: { traceparent: sampled() } })
  await proxy.close()
  t.equal(receiver.requests.length, 0)
})

t.test('protobuf by default and with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf; JSON with http/json', async (t) => {
  for (const protocol of [undefined, 'http/protobuf', 'http/json']) {
    const receiver = await startReceiver(t)
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, ...(protocol === undefined ? {} : { OTEL_EXPORTER_OTLP_PROTOCOL: protocol }) } })
    await call(proxy.url, '/cmu/v2', { headers: { traceparent: sampled() } })
    await proxy.close()
    const json = protocol === 'http/json'
    t.ok(receiver.requests.length > 0, `${protocol ?? 'default'}: exported`)
    for (const request of receiver.requests) {
      t.equal(request.headers['content-type'], json ? 'application/json' : 'application/x-protobuf', `${protocol ?? 'default'}: content-type`)
    }
    const bodies = receiver.bodies().join('')
    t.ok(bodies.includes('GET /cmu'), 'the span names')
    t.equal(bodies.includes(TRACE_ID), json, json ? 'ids in hex' : 'ids as bytes, not the hex of OTLP/JSON')
  }
})

t.test('spans that find the queue full, or that the collector refuses, are counted', async (t) => {
  const metric = async (url: string, reason: string): Promise<number> => {
    const line = (await call(url, '/metrics')).text.split('\n').find((l) => l.startsWith(`cmu_proxy_trace_spans_dropped_total{reason="${reason}"}`))
    return Number(line?.split(' ')[1] ?? Number.NaN)
  }
  // One span may wait; the collector holds its answer, so the first export stays in flight.
  const slow = await startReceiver(t, { hold: true })
  const sandbox = await startSandbox(t)
  const full = await startProxy(t, sandbox, { env: { ...jsonExport(slow), OTEL_BSP_MAX_QUEUE_SIZE: '1' } })
  t.equal(await metric(full.url, 'queue_full'), 0)
  for (let i = 0; i < 5; i++) await call(full.url, '/cmu/v2', { headers: { traceparent: sampled() } })
  t.ok(await metric(full.url, 'queue_full') >= 3, 'at least the spans beyond one in flight and one waiting')
  slow.release()

  const refusing = await startReceiver(t, { status: 400 })
  const refused = await startProxy(t, sandbox, { env: { ...jsonExport(refusing), OTEL_BSP_MAX_QUEUE_SIZE: '1' } })
  await call(refused.url, '/cmu/v2', { headers: { traceparent: sampled() } })
  t.ok(await eventually(async () => await metric(refused.url, 'export_failed') > 0), 'export_failed counts what the collector refused')
})

t.test('the broker\'s warning about a token Adobe rejected carries the request\'s reqId and trace_id, cache on or off', async (t) => {
  for (const cache of ['false', 'true']) {
    const { proxy, sandbox } = await tracedProxy(t, { CACHE_ENABLED: cache })
    t.ok(await eventually(async () => (await call(proxy.url, '/readyz')).status === 200))
    sandbox.dcr.revokeTokens()
    t.equal((await call(proxy.url, '/cmu/v2/year', { headers: { traceparent: sampled(), 'x-request-id': `rejected-${cache}` } })).status, 200)
    const warning = proxy.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'access token rejected upstream; fetching a new one')
    t.equal(warning?.reqId, `rejected-${cache}`, `CACHE_ENABLED=${cache}: reqId`)
    t.equal(warning?.trace_id, TRACE_ID, `CACHE_ENABLED=${cache}: trace_id`)
    t.equal(warning?.component, 'token-broker')
    await proxy.close()
  }
})

t.test('a caller\'s oversized User-Agent and query are cut to 4,096 characters in the span', async (t) => {
  const { proxy, receiver } = await tracedProxy(t)
  const long = 'x'.repeat(6_000)
  await call(proxy.url, `/cmu/v2?q=${long}`, { headers: { traceparent: sampled(), 'user-agent': long } })
  await proxy.close()
  const server = ofTrace(receiver.spans()).find((s) => s.kind === 2)
  t.equal(String(attribute(server, 'user_agent.original')).length, 4096)
  t.equal(String(attribute(server, 'url.query')).length, 4096)
})

t.test('a caller that leaves ends its server span as 499, caller_gone', async (t) => {
  const { proxy, receiver, sandbox } = await tracedProxy(t)
  t.ok(await eventually(async () => (await call(proxy.url, '/readyz')).status === 200))
  const adobe = heldAnswer()
  t.teardown(adobe.release)
  sandbox.faults.failNext('cmu', 1, { until: adobe.until })
  const leaving = new AbortController()
  const answer = call(proxy.url, '/cmu/v2', { headers: { traceparent: sampled() }, signal: leaving.signal }).catch(() => undefined)
  t.ok(await whenInFlight(proxy.url, 1), 'waiting for Adobe')
  leaving.abort()
  await answer
  t.ok(await eventually(() => proxy.logs.some((l) => l.includes('CMU_PROXY_CALLER_GONE'))), 'the proxy saw it leave')
  adobe.release()
  await proxy.close()
  const server = ofTrace(receiver.spans()).find((s) => s.kind === 2)
  t.equal(Number(attribute(server, 'http.response.status_code')), 499)
  t.equal(attribute(server, 'error.type'), 'caller_gone')
  t.equal(ofTrace(receiver.spans()).filter((s) => s.kind === 2).length, 1, 'ended once')
})
