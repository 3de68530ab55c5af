// The /cmu forwarder: what crosses it in each direction, and how failures look.
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { gunzipSync, gzipSync } from 'node:zlib'
import t, { type Test } from 'tap'
import { callerResponseHeaderList } from '../../src/upstream/header-policy.js'
import { assertProblem, call, eventually, startProxy, startSandbox, startScriptedServer, type RawResponse } from '../helpers/app.js'

const RANGE = 'start=2026-01-01&end=2026-01-03'

t.test('the query reaches Adobe byte for byte, minus a caller access_token', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  const cases = [
    '?mvpd=A&mvpd=B&tenant!=X&platform&start=2024-01',
    '?channel=sports%20hd&tenant=a%2Bb&start=2024-01&end=2024-02',
    '?mvpd=DTV&access_token=caller-token&start=2024-01',
    '?access_token=caller-token',
    '?%61ccess_token=caller-token&mvpd=A',
    '?ACCESS%5FTOKEN=caller-token&a%63cess_token=x&mvpd=B'
  ]
  const expected = [
    '/cmu/v2/year/month?mvpd=A&mvpd=B&tenant!=X&platform&start=2024-01',
    '/cmu/v2/year/month?channel=sports%20hd&tenant=a%2Bb&start=2024-01&end=2024-02',
    '/cmu/v2/year/month?mvpd=DTV&start=2024-01',
    '/cmu/v2/year/month',
    '/cmu/v2/year/month?mvpd=A',
    '/cmu/v2/year/month?mvpd=B'
  ]
  for (const [i, query] of cases.entries()) {
    const response = await call(proxy.url, `/cmu/v2/year/month${query}`)
    t.equal(response.status, 200, query)
    t.equal(sandbox.cmuRequests.at(-1)?.url, expected[i], `forwarded as ${expected[i]}`)
  }
  t.notOk(proxy.logs.join('\n').includes('caller-token'), 'however its name is encoded, the token is masked in the log')
})

t.test('extension, Accept and Accept-Encoding pass through; gzip arrives compressed', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)

  const csv = await call(proxy.url, `/cmu/v2/year/month/day.csv?${RANGE}`)
  t.equal(csv.status, 200)
  t.match(csv.headers['content-type'], /^text\/csv/)
  t.match(csv.headers['content-disposition'], /filename="report__2026-01-01_2026-01-03_1000\.csv"/)
  t.match(csv.text, /^year,month,day,active-users/)

  const viaAccept = await call(proxy.url, `/cmu/v2/year/month/day?${RANGE}`, { headers: { accept: 'text/csv' } })
  t.equal(sandbox.cmuRequests.at(-1)?.headers.accept, 'text/csv', 'Accept forwarded')
  t.equal(viaAccept.text, csv.text, 'Accept negotiates the same CSV')

  const identity = await call(proxy.url, `/cmu/v2/year/month/day?${RANGE}`)
  const gzipped = await call(proxy.url, `/cmu/v2/year/month/day?${RANGE}`, { headers: { 'accept-encoding': 'gzip' } })
  t.equal(gzipped.headers['content-encoding'], 'gzip', 'still compressed')
  t.equal(gzipped.body[0], 0x1f, 'gzip magic byte')
  t.equal(gunzipSync(gzipped.body).toString('utf8'), identity.text, 'inflates to the same bytes')
  t.equal(identity.headers['content-encoding'], undefined)
})

