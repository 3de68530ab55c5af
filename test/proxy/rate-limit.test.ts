// RATE_LIMIT: one runaway caller hits its own limit, not Adobe's throttle for everyone.
import { join } from 'node:path'
import t from 'tap'
import { loadSettings } from '../../src/config/load.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { assertProblem, call, startProxy, startSandbox } from '../helpers/app.js'

const KEY_A = 'key-a-0123456789abcdef'
const KEY_B = 'key-b-0123456789abcdef'

t.test('per key: the eleventh request of key A is refused with the headers, key B goes on, Adobe sees only what was allowed', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { PROXY_API_KEYS: `${KEY_A},${KEY_B}`, RATE_LIMIT: '10/minute' } })
  const asA = { 'x-api-key': KEY_A }
  for (let i = 1; i <= 10; i++) {
    const allowed = await call(proxy.url, '/cmu/v2', { headers: asA })
    t.equal(allowed.status, 200, `request ${i} of key A`)
    if (i === 10) {
      t.equal(allowed.headers['ratelimit-limit'], '10')
      t.equal(allowed.headers['ratelimit-remaining'], '0')
    }
  }
  const limited = await call(proxy.url, '/cmu/v2', { headers: asA })
  assertProblem(t, limited, 429, 'CMU_PROXY_RATE_LIMITED')
  t.match(limited.headers['retry-after'], /^\d+$/)
  t.ok(Number(limited.headers['retry-after']) > 0 && Number(limited.headers['retry-after']) <= 60, 'Retry-After within the window')
  t.equal(limited.headers['ratelimit-limit'], '10')
  t.equal(limited.headers['ratelimit-remaining'], '0')
  t.match(limited.headers['ratelimit-reset'], /^\d+$/)
  t.equal(sandbox.calls.cmu, 10, 'the refused request never reached Adobe')

  const asB = await call(proxy.url, '/cmu/v2', { headers: { authorization: `Bearer ${KEY_B}` } })
  t.equal(asB.status, 200, 'key B is unaffected')
  t.equal(asB.headers['ratelimit-remaining'], '9')
  t.equal(sandbox.calls.cmu, 11)

  const line = proxy.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'request' && l.statusCode === 429)
  t.match(line, { code: 'CMU_PROXY_RATE_LIMITED', url: '/cmu/v2' }, 'logged')
  t.match((await call(proxy.url, '/metrics')).text, /cmu_proxy_rate_limited_total 1\n/, 'counted')
  t.notOk(proxy.logs.join('\n').includes(KEY_A), 'the key is never logged')
  t.equal((await call(proxy.url, '/healthz')).status, 200, 'health checks are not limited')
})

t.test('cache hits count too, and without keys the limit is per client address', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true', RATE_LIMIT: '3/hour' } })
  const answers = []
  for (let i = 0; i < 4; i++) answers.push(await call(proxy.url, '/cmu/v2'))
  t.same(answers.map((a) => a.headers['x-cache'] ?? a.status), ['MISS', 'HIT', 'HIT', 429])
  t.equal(sandbox.calls.cmu, 1)
})

t.test('RATE_LIMIT_KEYS_FILE gives one key its own limit', async (t) => {
  const dir = t.testdir({ 'limits.txt': `# the nightly export\n${KEY_B} 2/second\n` })
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { PROXY_API_KEYS: `${KEY_A},${KEY_B}`, RATE_LIMIT: '1/minute', RATE_LIMIT_KEYS_FILE: join(dir, 'limits.txt') } })
  const statuses = async (key: string, n: number): Promise<number[]> => {
    const out: number[] = []
    for (let i = 0; i < n; i++) out.push((await call(proxy.url, '/cmu/v2', { headers: { 'x-api-key': key } })).status)
    return out
  }
  t.same(await statuses(KEY_A, 2), [200, 429], 'key A: the default, 1/minute')
  t.same(await statuses(KEY_B, 3), [200, 200, 429], 'key B: its override, 2/second')
})

t.test('a bad RATE_LIMIT or override file stops start-up with one line naming the variable', async (t) => {
  const base = { CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(), PROXY_API_KEYS: KEY_A }
  // 0/minute once refused every request in silence.
  for (const value of ['600', '600/day', 'ten/minute', '-1/second', '600/minute/2', '0/minute', '000/second']) {
    t.throws(() => loadSettings({ env: { ...base, RATE_LIMIT: value } }), /^RATE_LIMIT must be a whole number of requests \(1 or more\) per second, minute or hour, e\.g\. 600\/minute/, value)
  }
  t.same(loadSettings({ env: { ...base, RATE_LIMIT: ' 600 / minute ' } }).rateLimit, { rule: { max: 600, windowMs: 60_000 }, overrides: new Map() }, 'spaces around the parts are fine')
  const dir = t.testdir({ bad: `${KEY_A} lots\n`, zero: `${KEY_A} 0/second\n`, stranger: 'not-a-configured-key-123 5/second\n' })
  const bad = (): unknown => loadSettings({ env: { ...base, RATE_LIMIT: '5/second', RATE_LIMIT_KEYS_FILE: join(dir, 'bad') } })
  t.throws(bad, /^RATE_LIMIT_KEYS_FILE line 1 is not/)
  t.throws(() => loadSettings({ env: { ...base, RATE_LIMIT: '5/second', RATE_LIMIT_KEYS_FILE: join(dir, 'zero') } }), /^RATE_LIMIT_KEYS_FILE line 1 is not/, 'an override of 0 too')
  try { bad() } catch (err) { t.notMatch((err as Error).message, KEY_A, 'the key is not echoed') }
  t.throws(() => loadSettings({ env: { ...base, RATE_LIMIT: '5/second', RATE_LIMIT_KEYS_FILE: join(dir, 'stranger') } }), /^RATE_LIMIT_KEYS_FILE names a key that is not one of PROXY_API_KEYS/)
  t.throws(() => loadSettings({ env: { ...base, RATE_LIMIT_KEYS_FILE: join(dir, 'stranger') } }), /^RATE_LIMIT_KEYS_FILE needs RATE_LIMIT/)
})
