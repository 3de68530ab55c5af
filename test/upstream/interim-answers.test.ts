// Adobe's status line, as a raw socket writes it: informational answers (1xx,
// such as a CDN's 103 Early Hints) come before the final one and are never
// the caller's status; a final status outside 200-599 is no answer at all
// (502 CMU_PROXY_UPSTREAM_BAD_RESPONSE), on the streamed path and the cached one.
import { createServer, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { assertProblem, call, startProxy, startSandbox } from '../helpers/app.js'

/** An upstream that reads one request head and answers with `raw`, byte for byte. */
async function rawUpstream (t: Test, raw: string): Promise<{ url: string, requests: () => number }> {
  let requests = 0
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    let head = ''
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1')
      while (head.includes('\r\n\r\n')) {
        head = head.slice(head.indexOf('\r\n\r\n') + 4)
        requests++
        socket.write(raw)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests: () => requests }
}

const REPORT = '{"report":[]}'
const EARLY_HINTS = 'HTTP/1.1 103 Early Hints\r\nLink: </cmu/v2/style.css>; rel=preload\r\n\r\n'
const FINAL = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${REPORT.length}\r\n\r\n${REPORT}`

for (const cache of ['false', 'true']) {
  t.test(`cache ${cache === 'true' ? 'on' : 'off'}: a 103 before the 200 is skipped; the caller gets the 200 whole`, async (t) => {
    const upstream = await rawUpstream(t, EARLY_HINTS + EARLY_HINTS + FINAL)
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: cache, ADOBE_CMU_URL: `${upstream.url}/cmu` } })
    for (const round of [1, 2]) {
      const response = await call(proxy.url, '/cmu/v2/year')
      t.equal(response.status, 200, `round ${round}: 200`)
      t.equal(response.text, REPORT, `round ${round}: the whole body`)
      t.equal(response.headers['content-type'], 'application/json')
      t.equal(response.headers.link, undefined, 'nothing of the interim answer crosses')
    }
    t.notOk(proxy.logs.some((l) => /ERR_HTTP_HEADERS_SENT|"statusCode":(103|499|500)/.test(l)), 'no cut answer, no 499 or 500 in the log')
  })

  t.test(`cache ${cache === 'true' ? 'on' : 'off'}: a final status outside 200-599 is 502 CMU_PROXY_UPSTREAM_BAD_RESPONSE`, async (t) => {
    for (const status of [999, 600]) {
      const upstream = await rawUpstream(t, `HTTP/1.1 ${status} Odd\r\nContent-Type: application/json\r\nContent-Length: ${REPORT.length}\r\n\r\n${REPORT}`)
      const sandbox = await startSandbox(t)
      const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: cache, ADOBE_CMU_URL: `${upstream.url}/cmu` } })
      const response = await call(proxy.url, '/cmu/v2/year')
      assertProblem(t, response, 502, 'CMU_PROXY_UPSTREAM_BAD_RESPONSE')
      t.notOk(response.text.includes(REPORT), `${status}: Adobe's body does not cross`)
      t.equal(upstream.requests(), 1, `${status}: not retried`)
      t.ok(proxy.logs.some((l) => l.includes('"statusCode":502') && l.includes('"code":"CMU_PROXY_UPSTREAM_BAD_RESPONSE"')), `${status}: logged with its code`)
    }
  })
}

/** An upstream that answers every request with a 103 every `everyMs`, and never a final answer, until the proxy hangs up. */
async function drippingUpstream (t: Test, everyMs: number): Promise<{ url: string }> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.once('data', () => {
      const timer = setInterval(() => { socket.write(EARLY_HINTS) }, everyMs)
      socket.on('close', () => { clearInterval(timer) })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

for (const cache of ['false', 'true']) {
  t.test(`cache ${cache === 'true' ? 'on' : 'off'}: a burst of informational answers past eight ends as 502, however quick`, async (t) => {
    const upstream = await rawUpstream(t, EARLY_HINTS.repeat(9) + FINAL)
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: cache, ADOBE_CMU_URL: `${upstream.url}/cmu` } })
    const response = await call(proxy.url, '/cmu/v2/year')
    assertProblem(t, response, 502, 'CMU_PROXY_UPSTREAM_BAD_RESPONSE')
    t.match(response.json().detail, /9th informational answer/)
  })

  t.test(`cache ${cache === 'true' ? 'on' : 'off'}: a drip of informational answers does not restart the headers deadline: 504 after it`, async (t) => {
    // undici restarts its own headers timer on every 103: without our deadline this request never ends (the review held it 8 s).
    const upstream = await drippingUpstream(t, 300)
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: cache, ADOBE_CMU_URL: `${upstream.url}/cmu`, UPSTREAM_HEADERS_TIMEOUT_MS: '500' } })
    const abandon = AbortSignal.timeout(20_000)
    const response = await call(proxy.url, '/cmu/v2/year', { signal: abandon })
    assertProblem(t, response, 504, 'CMU_PROXY_UPSTREAM_TIMEOUT')
    t.notOk(abandon.aborted, 'ended by the proxy, not by the test')
  })
}