for (const CACHE_ENABLED of ['false', 'true']) {
  t.test(`caller credentials never reach Adobe; our secrets never reach callers or logs (cache ${CACHE_ENABLED})`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED } })
    const response = await call(proxy.url, `/cmu/v2/year?${RANGE}&access_token=caller-query-token`, {
      headers: { authorization: 'Bearer caller-secret', cookie: 'session=caller-cookie', 'x-request-id': 'trace-123', 'x-forwarded-for': '203.0.113.9', connection: 'keep-alive, x-custom', 'x-custom': 'hop' }
    })
    t.equal(response.status, 200)
    t.equal(response.headers['x-request-id'], 'trace-123', 'request id echoed')
    const seen = sandbox.cmuRequests.at(-1)
    const issued = sandbox.dcr.issued.map((i) => i.token)
    t.equal(seen?.headers.authorization, `Bearer ${issued[0] ?? 'missing'}`, 'the proxy token, not the caller one')
    t.equal(seen?.headers.cookie, undefined, 'no cookie')
    t.equal(seen?.headers['x-custom'], undefined, 'no unlisted header')
    t.equal(seen?.headers['x-request-id'], 'trace-123', 'request id forwarded')
    t.equal(seen?.headers['x-forwarded-for'], '203.0.113.9, 127.0.0.1', 'caller address appended')
    t.notMatch(seen?.url, /caller-query-token/)

    // Upstream Set-Cookie and hop-by-hop headers stay behind.
    sandbox.faults.failNext('cmu', 1, { status: 200, body: '{}', contentType: 'application/json', headers: { 'set-cookie': 'a=b', 'x-upstream-internal': '1' } })
    const filtered = await call(proxy.url, '/cmu/v2')
    t.equal(filtered.headers['set-cookie'], undefined)
    t.equal(filtered.headers['x-upstream-internal'], undefined)

    const everything = [...proxy.logs, response.text, JSON.stringify(response.headers)].join('\n')
    const secrets = [...issued, proxy.statement, 'caller-secret', 'caller-cookie', 'caller-query-token']
    for (const secret of secrets) t.notOk(everything.includes(secret), `never exposed: ${secret.slice(0, 12)}…`)
    const clientSecret = JSON.parse(await readFile(proxy.credentialsFile, 'utf8')).client_secret
    t.notOk(everything.includes(clientSecret), 'client secret never logged')
    t.ok(proxy.logs.some((line) => line.includes('"reqId":"trace-123"') && line.includes('"statusCode":200')), 'one request line with the request id')
  })
}

/** Every report API's route: the path rules below run for each, never copied per API. */
const ROUTES = [
  { api: 'cmu', prefix: '/cmu', version: 'v2', encodedPrefixes: ['/%63mu/v2/year', '/c%6Du/v2', '/%63%6d%75/v2/year?x=1', '/%63mu', '/cmu%2fv2'] },
  { api: 'esm', prefix: '/esm', version: 'v3', encodedPrefixes: ['/%65sm/v3/year', '/e%73m/v3', '/%65%73%6d/v3/year?x=1', '/%65sm', '/esm%2fv3'] }
] as const

for (const { api, prefix, version } of ROUTES) {
  t.test(`path tricks are refused with 400 and nothing is sent upstream (${prefix})`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox)
    await call(proxy.url, `${prefix}/${version}`)
    const before = { ...sandbox.calls }
    t.equal(before[api], 1, 'the route reaches its API')
    for (const path of ['/cmu/../o/client/register', '/cmu/v2/%2e%2e/%2E%2E/o/client/token', '/cmu/v2%2f..%2fo/client/register', '/cmu/v2/year%2Fmonth', '/cmu/v2\\..\\x', '/cmu/./v2', '/cmu/v2/..%00/year', '/cmu/v2/year%0d%0aX-Injected:1', '/cmu/v2/%1f',
      // A fragment: the router cuts at '#', an upstream that parses URLs would see `/cmu/..`.
      '/cmu/..#/o/client/token', '/cmu/..#', '/cmu/v2?x=1#y',
      // Double encoding and encoded non-ASCII (a full-width dot), and characters outside RFC 3986.
      '/cmu/v2/%252e%252e/o/client/token', '/cmu/v2/%ef%bc%8e%ef%bc%8e/x', '/cmu/v2/year"x', '/cmu/v2/{year}'].map((path) => path.replace('/cmu', prefix).replace('v2', version))) {
      assertProblem(t, await call(proxy.url, path), 400, 'CMU_PROXY_BAD_PATH')
    }
    // A URL Fastify cannot decode is refused in our problem format too.
    assertProblem(t, await call(proxy.url, `${prefix}/${version}/%E0%A4%A`), 400, 'CMU_PROXY_BAD_PATH')
    t.same(sandbox.calls, before, 'nothing reached the sandbox')
  })
}

