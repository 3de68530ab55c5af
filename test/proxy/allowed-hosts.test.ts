// DNS rebinding: without inbound keys, /cmu answers only requests addressed
// to a loopback name or one of PROXY_ALLOWED_HOSTS; others get 421.
import t from 'tap'
import { assertProblem, call, startProxy, startSandbox } from '../helpers/app.js'
import { exchange, open } from '../helpers/wire.js'

const KEY = 'alpha-key-0123456789abcdef'

t.test('anonymous: loopback names on any port are served; a rebound name gets 421, and Adobe never sees it', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  for (const host of ['localhost', 'localhost:8080', 'LOCALHOST.', '127.0.0.1:1', '[::1]', '[::1]:8080']) {
    t.equal((await call(proxy.url, '/cmu/v2', { headers: { host } })).status, 200, `Host: ${host}`)
  }
  const before = sandbox.calls.cmu
  for (const host of ['attacker.example', 'attacker.example:8080', 'localhost.attacker.example', '127.0.0.1.nip.io', '[::2]']) {
    const response = await call(proxy.url, '/cmu/v2', { headers: { host } })
    assertProblem(t, response, 421, 'CMU_PROXY_MISDIRECTED')
    t.notOk(response.text.includes(host), 'the name is not echoed')
  }
  t.equal(sandbox.calls.cmu, before, 'none reached Adobe')
  t.equal((await call(proxy.url, '/healthz', { headers: { host: '10.1.2.3:8080' } })).status, 200, 'probes address pods by IP: health and metrics are not checked')
})

t.test('anonymous: a request without Host (HTTP/1.0) gets 421', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  const wire = await open(t, proxy)
  const [response] = await exchange(wire, 'GET /cmu/v2 HTTP/1.0\r\n\r\n', 1)
  t.match(response, /^HTTP\/1\.1 421 Misdirected Request\r\n[^]*"code":"CMU_PROXY_MISDIRECTED"/)
})

t.test('PROXY_ALLOWED_HOSTS adds names, in anonymous mode and with keys', async (t) => {
  const sandbox = await startSandbox(t)
  const anonymous = await startProxy(t, sandbox, { env: { PROXY_ALLOWED_HOSTS: 'cmu-proxy,reports.internal' } })
  t.equal((await call(anonymous.url, '/cmu/v2', { headers: { host: 'cmu-proxy:8080' } })).status, 200, 'a listed name')
  t.equal((await call(anonymous.url, '/cmu/v2', { headers: { host: 'Reports.Internal' } })).status, 200, 'in any case')
  t.equal((await call(anonymous.url, '/cmu/v2', { headers: { host: 'localhost' } })).status, 200, 'loopback still')
  assertProblem(t, await call(anonymous.url, '/cmu/v2', { headers: { host: 'other.internal' } }), 421, 'CMU_PROXY_MISDIRECTED')

  const keyed = await startProxy(t, sandbox, { env: { PROXY_API_KEYS: KEY, PROXY_ALLOWED_HOSTS: 'cmu-proxy' } })
  const withKey = { 'x-api-key': KEY }
  t.equal((await call(keyed.url, '/cmu/v2', { headers: { ...withKey, host: 'cmu-proxy' } })).status, 200)
  assertProblem(t, await call(keyed.url, '/cmu/v2', { headers: { ...withKey, host: 'other.internal' } }), 421, 'CMU_PROXY_MISDIRECTED')
})

t.test('with keys and no PROXY_ALLOWED_HOSTS, any Host is served (the key is the check)', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { PROXY_API_KEYS: KEY } })
  t.equal((await call(proxy.url, '/cmu/v2', { headers: { 'x-api-key': KEY, host: 'cmu-proxy.prod.svc:8080' } })).status, 200)
  assertProblem(t, await call(proxy.url, '/cmu/v2', { headers: { host: 'cmu-proxy.prod.svc:8080' } }), 401, 'CMU_PROXY_UNAUTHORIZED')
})
