// The token lifecycle seen from outside: through the proxy's HTTP interface,
// against the sandbox, counting what reached the fake Adobe.
import { stat } from 'node:fs/promises'
import t from 'tap'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { assertProblem, call, eventually, startProxy, startSandbox, whenInFlight } from '../helpers/app.js'

const FAST_RETRY = { TOKEN_RETRY_BASE_MS: '50', TOKEN_RETRY_MAX_MS: '200' }

t.test('cold start herd: 1,000 concurrent requests make exactly one register and one token call', async (t) => {
  const sandbox = await startSandbox(t)
  // Registration waits until every request is at the proxy, so all of them arrive while the first attempt is in flight.
  const registration = heldAnswer()
  t.teardown(registration.release)
  sandbox.faults.failNext('register', 1, { until: registration.until })
  const proxy = await startProxy(t, sandbox)
  const asking = Promise.all(Array.from({ length: 1_000 }, async () => await call(proxy.url, '/cmu/v2/year?start=2026-01&end=2026-02')))
  t.ok(await whenInFlight(proxy.url, 1_000), 'all 1,000 wait for the first token')
  registration.release()
  const responses = await asking
  t.same(responses.map((r) => r.status), Array(1_000).fill(200), 'every request answered 200')
  t.equal(sandbox.calls.register, 1, 'one registration')
  t.equal(sandbox.calls.token, 1, 'one token request')
  t.equal(sandbox.calls.cmu, 1_000)
})

t.test('a restart reuses the persisted credentials and the file is private', async (t) => {
  const sandbox = await startSandbox(t)
  const first = await startProxy(t, sandbox)
  t.equal((await call(first.url, '/cmu/v2')).status, 200)
  await first.close()
  t.equal(sandbox.calls.register, 1)
  t.equal((await stat(first.credentialsFile)).mode & 0o777, 0o600, 'credentials file mode 0600')

  const second = await startProxy(t, sandbox, { credentialsFile: first.credentialsFile, statement: first.statement })
  t.equal((await call(second.url, '/cmu/v2')).status, 200)
  t.equal(sandbox.calls.register, 1, 'no second registration')
  t.equal(sandbox.calls.token, 2, 'a token per process')
})

t.test('credentials stored for another statement are not used', async (t) => {
  const sandbox = await startSandbox(t)
  const first = await startProxy(t, sandbox)
  await call(first.url, '/cmu/v2')
  await first.close()
  const second = await startProxy(t, sandbox, { credentialsFile: first.credentialsFile })
  t.equal((await call(second.url, '/cmu/v2')).status, 200)
  t.equal(sandbox.calls.register, 2, 'a new statement registers')
})

t.test('a 2-second token under steady traffic for 6 s: no failures, every refresh before expiry', async (t) => {
  const sandbox = await startSandbox(t, { tokenLifetimeSeconds: 2 })
  const proxy = await startProxy(t, sandbox)
  const statuses = new Map<number, number>()
  const until = Date.now() + 6_000
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (Date.now() < until) {
      const { status } = await call(proxy.url, '/cmu/v2/year?start=2026-01&end=2026-02')
      statuses.set(status, (statuses.get(status) ?? 0) + 1)
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }))
  t.same([...statuses.keys()], [200], 'every caller saw 200')
  t.equal(sandbox.calls.cmuUnauthorized, 0, 'no expired token ever reached upstream')
  const issued = sandbox.dcr.issued
  t.ok(issued.length >= 4, `refreshed proactively (${issued.length} tokens in 6 s)`)
  for (let i = 1; i < issued.length; i++) {
    const previous = issued[i - 1]
    const current = issued[i]
    if (previous === undefined || current === undefined) continue
    t.ok(current.issuedAt < previous.expiresAt, `token ${i + 1} obtained ${previous.expiresAt - current.issuedAt} ms before token ${i} expired`)
  }
})