t.test('percent-encoded unreserved characters are the characters (RFC 3986 §6.2.2): one spelling to Adobe, one cache entry', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true' } })
  const answers = []
  for (const path of ['/cmu/v2/year', '/cmu/v2/%79ear', '/cmu/v2/y%65%61r', '/cmu/v2/%79%65%61%72']) answers.push(await call(proxy.url, path))
  t.same(answers.map((answer) => answer.headers['x-cache']), ['MISS', 'HIT', 'HIT', 'HIT'], 'aliases are no way around the cache')
  t.equal(sandbox.calls.cmu, 1, 'Adobe asked once')
  await call(proxy.url, '/cmu/v2/year/%6donth%3a%3A')
  t.equal(sandbox.requests.cmu.at(-1)?.url, '/cmu/v2/year/month%3A%3A', 'unreserved decoded; reserved kept encoded, in upper case')
})

/** An upstream that answers every request with `answer`, byte for byte; its origin. */
async function rawUpstream (t: Test, answer: Buffer): Promise<string> {
  const upstream = createNetServer((socket) => { socket.on('data', () => { socket.write(answer) }) })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { upstream.close() })
  return `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`
}

/** `path` through a proxy whose Adobe is `origin`, once with the cache off and once on: each answer with its mode. */
async function throughBothPaths (t: Test, origin: string, path: string, headers: Record<string, string> = {}): Promise<Array<{ cache: string, answer: RawResponse }>> {
  const answers = []
  for (const cache of ['false', 'true']) {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: cache, ADOBE_CMU_URL: `${origin}/cmu` } })
    answers.push({ cache, answer: await call(proxy.url, path, { headers }) })
  }
  return answers
}

t.test('an upstream header value Node cannot send is dropped, not a cut answer', async (t) => {
  // Raw bytes on the wire, as Node's own server would refuse to write them: a UTF-8 '€' in a filename.
  const body = 'a,b\n1,2\n'
  const origin = await rawUpstream(t, Buffer.concat([
    Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: text/csv\r\ncontent-length: ${body.length}\r\ncontent-disposition: attachment; filename="r`),
    Buffer.from('€', 'utf8'),
    Buffer.from('.csv"\r\n\r\n'),
    Buffer.from(body)
  ]))
  for (const { cache, answer } of await throughBothPaths(t, origin, '/cmu/v2/year.csv')) {
    t.equal(answer.status, 200, `cache ${cache}: answered`)
    t.equal(answer.text, body, `cache ${cache}: the whole body`)
    t.equal(answer.headers['content-disposition'], undefined, `cache ${cache}: without the header it could not send`)
    t.equal(answer.headers['content-type'], 'text/csv', `cache ${cache}: the others still cross`)
  }
})

t.test('headers the upstream\'s Connection names, and a single-valued header sent twice, do not cross', async (t) => {
  const body = '{"report":[]}'
  const origin = await rawUpstream(t, Buffer.from([
    'HTTP/1.1 200 OK',
    'Connection: keep-alive',
    'Connection: ETag',
    'ETag: "hop-by-hop"',
    'Content-Type: application/json',
    'Content-Type: text/html',
    'Content-Language: en',
    'Cache-Control: max-age=60',
    'Cache-Control: public',
    `Content-Length: ${body.length}`,
    '', body
  ].join('\r\n')))
  for (const { cache, answer } of await throughBothPaths(t, origin, '/cmu/v2/year')) {
    t.equal(answer.status, 200, `cache ${cache}: answered`)
    t.equal(answer.text, body, `cache ${cache}: the whole body`)
    t.equal(answer.headers.etag, undefined, `cache ${cache}: ETag was hop-by-hop (named in Connection)`)
    // None (streamed), or Fastify's octet-stream for a buffer without one, which RFC 9110 §8.3 lets a recipient assume anyway.
    t.equal(answer.headers['content-type'] ?? 'application/octet-stream', 'application/octet-stream', `cache ${cache}: two Content-Types: neither is guessed`)
    t.equal(answer.headers['cache-control'], 'max-age=60, public', `cache ${cache}: a list field sent twice crosses whole`)
    t.equal(answer.headers['content-language'], 'en', `cache ${cache}: the others cross`)
  }
})

