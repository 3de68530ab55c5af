// The egress proxy (issue #13, item 4): every call to Adobe goes through
// HTTPS_PROXY / HTTP_PROXY unless NO_PROXY covers the host, keeps keep-alive
// and our timeouts, and the proxy's credentials never reach a log.
import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { runCheck } from '../../src/ops/check.js'
import { egressProxyFor } from '../../src/config/egress-proxy.js'
import { loadSettings } from '../../src/config/load.js'
import { ConfigError } from '../../src/config/problems.js'
import { describeEgress } from '../../src/upstream/dispatchers.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { assertProblem, call, startProxy, startSandbox, temporaryDirectory } from '../helpers/app.js'

const PASSWORD = 'proxy-pass-6f1c'
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'])

interface ForwardProxy {
  /** http://user:password@127.0.0.1:port */
  url: string
  /** Request lines as received: "POST http://127.0.0.1:1234/o/client/token", "CONNECT host:port". */
  seen: string[]
  /** Proxy-Authorization of each request. */
  credentials: Array<string | undefined>
  /** The client connection each request came on. */
  sockets: Socket[]
}

/** A forward proxy on loopback: absolute-form requests and CONNECT tunnels, counted. */
async function startForwardProxy (t: Test): Promise<ForwardProxy> {
  const proxy: Omit<ForwardProxy, 'url'> = { seen: [], credentials: [], sockets: [] }
  const server = createServer((req, res) => {
    proxy.seen.push(`${req.method ?? ''} ${req.url ?? ''}`)
    proxy.credentials.push(req.headers['proxy-authorization'])
    proxy.sockets.push(req.socket)
    const target = new URL(req.url ?? '')
    const headers: IncomingHttpHeaders = {}
    for (const [name, value] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(name)) headers[name] = value
    const forwarded = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: `${target.pathname}${target.search}`, headers, agent: false }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, Object.fromEntries(Object.entries(answer.headers).filter(([name]) => !HOP_BY_HOP.has(name))))
      answer.pipe(res)
    })
    // Adobe dropped the connection: so does the proxy, as a real one would before any answer.
    forwarded.on('error', () => { req.socket.destroy() })
    req.pipe(forwarded)
  })
  server.on('connect', (req, socket: Socket, head: Buffer) => {
    proxy.seen.push(`CONNECT ${req.url ?? ''}`)
    proxy.credentials.push(req.headers['proxy-authorization'])
    const [host = '', port = ''] = (req.url ?? '').split(':')
    const tunnel = connect(Number(port), host, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      tunnel.write(head)
      tunnel.pipe(socket).pipe(tunnel)
    })
    tunnel.on('error', () => socket.destroy())
    socket.on('error', () => tunnel.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  return { ...proxy, url: `http://cmu:${PASSWORD}@127.0.0.1:${(server.address() as AddressInfo).port}` }
}

t.test('HTTP_PROXY: register, token and reports all go through the proxy, with its credentials, which are never logged', async (t) => {
  const sandbox = await startSandbox(t)
  const forward = await startForwardProxy(t)
  const proxy = await startProxy(t, sandbox, { env: { HTTP_PROXY: forward.url } })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  t.equal((await call(proxy.url, '/esm/v3')).status, 200)
  t.same(forward.seen, [
    `POST ${sandbox.authUrl}/o/client/register`,
    `POST ${sandbox.authUrl}/o/client/token`,
    `GET ${sandbox.cmuUrl}/v2`,
    `GET ${sandbox.esmUrl}/v3`
  ], 'every call to Adobe, in absolute form')
  t.same(new Set(forward.credentials), new Set([`Basic ${Buffer.from(`cmu:${PASSWORD}`).toString('base64')}`]), 'the proxy credentials on every call')
  const masked = `via http://***@127.0.0.1:${new URL(forward.url).port}`
  t.ok(proxy.logs.some((l) => l.includes(masked)), `start-up log names the proxy, masked: ${masked}`)
  t.notOk(proxy.logs.join('\n').includes(PASSWORD), 'the proxy password is never logged')
})

t.test('through the proxy, keep-alive holds, a dropped connection is still retried, and a hang still times out', async (t) => {
  const sandbox = await startSandbox(t)
  const forward = await startForwardProxy(t)
  const proxy = await startProxy(t, sandbox, { env: { HTTP_PROXY: forward.url, UPSTREAM_HEADERS_TIMEOUT_MS: '300' } })
  for (let i = 0; i < 3; i++) t.equal((await call(proxy.url, '/cmu/v2/year')).status, 200)
  const reports = forward.sockets.filter((_, i) => forward.seen[i]?.includes('/cmu/'))
  t.equal(new Set(reports).size, 1, 'three reports over one kept-alive connection to the proxy')

  sandbox.faults.failNext('cmu', 1, { drop: true })
  const before = forward.seen.length
  t.equal((await call(proxy.url, '/cmu/v2/year')).status, 200, 'the drop was retried')
  t.equal(forward.seen.length - before, 2, 'both attempts through the proxy')
  t.equal(sandbox.calls.cmu, 5)

  sandbox.faults.failNext('cmu', 1, { hang: true })
  const started = Date.now()
  assertProblem(t, await call(proxy.url, '/cmu/v2/year'), 504, 'CMU_PROXY_UPSTREAM_TIMEOUT')
  t.ok(Date.now() - started < 2_000, 'UPSTREAM_HEADERS_TIMEOUT_MS applies through the proxy')
})

t.test('NO_PROXY covering the host: nothing goes through the proxy; lower-case names work too', async (t) => {
  const sandbox = await startSandbox(t)
  const forward = await startForwardProxy(t)
  const direct = await startProxy(t, sandbox, { env: { HTTP_PROXY: forward.url, NO_PROXY: 'localhost,127.0.0.1' } })
  t.equal((await call(direct.url, '/cmu/v2')).status, 200)
  t.same(forward.seen, [], 'the proxy saw nothing')
  t.notOk(direct.logs.some((l) => l.includes('egress proxy')), 'no egress proxy logged')

  const other = await startSandbox(t)
  const lower = await startProxy(t, other, { env: { http_proxy: forward.url, no_proxy: 'example.com' } })
  t.equal((await call(lower.url, '/cmu/v2')).status, 200)
  t.equal(forward.seen.length, 3, 'http_proxy used; no_proxy does not cover 127.0.0.1')
})

t.test('cmu-proxy check says which egress proxy it used, masked', async (t) => {
  const sandbox = await startSandbox(t)
  const forward = await startForwardProxy(t)
  const lines: string[] = []
  const env = { CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(), ...sandbox.adobeUrls, CREDENTIALS_FILE: `${temporaryDirectory(t)}/credentials.json`, HTTPS_PROXY: forward.url }
  // HTTPS_PROXY does not apply to http:// URLs: direct.
  t.equal(await runCheck(env, (line) => { lines.push(line) }), 0)
  t.equal(lines[1], 'PASS  egress       direct')
  lines.length = 0
  t.equal(await runCheck({ ...env, HTTP_PROXY: forward.url }, (line) => { lines.push(line) }), 0)
  t.equal(lines[1], `PASS  egress       via http://***@127.0.0.1:${new URL(forward.url).port}`)
  t.equal(forward.seen.length, 3, 'the token and the two report calls (CMU, ESM) went through it (credentials were stored)')
  t.notOk(lines.join('\n').includes(PASSWORD))

  // An https:// Adobe URL goes through HTTPS_PROXY in a CONNECT tunnel (here to a plain-HTTP port, so TLS then fails).
  lines.length = 0
  const tlsTarget = `127.0.0.1:${new URL(sandbox.authUrl).port}`
  t.equal(await runCheck({ ...env, ADOBE_AUTH_URL: `https://${tlsTarget}`, CREDENTIALS_FILE: `${temporaryDirectory(t)}/credentials.json` }, (line) => { lines.push(line) }), 1)
  t.match(lines, ['PASS  config', `PASS  egress       auth via http://***@127.0.0.1:${new URL(forward.url).port}, reports direct`, /^PASS {2}statement/, /^FAIL {2}register +register endpoint unreachable/])
  t.equal(forward.seen.at(-1), `CONNECT ${tlsTarget}`, 'tunnelled through the proxy')
  t.equal(forward.credentials.at(-1), `Basic ${Buffer.from(`cmu:${PASSWORD}`).toString('base64')}`)
  t.notOk(lines.join('\n').includes(PASSWORD))
})

t.test('a bad proxy URL stops start-up with one line that does not echo it', async (t) => {
  const base = { CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement() }
  for (const [env, message] of [
    [{ HTTPS_PROXY: 'proxy.example:3128' }, 'HTTPS_PROXY must be an http:// or https:// URL such as http://proxy.example:3128'],
    [{ https_proxy: `http://u:${PASSWORD}@[bad` }, 'HTTPS_PROXY is not a valid URL']
  ] as const) {
    t.throws(() => loadSettings({ env: { ...base, ...env } }), new ConfigError([{ variable: message.split(' ')[0] ?? '', problem: message.slice(message.indexOf(' ') + 1) }]))
  }
  t.same(loadSettings({ env: { ...base, HTTP_PROXY: '', http_proxy: '', ADOBE_AUTH_URL: 'http://auth.example' } }).upstream.egress, { auth: undefined, cmu: undefined }, 'empty means unset')
})

t.test('which calls the proxy takes: NO_PROXY as undici and curl read it', async (t) => {
  const proxy = 'http://proxy.internal:3128'
  const cases: Array<[string, Record<string, string>, string | undefined]> = [
    ['https://api.auth.adobe.com', { HTTPS_PROXY: proxy }, proxy],
    ['https://api.auth.adobe.com', { HTTP_PROXY: proxy }, proxy],
    ['http://adobe.test', { HTTPS_PROXY: proxy }, undefined],
    ['https://mgmt.auth.adobe.com/cmu', { HTTPS_PROXY: proxy, NO_PROXY: 'adobe.com' }, undefined],
    ['https://mgmt.auth.adobe.com/cmu', { HTTPS_PROXY: proxy, NO_PROXY: '.adobe.com' }, undefined],
    ['https://mgmt.auth.adobe.com/cmu', { HTTPS_PROXY: proxy, NO_PROXY: '*.AUTH.adobe.com' }, undefined],
    ['https://mgmt.auth.adobe.com/cmu', { HTTPS_PROXY: proxy, NO_PROXY: 'notadobe.com, other' }, proxy],
    ['https://mgmt.auth.adobe.com/cmu', { HTTPS_PROXY: proxy, NO_PROXY: 'adobe.com:443' }, undefined],
    ['https://mgmt.auth.adobe.com/cmu', { HTTPS_PROXY: proxy, NO_PROXY: 'adobe.com:8443' }, proxy],
    ['https://mgmt.auth.adobe.com/cmu', { HTTPS_PROXY: proxy, NO_PROXY: '*' }, undefined],
    ['https://bad-adobe.com', { HTTPS_PROXY: proxy, NO_PROXY: 'adobe.com' }, proxy]
  ]
  for (const [url, settings, expected] of cases) t.equal(egressProxyFor(url, settings), expected, `${url} with ${JSON.stringify(settings)}`)
  t.equal(describeEgress(undefined), 'direct')
  t.equal(describeEgress('https://user:secret@proxy.internal:3128/'), 'via https://***@proxy.internal:3128')
  t.equal(describeEgress('http://proxy.internal'), 'via http://proxy.internal')
})
