// Operating it: metrics, inbound keys, the admin view, the check command.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { buildApp } from '../../src/app.js'
import { runCheck } from '../../src/ops/check.js'
import { loadSettings } from '../../src/config/load.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { assertProblem, call, capturedLogger, startProxy, startSandbox, type RawResponse } from '../helpers/app.js'

const KEY_A = 'key-a-0123456789abcdef'
const KEY_B = 'key-b-0123456789abcdef'
const ADMIN = 'admin-0123456789abcdef'

/** The value of one sample in Prometheus text format, or undefined. */
function sample (text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels === '' ? ' ' : `{${labels}} `}`))
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1))
}

t.test('GET /metrics counts real traffic', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true' } })
  const before = await call(proxy.url, '/metrics')
  t.equal(before.status, 200)
  t.match(before.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  t.equal(sample(before.text, 'cmu_proxy_requests_total', 'route="cmu",status_class="2xx",cache="MISS"'), undefined)

  await call(proxy.url, '/cmu/v2/year?limit=1')
  await call(proxy.url, '/cmu/v2/year?limit=1')
  await call(proxy.url, '/cmu/v2/year?limit=1', { headers: { 'cache-control': 'no-cache' } })
  await call(proxy.url, '/cmu/v2/nope')
  await call(proxy.url, '/healthz')
  await call(proxy.url, '/nowhere')
  const text = (await call(proxy.url, '/metrics')).text
  t.equal(sample(text, 'cmu_proxy_requests_total', 'route="cmu",status_class="2xx",cache="MISS"'), 1)
  t.equal(sample(text, 'cmu_proxy_requests_total', 'route="cmu",status_class="2xx",cache="HIT"'), 1)
  t.equal(sample(text, 'cmu_proxy_requests_total', 'route="cmu",status_class="2xx",cache="BYPASS"'), 1)
  t.equal(sample(text, 'cmu_proxy_requests_total', 'route="cmu",status_class="4xx",cache="MISS"'), 1, 'upstream 404')
  t.equal(sample(text, 'cmu_proxy_requests_total', 'route="healthz",status_class="2xx",cache="NONE"'), 1)
  t.equal(sample(text, 'cmu_proxy_requests_total', 'route="not_found",status_class="4xx",cache="NONE"'), 1)
  t.equal(sample(text, 'cmu_proxy_request_duration_seconds_count', 'route="cmu"'), 4)
  t.equal(sample(text, 'cmu_proxy_request_duration_seconds_bucket', 'le="+Inf",route="cmu"'), 4)
  const buckets = text.split('\n').filter((l) => l.startsWith('cmu_proxy_request_duration_seconds_bucket{') && l.includes('route="cmu"')).map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)))
  t.equal(buckets.length, 16, '15 bounds and +Inf')
  t.ok(buckets.every((v, i) => i === 0 || v >= (buckets[i - 1] ?? 0)), 'cumulative buckets')
  t.ok((sample(text, 'cmu_proxy_request_duration_seconds_sum', 'route="cmu"') ?? 0) > 0)
  t.match(text, /# TYPE cmu_proxy_request_duration_seconds histogram/)
  t.match(text, /# TYPE cmu_proxy_requests_total counter/)
  t.equal(sample(text, 'cmu_proxy_upstream_duration_seconds_count', 'status_class="2xx"'), 2)
  t.equal(sample(text, 'cmu_proxy_upstream_duration_seconds_count', 'status_class="4xx"'), 1)
  t.equal(sample(text, 'cmu_proxy_token_requests_total', 'result="success"'), 1)
  t.equal(sample(text, 'cmu_proxy_token_requests_total', 'result="failure"'), 0)
  t.equal(sample(text, 'cmu_proxy_registrations_total', 'result="success"'), 1)
  t.ok((sample(text, 'cmu_proxy_token_expires_in_seconds') ?? 0) > 21_000, 'seconds until expiry')
  t.equal(sample(text, 'cmu_proxy_requests_in_flight'), 1, 'the scrape itself')
  t.equal(sample(text, 'cmu_proxy_cache_hits_total'), 1)
  t.equal(sample(text, 'cmu_proxy_cache_misses_total'), 2)
  t.equal(sample(text, 'cmu_proxy_cache_bypasses_total'), 1)
  t.equal(sample(text, 'cmu_proxy_cache_evictions_total'), 0)
  t.ok((sample(text, 'cmu_proxy_cache_bytes') ?? 0) > 0)
  t.equal(sample(text, 'cmu_proxy_cache_entries'), 1)
  t.ok((sample(text, 'process_resident_memory_bytes') ?? 0) > 0, 'process defaults')
})

t.test('inbound API keys: required for /cmu, constant-time checked, never forwarded', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { PROXY_API_KEYS: `${KEY_A}, ${KEY_B}` } })
  const wrong: Array<Record<string, string>> = [{}, { 'x-api-key': 'wrong-key-0123456789' }, { authorization: 'Bearer wrong-key-0123456789' }, { authorization: `Basic ${KEY_A}` }]
  for (const headers of wrong) {
    const refused = await call(proxy.url, '/cmu/v2', { headers })
    assertProblem(t, refused, 401, 'CMU_PROXY_UNAUTHORIZED')
    t.equal(refused.headers['www-authenticate'], 'Bearer realm="cmu-proxy"')
  }
  assertProblem(t, await call(proxy.url, '/cmu/v2', { method: 'POST' }), 401, 'CMU_PROXY_UNAUTHORIZED')
  t.equal(sandbox.calls.cmu, 0, 'nothing sent upstream')
  t.equal((await call(proxy.url, '/cmu/v2', { headers: { authorization: `Bearer ${KEY_A}` } })).status, 200)
  t.equal((await call(proxy.url, '/cmu/v2', { headers: { 'x-api-key': KEY_B } })).status, 200)
  t.notOk(JSON.stringify(sandbox.cmuRequests).includes('key-'), 'keys never reach Adobe')
  t.equal((await call(proxy.url, '/healthz')).status, 200, '/healthz stays open')
  t.equal((await call(proxy.url, '/readyz')).status, 200, '/readyz stays open')
  t.notOk(proxy.logs.join('\n').includes(KEY_A), 'keys never logged')
})

t.test('keys from a file; short keys are a config error', async (t) => {
  const dir = t.testdir({ 'keys.txt': `# team a\n${KEY_A}\n\n${KEY_B}\n` })
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { PROXY_API_KEYS_FILE: join(dir, 'keys.txt') } })
  t.equal((await call(proxy.url, '/cmu/v2', { headers: { 'x-api-key': KEY_B } })).status, 200)
  t.equal((await call(proxy.url, '/cmu/v2', { headers: { 'x-api-key': '# team a' } })).status, 401, 'comments are not keys')
  t.throws(() => loadSettings({ env: { CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(), PROXY_API_KEYS: 'short' } }), /PROXY_API_KEYS must hold keys of at least 16 characters/)
})