t.test('a token revoked upstream is refreshed on the next call; one rejected twice is a 502', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  sandbox.dcr.revokeTokens()
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200, 'refreshed and retried')
  t.equal(sandbox.calls.token, 2)
  t.equal(sandbox.calls.cmuUnauthorized, 1)

  sandbox.faults.failNext('cmu', 2, { status: 401, body: 'Unauthorized' })
  assertProblem(t, await call(proxy.url, '/cmu/v2'), 502, 'CMU_PROXY_UPSTREAM_REJECTED_TOKEN')
  t.equal(sandbox.calls.token, 3, 'one refresh for the retry, no more')
})

t.test('revoked client credentials: the proxy registers again and succeeds', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  sandbox.dcr.revokeClients()
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  t.equal(sandbox.calls.register, 2, 're-registered once')
  t.equal(sandbox.calls.token, 3, 'refused token call, then a token for the new client')
})

t.test('token endpoint down: the current token keeps serving; /readyz turns 503 only when it expires', async (t) => {
  const sandbox = await startSandbox(t, { tokenLifetimeSeconds: 3 })
  const proxy = await startProxy(t, sandbox, { env: FAST_RETRY })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  t.equal((await call(proxy.url, '/readyz')).status, 200)
  sandbox.faults.failNext('token', Infinity, { status: 503, body: 'Service Unavailable' })

  // A refresh fails at once, seconds before the token expires: callers must not notice.
  await proxy.app.broker.refreshNow().catch(() => {})
  t.equal(sandbox.calls.token, 2, 'the refresh was attempted and failed')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200, 'still served with the old token')
  t.equal((await call(proxy.url, '/readyz')).status, 200, 'still ready')
  t.ok(await eventually(() => sandbox.calls.token >= 4, 4_000), 'failed refreshes are retried in the background')

  t.ok(await eventually(async () => (await call(proxy.url, '/readyz')).status === 503, 4_000), '/readyz turns 503')
  const notReady = (await call(proxy.url, '/readyz')).json()
  t.equal(notReady.code, 'CMU_PROXY_TOKEN_ENDPOINT_ERROR')
  t.match(notReady.reason, /503/)
  const refused = await call(proxy.url, '/cmu/v2')
  assertProblem(t, refused, 503, 'CMU_PROXY_TOKEN_ENDPOINT_ERROR')
  t.ok(Number(refused.headers['retry-after']) >= 1, 'Retry-After on 503')
  t.equal(sandbox.calls.cmuUnauthorized, 0, 'no expired token was sent')

  sandbox.faults.clear()
  t.ok(await eventually(async () => (await call(proxy.url, '/readyz')).status === 200, 2_000), '/readyz recovers')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
})

t.test('a rejected software statement: not ready, 503 with the reason, slow retries', async (t) => {
  const sandbox = await startSandbox(t)
  sandbox.dcr.rejectStatementsWith = 'unapproved_software_statement'
  // The slow pace is TOKEN_RETRY_MAX_MS: long enough that no timer fires during the test.
  const proxy = await startProxy(t, sandbox, { env: { TOKEN_RETRY_BASE_MS: '50', TOKEN_RETRY_MAX_MS: '30000' } })
  const response = await call(proxy.url, '/cmu/v2')
  assertProblem(t, response, 503, 'CMU_PROXY_STATEMENT_REJECTED')
  const ready = await call(proxy.url, '/readyz')
  t.equal(ready.status, 503)
  t.equal(ready.json().code, 'CMU_PROXY_STATEMENT_REJECTED')
  t.match(ready.json().reason, /unapproved_software_statement/)
  await call(proxy.url, '/cmu/v2')
  t.equal(sandbox.calls.register, 1, 'callers during the back-off do not trigger more registrations')
  t.ok(proxy.logs.some((line) => line.includes('CMU_PROXY_STATEMENT_REJECTED')), 'logged')
})

