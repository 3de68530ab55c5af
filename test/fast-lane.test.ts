// The fast lane: which requests it takes, that everything else reaches Fastify
// unchanged (on the same connection), and that its answers match Fastify's.
// Raw sockets, so the exact bytes on the wire are visible. The lane writes
// lower-case header names and Node's server writes "Date:"/"Connection:", which
// is how these tests tell who answered.
import { connect, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { parseRequestHead } from '../src/fast-lane/request-head.js'
import { assertProblem, call, eventually, startProxy, startSandbox, startScriptedServer, type RunningProxy } from './helpers.js'

const LANE = /\r\ndate: /
const NODE = /\r\nDate: /

interface Wire { socket: Socket, received: () => string, closed: () => boolean }

async function open (t: Test, proxy: RunningProxy): Promise<Wire> {
  const { hostname, port } = new URL(proxy.url)
  const socket = connect(Number(port), hostname)
  let text = ''
  let closed = false
  socket.on('data', (chunk: Buffer) => { text += chunk.toString('latin1') })
  socket.on('close', () => { closed = true })
  socket.on('error', () => {})
  await new Promise((resolve) => socket.once('connect', resolve))
  t.teardown(() => socket.destroy())
  return { socket, received: () => text, closed: () => closed }
}

/** Writes `bytes` and waits until `count` responses have fully arrived (by Content-Length, or the chunked terminator). */
async function exchange (wire: Wire, bytes: string, count: number): Promise<string[]> {
  const before = wire.received().length
  wire.socket.write(bytes)
  let responses: string[] = []
  await eventually(() => {
    responses = splitResponses(wire.received().slice(before))
    return responses.length >= count || wire.closed()
  })
  return responses
}

function splitResponses (text: string): string[] {
  const responses: string[] = []
  let rest = text
  while (rest.startsWith('HTTP/1.1 ')) {
    const headEnd = rest.indexOf('\r\n\r\n')
    if (headEnd === -1) break
    const head = rest.slice(0, headEnd)
    const length = /\r\ncontent-length: (\d+)/i.exec(head)
    const noBody = /^HTTP\/1\.1 (204|304)/.test(head)
    let end: number
    if (length !== null && !noBody) end = headEnd + 4 + Number(length[1])
    else if (/\r\ntransfer-encoding: chunked/i.test(head)) end = rest.indexOf('\r\n0\r\n\r\n', headEnd) + 7
    else end = headEnd + 4
    if (end < headEnd + 4 || end > rest.length) break
    responses.push(rest.slice(0, end))
    rest = rest.slice(end)
  }
  return responses
}

const get = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: proxy\r\n${extra}\r\n`

t.test('the head parser takes only plain GET/HEAD heads', async (t) => {
  const taken = [
    'GET /cmu/v2 HTTP/1.1\r\nHost: x',
    'HEAD /cmu/v2?a=1&b!=2 HTTP/1.1\r\nhost: x\r\nAccept:  text/csv  ',
    'GET /cmu HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\nX-Empty:'
  ]
  for (const head of taken) t.ok(parseRequestHead(head), JSON.stringify(head))
  const parsed = parseRequestHead('GET /cmu/v2 HTTP/1.1\r\nHost: x\r\nAccept:  text/csv  ')
  t.same({ ...parsed?.headers }, { host: 'x', accept: 'text/csv' }, 'names lower-cased, values trimmed')

  const declined = {
    'POST method': 'POST /cmu/v2 HTTP/1.1\r\nHost: x',
    'HTTP/1.0': 'GET /cmu/v2 HTTP/1.0\r\nHost: x',
    'absolute-form target': 'GET http://x/cmu/v2 HTTP/1.1\r\nHost: x',
    'no Host': 'GET /cmu/v2 HTTP/1.1\r\nAccept: */*',
    'a body (Content-Length)': 'GET /cmu/v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0',
    'a body (Transfer-Encoding)': 'GET /cmu/v2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked',
    'Expect': 'GET /cmu/v2 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue',
    'Upgrade': 'GET /cmu/v2 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket',
    'Connection: close': 'GET /cmu/v2 HTTP/1.1\r\nHost: x\r\nConnection: close',
    'a duplicate header': 'GET /cmu/v2 HTTP/1.1\r\nHost: x\r\nAccept: a\r\naccept: b',
    'a folded header': 'GET /cmu/v2 HTTP/1.1\r\nHost: x\r\nAccept: a\r\n b',
    'space before the colon': 'GET /cmu/v2 HTTP/1.1\r\nHost : x',
    'a bare LF': 'GET /cmu/v2 HTTP/1.1\nHost: x',
    'a bare CR in a value': 'GET /cmu/v2 HTTP/1.1\r\nHost: x\r\nAccept: a\rb',
    'a NUL byte': 'GET /cmu/v2 HTTP/1.1\r\nHost: x\r\nAccept: a\u0000',
    'a non-ASCII byte': 'GET /cmu/v2 HTTP/1.1\r\nHost: x\r\nAccept: \u00e9',
    'two spaces in the request line': 'GET  /cmu/v2 HTTP/1.1\r\nHost: x'
  }
  for (const [why, head] of Object.entries(declined)) t.equal(parseRequestHead(head), undefined, why)
})

t.test('the lane answers plain requests, pipelined ones in order, and keeps the connection', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  const wire = await open(t, proxy)
  const [first, second, third] = await exchange(wire, get('/cmu/v2', 'X-Request-Id: one\r\n') + get('/cmu/v2/year', 'X-Request-Id: two\r\n') + get('/cmu/v2', 'X-Request-Id: three\r\n'), 3)
  for (const [i, response] of [first, second, third].entries()) {
    t.match(response, /^HTTP\/1\.1 200 OK\r\n/, `response ${i + 1} is a 200`)
    t.match(response, LANE, `response ${i + 1} came from the lane`)
    t.match(response, /\r\nconnection: keep-alive\r\nkeep-alive: timeout=\d+\r\n/)
  }
  t.match(first, /\r\nx-request-id: one\r\n/)
  t.match(second, /\r\nx-request-id: two\r\n/)
  t.match(third, /\r\nx-request-id: three\r\n/)
  t.same(sandbox.cmuRequests.map((r) => r.url), ['/cmu/v2', '/cmu/v2/year', '/cmu/v2'], 'forwarded in order')
  t.notOk(wire.closed(), 'the connection stays open')
})

t.test('a request the lane does not take hands the connection, and what follows on it, to Fastify', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  const wire = await open(t, proxy)
  const [lane] = await exchange(wire, get('/cmu/v2'), 1)
  t.match(lane, LANE, 'first request: the lane')
  const [health, after] = await exchange(wire, get('/healthz') + get('/cmu/v2'), 2)
  t.match(health, /^HTTP\/1\.1 200 OK\r\n/)
  t.match(health, NODE, '/healthz: Fastify')
  t.match(after, /^HTTP\/1\.1 200 OK\r\n/)
  t.match(after, NODE, 'the connection stays with Fastify')
  t.equal(sandbox.cmuRequests.length, 2, 'both /cmu requests were forwarded')
})

t.test('declined requests get exactly the answers Fastify gives them', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { PROXY_API_KEYS: 'k'.repeat(24) } })
  const key = `Authorization: Bearer ${'k'.repeat(24)}\r\n`
  const cases: Array<[string, string, RegExp]> = [
    ['no API key', get('/cmu/v2'), /^HTTP\/1\.1 401 [^]*"code":"CMU_PROXY_UNAUTHORIZED"/],
    ['a dot segment', get('/cmu/v2/../admin', key), /^HTTP\/1\.1 400 [^]*"code":"CMU_PROXY_BAD_PATH"/],
    ['another method', `DELETE /cmu/v2 HTTP/1.1\r\nHost: x\r\n${key}\r\n`, /^HTTP\/1\.1 405 [^]*\r\nallow: GET, HEAD\r\n/],
    ['outside the prefix', get('/cmux', key), /^HTTP\/1\.1 404 [^]*"code":"CMU_PROXY_NOT_FOUND"/],
    ['HTTP/1.0', `GET /cmu/v2 HTTP/1.0\r\nHost: x\r\n${key}\r\n`, /^HTTP\/1\.1 200 /],
    ['Connection: close', get('/cmu/v2', `${key}Connection: close\r\n`), /^HTTP\/1\.1 200 [^]*\r\nConnection: close\r\n/],
    ['a head over 16 KB', get('/cmu/v2', `${key}X-Big: ${'a'.repeat(17 * 1024)}\r\n`), /^HTTP\/1\.1 431 /]
  ]
  for (const [why, bytes, expected] of cases) {
    const wire = await open(t, proxy)
    const [response] = await exchange(wire, bytes, 1)
    t.match(response, expected, why)
    t.notMatch(response, LANE, `${why}: not answered by the lane`)
  }
  const wire = await open(t, proxy)
  const [allowed] = await exchange(wire, get('/cmu/v2', key), 1)
  t.match(allowed, /^HTTP\/1\.1 200 [^]*\r\ndate: /, 'with the key: the lane')
})

t.test('HEAD in the lane: the headers without the body, and the connection goes on', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  const wire = await open(t, proxy)
  wire.socket.write(`HEAD /cmu/v2 HTTP/1.1\r\nHost: x\r\n\r\n`)
  t.ok(await eventually(() => wire.received().includes('\r\n\r\n')), 'head arrived')
  const head = wire.received()
  t.match(head, /^HTTP\/1\.1 200 OK\r\ncontent-type: application\/json[^]*\r\ndate: /)
  t.notMatch(head, /transfer-encoding/i, 'no body framing for a HEAD')
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
  t.match(response, /\r\ntransfer-encoding: chunked\r\n/)
  const fetched = await call(proxy.url, '/cmu/v2.csv')
  t.equal(fetched.status, 200)
  t.equal(fetched.text, body, 'decoded body is intact')
})

t.test('a lane request is logged and counted like any other', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  const wire = await open(t, proxy)
  await exchange(wire, get('/cmu/v2?access_token=caller-secret', 'X-Request-Id: logged-1\r\n'), 1)
  const line = proxy.logs.map((l) => JSON.parse(l)).find((l) => l.reqId === 'logged-1' && l.msg === 'request')
  t.match(line, { method: 'GET', url: '/cmu/v2?access_token=[redacted]', statusCode: 200, level: 30 }, 'one request line, token masked')
  t.type(line?.durationMs, 'number')
  const metrics = await call(proxy.url, '/metrics')
  t.match(metrics.text, /cmu_proxy_requests_total\{route="cmu",status_class="2xx",cache="NONE"\} 1\n/)
  t.match(metrics.text, /cmu_proxy_requests_in_flight 1\n/, 'nothing in flight but the scrape itself')
})

t.test('a failure before the answer is the same problem as through Fastify', async (t) => {
  for (const FAST_LANE_ENABLED of ['true', 'false']) {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { FAST_LANE_ENABLED } })
    sandbox.faults.failNext('cmu', 1, { drop: true })
    const response = await call(proxy.url, '/cmu/v2')
    assertProblem(t, response, 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
    t.equal(response.headers['cache-control'], 'no-store')
    const line = proxy.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'request' && l.url === '/cmu/v2')
    t.match(line, { statusCode: 502, code: 'CMU_PROXY_UPSTREAM_UNREACHABLE' }, `logged (fast lane ${FAST_LANE_ENABLED})`)
  }
})

t.test('FAST_LANE_ENABLED=false: everything through Fastify', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { FAST_LANE_ENABLED: 'false' } })
  const wire = await open(t, proxy)
  const [response] = await exchange(wire, get('/cmu/v2'), 1)
  t.match(response, /^HTTP\/1\.1 200 OK\r\n/)
  t.match(response, NODE)
})

t.test('idle lane connections time out, slow heads are cut, and shutdown closes idle connections at once', async (t) => {
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
  t.ok(await eventually(() => partial.closed(), 2_000), 'closed after the headers timeout')
  // A line every 30 ms keeps the socket busy, so only the headers timeout (counted from the first byte) can end it.
  const trickle = await open(t, proxy)
  trickle.socket.write('GET /cmu/v2 HTTP/1.1\r\n')
  for (let line = 0; line < 60 && !trickle.closed(); line++) {
    await new Promise((resolve) => setTimeout(resolve, 30))
    if (!trickle.closed()) trickle.socket.write(`X-Line-${line}: x\r\n`)
  }
  t.ok(trickle.closed(), 'a head still trickling in is cut at the headers timeout')
  proxy.app.server.headersTimeout = 60_000

  const kept = await open(t, proxy)
  await exchange(kept, get('/cmu/v2'), 1)
  const started = Date.now()
  await proxy.close()
  t.ok(kept.closed(), 'the idle lane connection was closed by shutdown')
  t.ok(Date.now() - started < 2_000, 'shutdown did not wait for it')
})

t.test('every head the lane takes, Node\'s own parser reads the same way (mutation check)', async (t) => {
  const seen: Array<{ method: string, url: string, headers: Record<string, string | string[] | undefined> }> = []
  const node = await startScriptedServer(t, (req, res) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers })
    res.writeHead(204).end()
  })
  const { port } = new URL(node.url)
  const base = ['GET /cmu/v2/year/month?mvpd=A&b!=c HTTP/1.1', 'Host: proxy:8080', 'Accept: text/csv', 'User-Agent: t/1.0', 'X-Request-Id: abc-123']
  const alphabet = [' ', '\t', '\r', '\n', ':', '\u0000', '\u007f', '\u00e9', 'a', 'Z', '/', '?', '%', '"', '-', '#', '<', '>', '^', '`', '{', '|', '}', ',', ';']
  let seed = 42
  const random = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n }
  let accepted = 0
  for (let attempt = 0; attempt < 2_000 && accepted < 150; attempt++) {
    let head = base.join('\r\n')
    for (let edits = 1 + random(3); edits > 0; edits--) {
      const at = random(head.length)
      head = random(2) === 0 ? head.slice(0, at) + (alphabet[random(alphabet.length)] as string) + head.slice(at) : head.slice(0, at) + head.slice(at + 1)
    }
    const ours = parseRequestHead(head)
    if (ours === undefined) continue
    accepted++
    const before = seen.length
    const socket = connect(Number(port), '127.0.0.1')
    socket.on('error', () => {})
    socket.write(Buffer.from(`${head}\r\n\r\n`, 'latin1'))
    const parsed = await eventually(() => seen.length > before, 2_000)
    socket.destroy()
    if (!parsed) { t.fail(`Node refused a head the lane takes: ${JSON.stringify(head)}`); continue }
    const theirs = seen[before]
    t.same({ method: theirs?.method, url: theirs?.url, headers: theirs?.headers }, { method: ours.method, url: ours.url, headers: { ...ours.headers } }, JSON.stringify(head))
  }
  t.ok(accepted >= 50, `${accepted} mutated heads were taken and compared`)
})