t.test('plain http:// to a non-loopback Adobe host logs a warning at start: tokens would cross in clear', async (t) => {
  const cases: Array<[Record<string, string>, string[]]> = [
    [{ ADOBE_AUTH_URL: 'http://auth.example.com', ADOBE_CMU_URL: 'http://10.0.0.7:8080/cmu' }, ['ADOBE_AUTH_URL', 'ADOBE_CMU_URL']],
    [{ ADOBE_CMU_URL: 'http://cmu.example.com/cmu' }, ['ADOBE_CMU_URL']],
    [{ ADOBE_ESM_URL: 'http://esm.example.com/esm' }, ['ADOBE_ESM_URL']],
    [{ ADOBE_AUTH_URL: 'http://127.0.0.1:8081', ADOBE_CMU_URL: 'http://[::1]:8081/cmu' }, []],
    [{ ADOBE_AUTH_URL: 'http://localhost:8081' }, []],
    [{}, []]
  ]
  for (const [env, warned] of cases) {
    const { logger, lines } = capturedLogger()
    const settings = loadSettings({ env: { CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(), CREDENTIALS_FILE: join(t.testdir(), 'c.json'), ...env } })
    const app = await buildApp(settings, { logger })
    await app.close()
    const warnings = lines.map((l) => JSON.parse(l)).filter((l) => l.level === 40 && /in clear/.test(l.msg))
    t.same(warnings.map((w) => w.variable), warned, JSON.stringify(env))
  }
})

t.test('admin endpoints are 404 unless ADMIN_API_KEY is set', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  assertProblem(t, await call(proxy.url, '/admin/status'), 404, 'CMU_PROXY_NOT_FOUND')
  assertProblem(t, await call(proxy.url, '/admin/token/refresh', { method: 'POST' }), 404, 'CMU_PROXY_NOT_FOUND')
})