t.test('a Connection header naming Content-Encoding never leaves gzip bytes unlabelled', async (t) => {
  const body = gzipSync('{"report":[]}')
  const origin = await rawUpstream(t, Buffer.concat([
    Buffer.from(`HTTP/1.1 200 OK\r\nConnection: Content-Encoding\r\nContent-Encoding: gzip\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`),
    body
  ]))
  for (const { cache, answer } of await throughBothPaths(t, origin, '/cmu/v2/year', { 'accept-encoding': 'gzip' })) {
    t.equal(answer.status, 200, `cache ${cache}: answered`)
    t.equal(answer.headers['content-encoding'], 'gzip', `cache ${cache}: the gzip body says so`)
  }
})

for (const { api, prefix, version, encodedPrefixes } of ROUTES) {
  t.test(`an encoded prefix never reaches Adobe: the prefix is matched on the raw path (${prefix})`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox)
    // The router decodes /%63mu to /cmu (and /%65sm to /esm); the raw path must still start with the literal prefix.
    for (const path of encodedPrefixes) {
      const response = await call(proxy.url, path)
      t.ok(response.status === 404 || response.status === 400, `${path}: refused (${response.status})`)
      t.match(response.headers['content-type'], /^application\/problem\+json/, `${path}: our problem, not Adobe's answer`)
    }
    assertProblem(t, await call(proxy.url, encodedPrefixes[0]), 404, 'CMU_PROXY_NOT_FOUND')
    for (const path of [`${prefix}/..;x/o/client/token`, `${prefix}/${version}/%2e%2e;jsessionid=1/x`, `${prefix}/${version}/.;/year`]) {
      assertProblem(t, await call(proxy.url, path), 400, 'CMU_PROXY_BAD_PATH')
    }
    t.equal(sandbox.calls.cmu + sandbox.calls.esm, 0, `nothing was sent to Adobe (${api})`)
  })
}

t.test('methods other than GET and HEAD are 405 with Allow', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
    for (const path of ['/cmu/v2/year', '/esm/v3/year']) {
      const response = await call(proxy.url, path, { method, headers: { 'content-type': 'application/xml' } })
      assertProblem(t, response, 405, 'CMU_PROXY_METHOD_NOT_ALLOWED')
      t.equal(response.headers.allow, 'GET, HEAD')
    }
  }
  t.equal(sandbox.calls.cmu + sandbox.calls.esm, 0)
  const head = await call(proxy.url, `/cmu/v2/year.csv?${RANGE}`, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.match(head.headers['content-type'], /^text\/csv/)
  t.equal(head.body.length, 0, 'HEAD has no body')
  assertProblem(t, await call(proxy.url, '/o/client/register'), 404, 'CMU_PROXY_NOT_FOUND')
})

t.test('upstream statuses and redirects are passed back, never followed', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  t.equal((await call(proxy.url, '/cmu/v2/nope')).status, 404, 'not in the drill-down tree')
  const bad = await call(proxy.url, '/cmu/v2/year?start=2024-13')
  t.equal(bad.status, 400)
  t.equal(bad.text, 'Invalid date for start: 2024-13', "Adobe's plain-text reason")
  sandbox.faults.failNext('cmu', 1, { status: 302, headers: { location: 'https://elsewhere.example/steal' } })
  const redirect = await call(proxy.url, '/cmu/v2')
  t.equal(redirect.status, 302)
  t.equal(redirect.headers.location, 'https://elsewhere.example/steal')
  t.equal(sandbox.calls.cmu, 3, 'the redirect was not followed')
})

