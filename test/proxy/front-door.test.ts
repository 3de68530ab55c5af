// The front door against hostile callers, on raw sockets: no request body is
// ever read, pipelining is bounded per connection, requests per connection
// are bounded, and what the parser refuses is answered and logged without its
// bytes (issue 19).
import t, { type Test } from 'tap'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { assertProblem, call, eventually, startProxy, startSandbox } from '../helpers/app.js'
import { exchange, get, open, splitResponses } from '../helpers/wire.js'

const ADMIN_KEY = 'admin-key-0123456789abcdef'
const API_KEY = 'alpha-key-0123456789abcdef'

/** A problem answer on the wire: status, problem+json with `code`, and Connection: close. */
function assertWireProblem (t: Test, response: string | undefined, status: number, code: string): void {
  t.match(response, new RegExp(`^HTTP/1\\.1 ${status} `), `status ${status}`)
  t.match(response, /\r\ncontent-type: application\/problem\+json/i, 'problem+json')
  t.match(response, /\r\nconnection: close\r\n/i, 'Connection: close')
  t.match(response, new RegExp(`"code":"${code}"`), code)
}

t.test('a request that announces a body is refused at once on every route, its body unread, its connection closed', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ADMIN_API_KEY: ADMIN_KEY } })
  const cases = [
    // Announces a megabyte of JSON and sends ten bytes: without the refusal, the server waits for the rest (a slow body).
    { what: 'POST to a route that does not exist', head: 'POST /nope HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n[[[[[[[[[[' },
    { what: 'GET /healthz with a body', head: 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\n[[[[[' },
    { what: 'an admin POST with a body', head: `POST /admin/token/refresh HTTP/1.1\r\nHost: localhost\r\nX-Api-Key: ${ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{` },
    { what: 'a chunked GET of a report', head: 'GET /cmu/v2 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[[[[[\r\n' }
  ]
  for (const { what, head } of cases) {
    const wire = await open(t, proxy)
    const started = Date.now()
    const [response] = await exchange(wire, head, 1)
    assertWireProblem(t, response, 413, 'CMU_PROXY_BODY_NOT_ALLOWED')
    t.ok(await eventually(() => wire.closed(), 2_000), `${what}: the connection is closed`)
    // The close within 2 s above is the check; this only says the whole exchange did not wait for a megabyte that never comes (generous for a loaded machine).
    t.ok(Date.now() - started < 2_000 * 10, `${what}: answered and closed without waiting for the body`)
  }
  t.equal(sandbox.calls.cmu, 0, 'nothing reached Adobe')
  t.equal(proxy.logs.filter((l) => l.includes('"code":"CMU_PROXY_BODY_NOT_ALLOWED"')).length, cases.length, 'one request line each, with its code')
})

t.test('a bodiless POST that names a content type still reaches its route (no parser runs, no 415)', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ADMIN_API_KEY: ADMIN_KEY } })
  await call(proxy.url, '/readyz')
  const response = await call(proxy.url, '/admin/token/refresh', { method: 'POST', headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json', 'content-length': '0' } })
  t.equal(response.status, 200, 'the admin route answered')
  assertProblem(t, await call(proxy.url, '/cmu/v2', { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': '0' } }), 405, 'CMU_PROXY_METHOD_NOT_ALLOWED')
})

t.test('a pipelining connection has at most INBOUND_MAX_PIPELINED_REQUESTS requests in the app; the rest wait, then are all answered', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { INBOUND_MAX_PIPELINED_REQUESTS: '4', INBOUND_MAX_REQUESTS_PER_CONNECTION: '0' } })
  await call(proxy.url, '/readyz')
  const adobe = heldAnswer()
  t.teardown(adobe.release)
  sandbox.faults.failNext('cmu', Infinity, { until: adobe.until })
  const wire = await open(t, proxy)
  // Four in the app, and up to MAX_HELD (64) read past them may wait: 60 fit in one connection.
  const count = 60
  wire.socket.write(get('/cmu/v2/year').repeat(count))
  t.ok(await eventually(() => sandbox.calls.cmu >= 4), 'four requests reached Adobe')
  // Without the bound every parsed request is in the app at once (each one an upstream call).
  const inFlight = Number(/^cmu_proxy_requests_in_flight (\d+)$/m.exec((await call(proxy.url, '/metrics')).text)?.[1])
  t.equal(inFlight, 4 + 1, 'four in the app (and this scrape); the other 56 wait')
  t.equal(sandbox.calls.cmu, 4, 'Adobe has four')
  // 50 more: read now, they would overflow the 64 that may wait (56 + 50) and close the connection.
  wire.socket.write(get('/cmu/v2/year').repeat(50))
  t.equal((await call(proxy.url, '/healthz')).status, 200, 'other connections are served meanwhile')
  t.equal((await call(proxy.url, '/healthz')).status, 200)
  t.notOk(wire.closed(), 'the connection is not read while requests wait')
  adobe.release()
  t.ok(await eventually(() => splitResponses(wire.received()).length >= count + 50, 10_000), 'every request is answered once Adobe answers')
  t.equal(splitResponses(wire.received()).filter((r) => r.startsWith('HTTP/1.1 200 OK')).length, count + 50, 'all of them 200, in one connection')
  t.notOk(wire.closed(), 'an honest pipelining client is slowed, never refused')
})

t.test('INBOUND_MAX_REQUESTS_PER_CONNECTION: the last answer says Connection: close; a client that goes on gets 503 from Node, outside the app', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { INBOUND_MAX_REQUESTS_PER_CONNECTION: '3' } })
  const wire = await open(t, proxy)
  for (const round of [1, 2]) t.match((await exchange(wire, get('/cmu/v2'), 1))[0], /\r\nconnection: keep-alive\r\n/i, `answer ${round} keeps the connection`)
  t.match((await exchange(wire, get('/cmu/v2'), 1))[0], /\r\nconnection: close\r\n/i, 'the third says close')
  t.match((await exchange(wire, get('/cmu/v2'), 1))[0], /^HTTP\/1\.1 503 /, 'a fourth is refused')
  t.equal(sandbox.calls.cmu, 3, 'Adobe saw three')
  t.equal(proxy.logs.filter((l) => l.includes('"url":"/cmu/v2"')).length, 3, 'the app saw three')
})