t.test('admin: status without secrets, refresh, re-register', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ADMIN_API_KEY: ADMIN, CACHE_ENABLED: 'true' } })
  assertProblem(t, await call(proxy.url, '/admin/status'), 401, 'CMU_PROXY_UNAUTHORIZED')
  assertProblem(t, await call(proxy.url, '/admin/status', { headers: { 'x-api-key': KEY_A } }), 401, 'CMU_PROXY_UNAUTHORIZED')
  await call(proxy.url, '/cmu/v2')
  const auth = { authorization: `Bearer ${ADMIN}` }
  const status = await call(proxy.url, '/admin/status', { headers: auth })
  t.equal(status.status, 200)
  t.equal(status.headers['cache-control'], 'no-store')
  const body = status.json()
  t.match(body, {
    version: String,
    ready: true,
    token: { obtainedAt: String, expiresAt: String, refreshAt: String },
    lastError: null,
    counts: { tokenRequests: 1, tokenFailures: 0, registrations: 1, registrationFailures: 0 },
    clientId: /^.{4}….{4}$/,
    softwareStatement: { fingerprint: /^[0-9a-f]{12}$/, iss: 'auth.adobe.com', sub: String },
    upstreams: { authUrl: sandbox.authUrl, cmuUrl: sandbox.cmuUrl, esmUrl: sandbox.esmUrl },
    cache: { entries: 1 }
  })
  const credentials = JSON.parse(await readFile(proxy.credentialsFile, 'utf8'))
  for (const secret of [...sandbox.dcr.issued.map((i) => i.token), credentials.client_secret, credentials.client_id, proxy.statement]) {
    t.notOk(status.text.includes(secret), 'no secret in the admin view')
  }

  const refreshed = await call(proxy.url, '/admin/token/refresh', { method: 'POST', headers: auth })
  t.equal(refreshed.status, 200)
  t.equal(sandbox.calls.token, 2)
  const reregistered = await call(proxy.url, '/admin/credentials/reregister', { method: 'POST', headers: { 'x-api-key': ADMIN } })
  t.equal(reregistered.status, 200)
  t.equal(sandbox.calls.register, 2)
  t.equal(sandbox.calls.token, 3)
  t.not(JSON.parse(await readFile(proxy.credentialsFile, 'utf8')).client_id, credentials.client_id, 'new credentials persisted')
  t.equal((await call(proxy.url, '/cmu/v2?x')).status, 400, 'still serving (sandbox answer)')

  sandbox.faults.failNext('token', 1, { status: 503 })
  assertProblem(t, await call(proxy.url, '/admin/token/refresh', { method: 'POST', headers: auth }), 503, 'CMU_PROXY_TOKEN_ENDPOINT_ERROR')
  t.match((await call(proxy.url, '/admin/status', { headers: auth })).json(), { ready: true, lastError: { code: 'CMU_PROXY_TOKEN_ENDPOINT_ERROR' } })
})

t.test('admin re-register: at most one a minute (each one creates a client at Adobe)', async (t) => {
  const sandbox = await startSandbox(t)
  let clock = Date.parse('2026-01-01T00:00:00Z')
  const proxy = await startProxy(t, sandbox, { env: { ADMIN_API_KEY: ADMIN }, now: () => clock })
  const reregister = async (): Promise<RawResponse> => await call(proxy.url, '/admin/credentials/reregister', { method: 'POST', headers: { 'x-api-key': ADMIN } })
  t.equal((await reregister()).status, 200)
  t.equal(sandbox.calls.register, 2, 'start-up, then the re-registration')

  clock += 20_000
  const tooSoon = await reregister()
  assertProblem(t, tooSoon, 429, 'CMU_PROXY_REREGISTER_TOO_SOON')
  t.equal(tooSoon.headers['retry-after'], '40', 'Retry-After: the seconds left in the minute')
  t.equal(tooSoon.headers['cache-control'], 'no-store')
  t.equal(sandbox.calls.register, 2, 'Adobe was not asked')

  clock += 40_000
  t.equal((await reregister()).status, 200, 'allowed again after a minute')
  t.equal(sandbox.calls.register, 3)
})

t.test('admin re-register without a statement is a 409', async (t) => {
  const sandbox = await startSandbox(t)
  const client = sandbox.dcr.register({ software_statement: makeSoftwareStatement() }).body
  const proxy = await startProxy(t, sandbox, { env: { ADMIN_API_KEY: ADMIN, ADOBE_SOFTWARE_STATEMENT: undefined, ADOBE_CLIENT_ID: String(client.client_id), ADOBE_CLIENT_SECRET: String(client.client_secret) } })
  assertProblem(t, await call(proxy.url, '/admin/credentials/reregister', { method: 'POST', headers: { 'x-api-key': ADMIN } }), 409, 'CMU_PROXY_NO_STATEMENT')
  t.match((await call(proxy.url, '/admin/status', { headers: { 'x-api-key': ADMIN } })).json(), { softwareStatement: null })
})