for (const CACHE_ENABLED of ['false', 'true']) {
  t.test(`upstream hangs: 504 within the configured timeout (cache ${CACHE_ENABLED})`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { UPSTREAM_HEADERS_TIMEOUT_MS: '300', CACHE_ENABLED } })
    await call(proxy.url, '/cmu/v2')
    sandbox.faults.failNext('cmu', 1, { hang: true })
    const started = Date.now()
    const response = await call(proxy.url, '/cmu/v2/year')
    const elapsed = Date.now() - started
    assertProblem(t, response, 504, 'CMU_PROXY_UPSTREAM_TIMEOUT')
    t.ok(elapsed >= 250 && elapsed < 2_000, `answered after ${elapsed} ms`)
  })

  t.test(`a caller that disconnects aborts the upstream request (cache ${CACHE_ENABLED})`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED } })
    await call(proxy.url, '/cmu/v2')
    sandbox.faults.failNext('cmu', 1, { hang: true })
    const abort = new AbortController()
    const pending = call(proxy.url, '/cmu/v2/year', { signal: abort.signal }).catch((err: Error) => err)
    t.ok(await eventually(() => sandbox.calls.cmu === 2), 'request reached upstream')
    abort.abort()
    t.type(await pending, Error)
    t.ok(await eventually(() => sandbox.calls.cmuAborted === 1), 'upstream saw the abort')
    const logged = (): boolean => proxy.logs.some((l) => /"url":"\/cmu\/v2\/year","statusCode":499,[^}]*"code":"CMU_PROXY_CALLER_GONE"/.test(l))
    t.ok(await eventually(logged), 'logged as 499 CMU_PROXY_CALLER_GONE')
    t.equal(proxy.logs.filter((l) => l.includes('"url":"/cmu/v2/year"')).length, 1, 'one request line')
    const metrics = await call(proxy.url, '/metrics')
    t.match(metrics.text, /cmu_proxy_requests_total\{route="cmu",status_class="4xx",cache="[A-Z]+"\} 1\n/, 'counted once, as a 4xx')
    t.match(metrics.text, /cmu_proxy_requests_in_flight 1\n/, 'nothing left in flight but the scrape')
  })
}

t.test('an unreachable upstream is a 502', async (t) => {
  const sandbox = await startSandbox(t)
  const closed = await listenAndClose()
  const proxy = await startProxy(t, sandbox, { env: { ADOBE_CMU_URL: `http://127.0.0.1:${closed}/cmu` } })
  assertProblem(t, await call(proxy.url, '/cmu/v2'), 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
})

t.test('a connection dropped before the headers, and again on the retry, is a 502', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  sandbox.faults.failNext('cmu', 2, { drop: true })
  assertProblem(t, await call(proxy.url, '/cmu/v2'), 502, 'CMU_PROXY_UPSTREAM_UNREACHABLE')
  t.equal(sandbox.calls.cmu, 2, 'retried once')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200, 'the next request is fine')
})

t.test('a body that stalls mid-stream is cut off at the body timeout', async (t) => {
  const stalling = await stallingUpstream(t)
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ADOBE_CMU_URL: `${stalling}/cmu`, UPSTREAM_BODY_TIMEOUT_MS: '200' } })
  const outcome = await call(proxy.url, '/cmu/v2').then((r) => r.status, (err: Error) => err.message)
  t.match(String(outcome), /aborted|socket hang up|ECONNRESET/, 'the caller sees a truncated response, not a hang')
  t.ok(proxy.logs.some((l) => l.includes('response body ended early')), 'logged')
})

t.test('with the cache on, a body that stalls before completing is a clean 504 (nothing was sent yet)', async (t) => {
  const stalling = await stallingUpstream(t)
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ADOBE_CMU_URL: `${stalling}/cmu`, UPSTREAM_BODY_TIMEOUT_MS: '200', CACHE_ENABLED: 'true' } })
  assertProblem(t, await call(proxy.url, '/cmu/v2'), 504, 'CMU_PROXY_UPSTREAM_TIMEOUT')
})

/** Promises 100 bytes, sends 11, then goes quiet. Resolves with its base URL. */
async function stallingUpstream (t: Test): Promise<string> {
  const server = await startScriptedServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/csv', 'content-length': '100' })
    res.write('year,month\n')
  })
  return server.url
}

async function listenAndClose (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise((resolve) => server.close(resolve))
  return port
}