t.test('what the parser refuses gets a problem answer, and the log never holds its bytes, not even at trace level', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { LOG_LEVEL: 'trace', PROXY_API_KEYS: API_KEY, ADMIN_API_KEY: ADMIN_KEY } })
  const keys = `Authorization: Bearer ${API_KEY}\r\nX-Api-Key: ${ADMIN_KEY}\r\n`
  const cases = [
    { what: 'a head too large', bytes: `GET /cmu/v2 HTTP/1.1\r\nHost: localhost\r\n${keys}X-Padding: ${'p'.repeat(20_000)}\r\n\r\n`, status: 431, code: 'CMU_PROXY_HEADERS_TOO_LARGE' },
    { what: 'Content-Length and Transfer-Encoding together', bytes: `POST /cmu/v2 HTTP/1.1\r\nHost: localhost\r\n${keys}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, status: 400, code: 'CMU_PROXY_BAD_REQUEST' },
    { what: 'two Content-Lengths', bytes: `POST /cmu/v2 HTTP/1.1\r\nHost: localhost\r\n${keys}Content-Length: 1\r\nContent-Length: 2\r\n\r\n`, status: 400, code: 'CMU_PROXY_BAD_REQUEST' },
    { what: 'not HTTP at all', bytes: `GE T /cmu/v2 HTTP/1.1\r\n${keys}\r\n`, status: 400, code: 'CMU_PROXY_BAD_REQUEST' }
  ]
  for (const { what, bytes, status, code } of cases) {
    const wire = await open(t, proxy)
    const [response] = await exchange(wire, bytes, 1)
    t.ok(response !== undefined, `${what}: answered`)
    assertWireProblem(t, response, status, code)
    t.ok(await eventually(() => wire.closed()), `${what}: closed`)
    t.ok(await eventually(() => proxy.logs.some((l) => l.includes('"msg":"client error"') && l.includes(`"code":"${code}"`))), `${what}: logged with its code`)
  }
  const log = proxy.logs.join('\n')
  for (const key of [API_KEY, ADMIN_KEY]) {
    t.notOk(log.includes(key), 'no key as text')
    t.notOk(log.includes(Buffer.from(key).join(',')), 'no key as a byte array (rawPacket)')
  }
  t.notOk(log.includes('rawPacket'), 'the raw packet is never logged')
})