t.test('throttled token endpoint: 503 with a throttle code and at least a second before the next try', async (t) => {
  const sandbox = await startSandbox(t)
  sandbox.faults.failNext('token', 1, { status: 429, contentType: 'text/html', body: '<html>429</html>' })
  const proxy = await startProxy(t, sandbox, { env: FAST_RETRY })
  const response = await call(proxy.url, '/cmu/v2')
  assertProblem(t, response, 503, 'CMU_PROXY_TOKEN_THROTTLED')
  t.ok(Number(response.headers['retry-after']) >= 1)
  t.equal(sandbox.calls.token, 1)
  t.ok(await eventually(async () => (await call(proxy.url, '/readyz')).status === 200, 3_000), 'recovers after the wait')
})

t.test('an unreachable auth server is a 503 naming it', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ...FAST_RETRY, ADOBE_AUTH_URL: 'http://127.0.0.1:1' } })
  assertProblem(t, await call(proxy.url, '/cmu/v2'), 503, 'CMU_PROXY_NOT_REGISTERED')
})

t.test('pre-provisioned client credentials skip registration', async (t) => {
  const sandbox = await startSandbox(t)
  const registered = sandbox.dcr.register({ software_statement: 'a.b.c' })
  t.equal(registered.status, 400, 'not a JWT')
  const ok = sandbox.dcr.register({ software_statement: makeSoftwareStatement() })
  const proxy = await startProxy(t, sandbox, {
    env: { ADOBE_SOFTWARE_STATEMENT: undefined, ADOBE_CLIENT_ID: String(ok.body.client_id), ADOBE_CLIENT_SECRET: String(ok.body.client_secret), ...FAST_RETRY }
  })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  t.equal(sandbox.calls.register, 0, 'no registration over HTTP')
  sandbox.dcr.revokeClients()
  assertProblem(t, await call(proxy.url, '/cmu/v2'), 503, 'CMU_PROXY_CLIENT_REJECTED')
})

// setTimeout takes at most 2^31-1 ms; a longer delay fires after 1 ms. These
// delays come from Adobe, so each must be clamped or the proxy hammers Adobe.
// An overflowed timer would fire within milliseconds: 300 ms of quiet proves it did not.
t.test('Retry-After: 4294968 makes one token call, not a loop', async (t) => {
  const sandbox = await startSandbox(t)
  sandbox.faults.failNext('token', Infinity, { status: 429, headers: { 'retry-after': '4294968' } })
  const proxy = await startProxy(t, sandbox)
  t.ok(await eventually(() => sandbox.calls.token >= 1, 2_000), 'the first call was made')
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(sandbox.calls.token, 1, 'exactly one token call')
  const ready = (await call(proxy.url, '/readyz')).json()
  t.equal(ready.code, 'CMU_PROXY_TOKEN_THROTTLED')
})

t.test('expires_in: 4e9 makes one token call, not a loop', async (t) => {
  const sandbox = await startSandbox(t, { tokenLifetimeSeconds: 4e9 })
  const proxy = await startProxy(t, sandbox)
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(sandbox.calls.token, 1, 'exactly one token call')
  t.equal((await call(proxy.url, '/readyz')).status, 200)
})

t.test('a wall-clock jump does not expire the held token (deadlines use a monotonic clock)', async (t) => {
  const sandbox = await startSandbox(t)
  // The wall clock as the proxy will see it: real time plus a step we control. This
  // test is about the default clock (no injected one), so it moves Date.now itself.
  const realNow = Date.now
  let step = 0
  Date.now = () => realNow() + step
  t.teardown(() => { Date.now = realNow })
  const proxy = await startProxy(t, sandbox)
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  // The host clock jumps a day ahead (NTP step, VM resume): the 6-hour token has not aged.
  step = 24 * 3_600_000
  const ready = await call(proxy.url, '/readyz')
  t.equal(ready.status, 200, 'still ready')
  t.equal(sandbox.calls.token, 1, 'no refresh was needed')
})
