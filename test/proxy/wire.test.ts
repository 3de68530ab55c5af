// The proxy on the wire: raw sockets, so pipelining, keep-alive, HEAD framing
// and slow or abandoned heads are visible byte for byte. Every request goes
// through Node's HTTP server and Fastify; there is no other path.
import t from 'tap'
import { call, eventually, startProxy, startSandbox, startScriptedServer } from '../helpers/app.js'
import { exchange, get, open } from '../helpers/wire.js'

t.test('pipelined requests are answered in order on one kept-alive connection', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  const wire = await open(t, proxy)
  const responses = await exchange(wire, get('/cmu/v2', 'X-Request-Id: one\r\n') + get('/healthz', 'X-Request-Id: two\r\n') + get('/cmu/v2/year', 'X-Request-Id: three\r\n'), 3)
  t.equal(responses.length, 3, 'three answers')
  for (const [i, id] of ['one', 'two', 'three'].entries()) {
    t.match(responses[i], /^HTTP\/1\.1 200 OK\r\n/, `answer ${i + 1} is a 200`)
    t.match(responses[i], new RegExp(`\\r\\nx-request-id: ${id}\\r\\n`), `answer ${i + 1} belongs to request ${id}`)
  }
  t.same(sandbox.cmuRequests.map((r) => r.url), ['/cmu/v2', '/cmu/v2/year'], 'forwarded in order')
  t.notOk(wire.closed(), 'the connection stays open')
})

t.test('a burst of 3,000 pipelined cache hits on one connection: the bound is answered, the burst past the queue closes the connection, the process stays up', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true', INBOUND_MAX_REQUESTS_PER_CONNECTION: '0' } })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200, 'warm the cache')
  const wire = await open(t, proxy)
  wire.socket.write(get('/cmu/v2').repeat(3_000))
  t.ok(await eventually(() => wire.closed()), 'closed: the client retries what was not answered (RFC 9112 §9.3.2)')
  const answered = proxy.logs.filter((l) => l.includes('"url":"/cmu/v2"')).length - 1
  t.ok(answered <= 16, `the app saw at most the pipelining bound (${answered})`)
  t.ok(proxy.logs.some((l) => l.includes('pipelined more requests in one burst')), 'logged once')
  t.equal(sandbox.calls.cmu, 1, 'Adobe was asked once')
  t.equal((await call(proxy.url, '/healthz')).status, 200, 'still serving')
})

t.test('HEAD on the wire: the headers without a body, and the connection goes on', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  const wire = await open(t, proxy)
  wire.socket.write('HEAD /cmu/v2 HTTP/1.1\r\nHost: localhost\r\n\r\n')
  t.ok(await eventually(() => wire.received().includes('\r\n\r\n')), 'head arrived')
  const head = wire.received().slice(0, wire.received().indexOf('\r\n\r\n') + 4)
  t.match(head, /^HTTP\/1\.1 200 OK\r\n/)
  t.match(head, /\r\ncontent-type: application\/json/)
  const [next] = await exchange(wire, get('/cmu/v2'), 1)
  t.match(next, /^HTTP\/1\.1 200 OK\r\n/, 'the next request on the connection works')
  // The stream is the HEAD's head, then at once the next response: any body byte after the head would sit between them.
  t.ok(wire.received().startsWith(head + 'HTTP/1.1 200 OK\r\n'), 'nothing after the head')
})

t.test('an upstream answer without a length goes to the caller chunked, byte for byte', async (t) => {
  const body = 'year,month\n'.repeat(5000)
  const upstream = await startScriptedServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/csv' })
    res.write(body.slice(0, 10_000))
    setTimeout(() => res.end(body.slice(10_000)), 20)
  })
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ADOBE_CMU_URL: `${upstream.url}/cmu` } })
  const wire = await open(t, proxy)
  const [response] = await exchange(wire, get('/cmu/v2.csv'), 1)
  t.match(response, /\r\ntransfer-encoding: chunked\r\n/i)
  const fetched = await call(proxy.url, '/cmu/v2.csv')
  t.equal(fetched.status, 200)
  t.equal(fetched.text, body, 'decoded body is intact')
})

t.test('idle connections time out (INBOUND_KEEP_ALIVE_TIMEOUT_MS), and shutdown closes idle connections at once', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { INBOUND_KEEP_ALIVE_TIMEOUT_MS: '150' } })
  const idle = await open(t, proxy)
  await exchange(idle, get('/cmu/v2'), 1)
  t.ok(await eventually(() => idle.closed(), 2_000), 'closed after the keep-alive timeout (and Node\'s 1 s of grace)')

  const patient = await startProxy(t, sandbox)
  const kept = await open(t, patient)
  await exchange(kept, get('/cmu/v2'), 1)
  const started = Date.now()
  await patient.close()
  t.ok(kept.closed(), 'the idle connection was closed by shutdown')
  t.ok(Date.now() - started < 2_000, 'shutdown did not wait for it')
})

t.test('a head that stops half-way gets 408 CMU_PROXY_REQUEST_TIMEOUT after INBOUND_REQUEST_TIMEOUT_MS, however long keep-alive is', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { INBOUND_REQUEST_TIMEOUT_MS: '150', INBOUND_KEEP_ALIVE_TIMEOUT_MS: '60000' } })
  const partial = await open(t, proxy)
  partial.socket.write('GET /cmu/v2 HTTP/1.1\r\nHost: localhost\r\n')
  t.ok(await eventually(() => partial.closed(), 3_000), 'closed after the request timeout (checked every second)')
  t.match(partial.received(), /^HTTP\/1\.1 408 Request Timeout\r\n[^]*content-type: application\/problem\+json[^]*\r\n\r\n\{[^]*"code":"CMU_PROXY_REQUEST_TIMEOUT"/, 'a problem answer first')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200, 'a prompt caller is served')
})