t.test('cmu-proxy check: one line per step, non-zero on failure', async (t) => {
  const sandbox = await startSandbox(t)
  const dir = t.testdir()
  const env = { CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(), ...sandbox.adobeUrls, CREDENTIALS_FILE: join(dir, 'credentials.json') }
  const run = async (overrides: Record<string, string | undefined>): Promise<{ code: number, lines: string[] }> => {
    const lines: string[] = []
    const code = await runCheck({ ...env, ...overrides }, (line) => { lines.push(line) })
    return { code, lines }
  }

  const first = await run({})
  t.equal(first.code, 0)
  t.match(first.lines, [/^PASS {2}config/, /^PASS {2}egress +direct$/, /^PASS {2}statement +fingerprint [0-9a-f]{12}, sub /, /^PASS {2}register +registered client .{4}….{4}, saved to /, /^PASS {2}token +access token obtained, expires in 21600 s/, /^PASS {2}cmu +GET .*\/cmu\/v2 answered 200/, /^PASS {2}esm +GET .*\/esm\/v3 answered 200/, 'All checks passed.'])
  const second = await run({})
  t.match(second.lines[3], /^PASS {2}credentials +client .{4}….{4} from /, 'reuses stored credentials')
  t.equal(sandbox.calls.register, 1)

  const badConfig = await run({ PORT: 'x', LOG_LEVEL: 'loud' })
  t.equal(badConfig.code, 78, 'a configuration error exits 78, as serve does')
  t.match(badConfig.lines, ['FAIL  config       PORT must be integer (got "x")', /^FAIL {2}config +LOG_LEVEL must be equal to one of the allowed values/])
  t.equal(badConfig.lines.length, 2, 'every bad variable, one line each')

  sandbox.dcr.rejectStatementsWith = 'invalid_software_statement'
  const rejected = await run({ CREDENTIALS_FILE: join(dir, 'other.json') })
  t.equal(rejected.code, 1)
  t.match(rejected.lines.at(-1), /^FAIL {2}register +register refused: invalid_software_statement/)

  sandbox.dcr.revokeClients()
  const revoked = await run({})
  t.match(revoked.lines.at(-1), /^FAIL {2}token +token refused: invalid_client \(credentials revoked/)

  sandbox.dcr.rejectStatementsWith = undefined
  const client = sandbox.dcr.register({ software_statement: makeSoftwareStatement() }).body
  const preProvisioned = { ADOBE_SOFTWARE_STATEMENT: undefined, ADOBE_CLIENT_ID: String(client.client_id), ADOBE_CLIENT_SECRET: String(client.client_secret) }
  sandbox.faults.failNext('cmu', 1, { status: 403 })
  const forbidden = await run(preProvisioned)
  t.match(forbidden.lines[2], /^PASS {2}credentials +pre-provisioned client/)
  t.match(forbidden.lines.at(-1), /^FAIL {2}cmu +GET .* answered HTTP 403/)
  const down = await run({ ...preProvisioned, ADOBE_CMU_URL: 'http://127.0.0.1:1/cmu' })
  t.match(down.lines.at(-1), /^FAIL {2}cmu +GET .* failed: Adobe could not be reached/)
  // A deployment without ESM access: CMU works, so a warning, not a failure.
  await fetch(`${sandbox.authUrl}/_sandbox/access`, { method: 'POST', body: JSON.stringify({ api: 'esm', allowed: false }) })
  const noEsm = await run(preProvisioned)
  t.equal(noEsm.code, 0, 'exit 0: CMU works')
  t.match(noEsm.lines.slice(-3), [/^PASS {2}cmu /, /^WARN {2}esm +GET .*\/esm\/v3 answered 403: this application has no ESM access \(CMU works\)/, 'All checks passed.'])
  await fetch(`${sandbox.authUrl}/_sandbox/access`, { method: 'DELETE' })
  sandbox.faults.failNext('esm', 1, { status: 500 })
  const esmFailing = await run(preProvisioned)
  t.equal(esmFailing.code, 1)
  t.match(esmFailing.lines.at(-1), /^FAIL {2}esm +GET .*\/esm\/v3 answered HTTP 500/)
  const esmDown = await run({ ...preProvisioned, ADOBE_ESM_URL: 'http://127.0.0.1:1/esm' })
  t.match(esmDown.lines.at(-1), /^FAIL {2}esm +GET .* failed: Adobe could not be reached/)
  for (const line of [...first.lines, ...rejected.lines, ...revoked.lines]) {
    t.notOk(line.includes(String(client.client_secret)) || line.includes(env.ADOBE_SOFTWARE_STATEMENT), 'no secret printed')
  }
})

t.test('a request logged whole (an error Fastify logs itself) shows its method and masked URL only', async (t) => {
  const { logger, lines } = capturedLogger()
  logger.error({ req: { method: 'GET', url: '/cmu/v2?access_token=caller-secret-token&x=1', headers: { authorization: 'Bearer key' } } }, 'boom')
  t.equal(lines.length, 1)
  t.match(JSON.parse(lines[0] ?? '{}'), { req: { method: 'GET', url: '/cmu/v2?access_token=[redacted]&x=1' } })
  t.notMatch(lines[0], /caller-secret-token|Bearer key/)
})
