// The proxy on the wire: raw sockets, so pipelining, keep-alive, HEAD framing
// and slow or abandoned heads are visible byte for byte. Every request goes
// through Node's HTTP server and Fastify; there is no other path.
import { connect, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { call, eventually, startProxy, startSandbox, startScriptedServer, type RunningProxy } from '../helpers/app.js'

interface Wire { socket: Socket, received: () => string, closed: () => boolean }

async function open (t: Test, proxy: RunningProxy): Promise<Wire> {
  const { hostname, port } = new URL(proxy.url)
  const socket = connect(Number(port), hostname)
  const chunks: string[] = []
  let closed = false
  socket.on('data', (chunk: Buffer) => { chunks.push(chunk.toString('latin1')) })
  socket.on('close', () => { closed = true })
  socket.on('error', () => {})
  await new Promise((resolve) => socket.once('connect', resolve))
  t.teardown(() => socket.destroy())
  return { socket, received: () => chunks.join(''), closed: () => closed }
}

/** Writes `bytes` and waits until `count` responses have fully arrived (by Content-Length, or the chunked terminator). */
async function exchange (wire: Wire, bytes: string, count: number, timeoutMs = 5_000): Promise<string[]> {
  const before = wire.received().length
  wire.socket.write(bytes)
  let responses: string[] = []
  await eventually(() => {
    responses = splitResponses(wire.received().slice(before))
    return responses.length >= count || wire.closed()
  }, timeoutMs)
  return responses
}

function splitResponses (text: string): string[] {
  const responses: string[] = []
  let at = 0
  while (text.startsWith('HTTP/1.1 ', at)) {
    const headEnd = text.indexOf('\r\n\r\n', at)
    if (headEnd === -1) break
    const head = text.slice(at, headEnd)
    const length = /\r\ncontent-length: (\d+)/i.exec(head)
    const noBody = /^HTTP\/1\.1 (204|304)/.test(head) || head.includes('\r\nx-head: 1')
    let end: number
    if (noBody) end = headEnd + 4
    else if (length !== null) end = headEnd + 4 + Number(length[1])
    else if (/\r\ntransfer-encoding: chunked/i.test(head)) end = text.indexOf('\r\n0\r\n\r\n', headEnd) + 7
    else end = headEnd + 4
    if (end < headEnd + 4 || end > text.length) break
    responses.push(text.slice(at, end))
    at = end
  }
  return responses
}

const get = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: proxy\r\n${extra}\r\n`

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

t.test('a flood of 3,000 pipelined cache hits on one connection is answered in full, and the process stays up', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true' } })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200, 'warm the cache')
  const wire = await open(t, proxy)
  const responses = await exchange(wire, get('/cmu/v2').repeat(3_000), 3_000, 30_000)
  t.equal(responses.length, 3_000, 'every request got its answer')
  t.equal(responses.filter((r) => r.startsWith('HTTP/1.1 200 OK\r\n') && r.includes('\r\nx-cache: HIT\r\n')).length, 3_000, 'all of them hits')
  t.equal(sandbox.calls.cmu, 1, 'Adobe was asked once')
  t.equal((await call(proxy.url, '/healthz')).status, 200, 'still serving')
})

t.test('HEAD on the wire: the headers without a body, and the connection goes on', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  const wire = await open(t, proxy)
  wire.socket.write('HEAD /cmu/v2 HTTP/1.1\r\nHost: x\r\n\r\n')
  t.ok(await eventually(() => wire.received().includes('\r\n\r\n')), 'head arrived')
  await new Promise((resolve) => setTimeout(resolve, 50))
  const head = wire.received()
  t.match(head, /^HTTP\/1\.1 200 OK\r\n/)
  t.match(head, /\r\ncontent-type: application\/json/)
  t.ok(head.endsWith('\r\n\r\n'), 'nothing after the head')
  const [next] = await exchange(wire, get('/cmu/v2'), 1)
  t.match(next, /^HTTP\/1\.1 200 OK\r\n/, 'the next request on the connection works')
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

t.test('idle connections time out, slow heads are cut, and shutdown closes idle connections at once', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  proxy.app.server.keepAliveTimeout = 150
  const idle = await open(t, proxy)
  await exchange(idle, get('/cmu/v2'), 1)
  t.ok(await eventually(() => idle.closed(), 2_000), 'closed after the keep-alive timeout')

  // A head that stops half-way is dropped after the headers timeout, however long keep-alive is.
  proxy.app.server.keepAliveTimeout = 60_000
  proxy.app.server.headersTimeout = 150
  const partial = await open(t, proxy)
  partial.socket.write('GET /cmu/v2 HTTP/1.1\r\nHost: x\r\n')
  t.ok(await eventually(() => partial.closed(), 3_000), 'closed after the headers timeout (checked every second)')
  proxy.app.server.headersTimeout = 60_000

  const kept = await open(t, proxy)
  await exchange(kept, get('/cmu/v2'), 1)
  const started = Date.now()
  await proxy.close()
  t.ok(kept.closed(), 'the idle connection was closed by shutdown')
  t.ok(Date.now() - started < 2_000, 'shutdown did not wait for it')
})