for (const CACHE_ENABLED of ['false', 'true']) {
  t.test(`a HEAD that misses stops reading after Adobe's headers instead of downloading the report (cache ${CACHE_ENABLED})`, async (t) => {
    let upstreamClosedEarly = false
    const upstream = await startScriptedServer(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/csv', 'content-length': String(10 * 1024 * 1024) })
      res.write('year,month\n')
      // The rest never comes; only a cut from the proxy ends this exchange.
      res.once('close', () => { upstreamClosedEarly = !res.writableFinished })
    })
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED, ADOBE_CMU_URL: `${upstream.url}/cmu` } })
    const head = await call(proxy.url, '/cmu/v2/year.csv', { method: 'HEAD' })
    t.equal(head.status, 200)
    t.equal(head.headers['content-length'], String(10 * 1024 * 1024), "Adobe's length")
    t.equal(head.body.length, 0)
    t.ok(await eventually(() => upstreamClosedEarly), 'the upstream exchange was cut after the headers')
    t.equal(upstream.requests[0]?.method, 'GET', 'sent to Adobe as a GET (Adobe serves GET only)')
    t.notOk(proxy.logs.some((l) => l.includes('response body ended early')), 'not logged as a failure')
    t.ok(proxy.logs.some((l) => /"method":"HEAD","url":"\/cmu\/v2\/year.csv","statusCode":200/.test(l)), 'one ordinary request line')
  })
}

t.test('a HEAD of a small report keeps the upstream connection; with the cache on it fills the cache', async (t) => {
  const connections = new Set<unknown>()
  const upstream = await startScriptedServer(t, (_req, res) => {
    connections.add(res.socket)
    res.writeHead(200, { 'content-type': 'text/csv', 'content-length': '11' })
    res.end('year,month\n')
  })
  const sandbox = await startSandbox(t)
  const uncached = await startProxy(t, sandbox, { env: { ADOBE_CMU_URL: `${upstream.url}/cmu` } })
  for (let i = 0; i < 3; i++) t.equal((await call(uncached.url, '/cmu/v2/year.csv', { method: 'HEAD' })).status, 200)
  t.equal(connections.size, 1, 'three HEADs, one upstream connection: the small body was read, not cut')

  const cached = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true', ADOBE_CMU_URL: `${upstream.url}/cmu` } })
  const before = upstream.requests.length
  const head = await call(cached.url, '/cmu/v2/month.csv', { method: 'HEAD' })
  t.equal(head.headers['x-cache'], 'MISS')
  t.equal(head.headers['content-length'], '11')
  const get = await call(cached.url, '/cmu/v2/month.csv')
  t.equal(get.headers['x-cache'], 'HIT', 'the GET after it is a hit')
  t.equal(get.text, 'year,month\n')
  t.equal(upstream.requests.length - before, 1, 'one upstream call for both')
})

t.test('past UPSTREAM_MAX_PENDING requests waiting for Adobe, the next is shed at once with 503', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { UPSTREAM_MAX_PENDING: '3' } })
  await call(proxy.url, '/readyz')
  sandbox.faults.failNext('cmu', 3, { hang: true })
  const hanging = Array.from({ length: 3 }, async (_, i) => await call(proxy.url, `/cmu/v2/year?n=${i}`).catch((err: Error) => err))
  t.ok(await eventually(() => sandbox.calls.cmu === 3), 'three requests wait for Adobe')
  const started = Date.now()
  const shed = await call(proxy.url, '/cmu/v2/year?n=4')
  assertProblem(t, shed, 503, 'CMU_PROXY_OVERLOADED')
  t.equal(shed.headers['retry-after'], '1')
  t.ok(Date.now() - started < 1_000, 'answered at once')
  t.equal(sandbox.calls.cmu, 3, 'never sent to Adobe')
  const metrics = (await call(proxy.url, '/metrics')).text
  t.match(metrics, /cmu_proxy_requests_shed_total 1\n/)
  t.match(metrics, /cmu_proxy_upstream_pending 3\n/)
  // Free the hanging requests (their retry is refused) rather than wait out the 60 s headers timeout.
  await sandbox.close()
  await Promise.all(hanging)
})

t.test('the flat header list: ours win over Adobe\'s of the same name, arrays cross whole, names never repeat', async (t) => {
  const list = callerResponseHeaderList(
    { 'content-type': 'text/csv', 'retry-after': '30', vary: ['accept', 'accept-encoding'], 'set-cookie': 'no', 'x-other': 'no' },
    { 'x-request-id': 'id-1', 'retry-after': '5', 'x-cache': undefined }
  )
  t.same(list, ['content-type', 'text/csv', 'vary', ['accept', 'accept-encoding'], 'x-request-id', 'id-1', 'retry-after', '5'])
  const names = list.filter((_, i) => i % 2 === 0)
  t.equal(new Set(names).size, names.length, 'each name once')
})
