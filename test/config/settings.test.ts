// The typed sections every module gets (config/settings.ts): each value that
// needs parsing arrives parsed, and a value that cannot be parsed stops
// start-up with one line naming the variable instead of becoming a default.
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { loadSettings } from '../../src/config/load.js'
import { ConfigError } from '../../src/config/problems.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { stateKey } from '../../src/store/encryption-keys.js'

const KEY_A = 'key-a-0123456789abcdef'
const KEY_B = 'key-b-0123456789abcdef'
const base = { CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement() }

function configError (env: Record<string, string>): ConfigError | undefined {
  try {
    loadSettings({ env: { ...base, ...env } })
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
  return undefined
}

t.test('sections with their defaults: no limit, no fleet, no tracing', async (t) => {
  const settings = loadSettings({ env: base })
  t.same(settings.token, { refreshMarginMs: 60_000, retryBaseMs: 1_000, retryMaxMs: 60_000 })
  t.same(settings.upstream, { connections: 64, connectTimeoutMs: 5_000, headersTimeoutMs: 60_000, bodyTimeoutMs: 60_000, maxPending: 1000, egress: { auth: undefined, cmu: undefined, esm: undefined } })
  t.same(settings.cache, { enabled: true, maxBytes: 64 * 1024 * 1024, maxEntryBytes: 4 * 1024 * 1024, maxInflightBytes: 32 * 1024 * 1024, ttlMaxSeconds: 2 * 24 * 3600, staleIfErrorSeconds: 24 * 3600, staleWhileRevalidateSeconds: undefined, ignoreOriginFreshness: false })
  t.same(settings.inbound, { pathPrefix: '/cmu', esmPathPrefix: '/esm', apiKeys: [], allowAnonymous: false, adminKey: undefined })
  t.match(settings.adobe, { staticCredentials: undefined, authTimeoutMs: 10_000, cleartextUrls: [] })
  t.equal(settings.rateLimit, undefined)
  t.equal(settings.fleet, undefined)
  t.equal(settings.tracing, undefined)
})

t.test('inbound keys: a comma list or one per line, comments and blanks dropped', async (t) => {
  t.same(loadSettings({ env: { ...base, PROXY_API_KEYS: ` ${KEY_A},${KEY_B} ` } }).inbound.apiKeys, [KEY_A, KEY_B])
  const dir = t.testdir({ keys: `# team a\n${KEY_A}\n\n${KEY_B}\n` })
  t.same(loadSettings({ env: { ...base, PROXY_API_KEYS_FILE: join(dir, 'keys') } }).inbound.apiKeys, [KEY_A, KEY_B])
})

t.test('PROXY_API_KEYS set but holding no key is a problem, not an open /cmu (on loopback too)', async (t) => {
  const empty = t.testdir({ comments: '# team a\n# team b\n' })
  const cases: Array<[Record<string, string>, string]> = [
    [{ PROXY_API_KEYS: '' }, 'PROXY_API_KEYS'],
    [{ PROXY_API_KEYS: ' , ,' }, 'PROXY_API_KEYS'],
    [{ PROXY_API_KEYS: '# none yet' }, 'PROXY_API_KEYS'],
    [{ PROXY_API_KEYS_FILE: join(empty, 'comments') }, 'PROXY_API_KEYS_FILE'],
    [{ PROXY_API_KEYS: '', HOST: '0.0.0.0' }, 'PROXY_API_KEYS']
  ]
  for (const [env, variable] of cases) {
    const error = configError(env)
    t.same(error?.lines, [`${variable} holds no key: list keys separated by commas (one per line in a file), or unset it`], JSON.stringify(env))
  }
})

t.test('OTel key=value lists: an entry without = is a problem, never dropped in silence, never echoed', async (t) => {
  for (const value of ['authorization', 'x-tenant=a,Bearer-secret', '=secret-value']) {
    const error = configError({ OTEL_EXPORTER_OTLP_HEADERS: value })
    t.same(error?.lines, ['OTEL_EXPORTER_OTLP_HEADERS must be key=value pairs separated by commas, with percent-encoded values'], value)
  }
  t.same(loadSettings({ env: { ...base, OTEL_TRACES_EXPORTER: 'otlp', OTEL_RESOURCE_ATTRIBUTES: 'team=ads,' } }).tracing?.resourceAttributes, { team: 'ads' }, 'a trailing comma is no entry')
})

t.test('integer settings in decimal digits only: Number() would take 0x10, 1e3, 10.0', async (t) => {
  for (const value of ['0x10', '1e3', '10.0', '+10', ' 10', '0b11']) {
    const error = configError({ UPSTREAM_CONNECTIONS: value })
    t.same(error?.lines, [`UPSTREAM_CONNECTIONS must be a whole number written in decimal digits (got ${JSON.stringify(value)})`], value)
  }
  t.equal(loadSettings({ env: { ...base, UPSTREAM_CONNECTIONS: '010' } }).upstream.connections, 10, 'leading zeros are still decimal')
  t.same(configError({ PORT: '0x1F90', TOKEN_RETRY_BASE_MS: '1e9', TOKEN_RETRY_MAX_MS: '10' })?.problems.map((p) => p.variable), ['PORT', 'TOKEN_RETRY_BASE_MS'], 'each named once; rules over a refused value are skipped')
})

t.test('cache durations: at most a year (CACHE_TTL_MAX_SECONDS, stale-if-error, stale-while-revalidate)', async (t) => {
  for (const name of ['CACHE_TTL_MAX_SECONDS', 'CACHE_STALE_IF_ERROR_SECONDS', 'CACHE_STALE_WHILE_REVALIDATE_SECONDS']) {
    t.match(configError({ [name]: '31536001' })?.lines, [new RegExp(`^${name} must be <= 31536000`)], name)
    t.notOk(configError({ [name]: '31536000' }), `${name}: a year is fine`)
  }
})

t.test('rate limits arrive as numbers, overrides by key', async (t) => {
  const dir = t.testdir({ overrides: `# per team\n${KEY_B} 2/second\n\n` })
  const { rateLimit } = loadSettings({ env: { ...base, PROXY_API_KEYS: `${KEY_A},${KEY_B}`, RATE_LIMIT: '100/hour', RATE_LIMIT_KEYS_FILE: join(dir, 'overrides') } })
  t.same(rateLimit, { rule: { max: 100, windowMs: 3_600_000 }, overrides: new Map([[KEY_B, { max: 2, windowMs: 1_000 }]]) })
  // A bad override line was once dropped in silence (every key then got the default limit).
  const bad = t.testdir({ overrides: `${KEY_B} 2/second\n${KEY_A} often\n` })
  const error = configError({ PROXY_API_KEYS: `${KEY_A},${KEY_B}`, RATE_LIMIT: '100/hour', RATE_LIMIT_KEYS_FILE: join(bad, 'overrides') })
  t.match(error, { variable: 'RATE_LIMIT_KEYS_FILE', message: /^RATE_LIMIT_KEYS_FILE line 2 is not/ })
  t.notMatch(error?.message, KEY_A, 'the line is not echoed: it holds a key')
  const both = configError({ PROXY_API_KEYS: KEY_A, RATE_LIMIT: 'often', RATE_LIMIT_KEYS: `${KEY_A} 1/second` })
  t.same(both?.lines, ['RATE_LIMIT must be a whole number of requests (1 or more) per second, minute or hour, e.g. 600/minute (got "often")'], 'a bad rule, and nothing on top about the overrides that need it')
})

t.test('egress: the proxy decided once per Adobe origin, NO_PROXY applied', async (t) => {
  const proxy = 'http://user:pw@proxy.internal:3128'
  t.same(loadSettings({ env: { ...base, HTTPS_PROXY: proxy } }).upstream.egress, { auth: proxy, cmu: proxy, esm: proxy })
  t.same(loadSettings({ env: { ...base, https_proxy: proxy, NO_PROXY: 'api.auth.adobe.com' } }).upstream.egress, { auth: undefined, cmu: proxy, esm: proxy })
  t.same(loadSettings({ env: { ...base, HTTPS_PROXY: proxy, ADOBE_CMU_URL: 'http://cmu.example/cmu' } }).upstream.egress, { auth: proxy, cmu: undefined, esm: proxy }, 'HTTPS_PROXY is for https:// only')
  t.same(loadSettings({ env: { ...base, HTTPS_PROXY: proxy, ADOBE_ESM_URL: 'https://esm.example/esm', NO_PROXY: 'esm.example' } }).upstream.egress, { auth: proxy, cmu: proxy, esm: undefined }, 'ESM\'s origin decided on its own')
})

t.test('the Adobe URLs that would carry the token in clear', async (t) => {
  const { adobe } = loadSettings({ env: { ...base, ADOBE_AUTH_URL: 'http://127.0.0.1:9', ADOBE_CMU_URL: 'http://cmu.example/cmu' } })
  t.same(adobe.cleartextUrls, [{ variable: 'ADOBE_CMU_URL', url: 'http://cmu.example/cmu' }])
  t.same(loadSettings({ env: { ...base, ADOBE_ESM_URL: 'http://esm.example/esm' } }).adobe.cleartextUrls, [{ variable: 'ADOBE_ESM_URL', url: 'http://esm.example/esm' }])
  const defaults = loadSettings({ env: base })
  t.same([defaults.adobe.esmUrl, defaults.inbound.esmPathPrefix], ['https://mgmt.auth.adobe.com/esm', '/esm'])
})

t.test('STATE_ENCRYPTION_KEY: base64 (padded, unpadded, url-safe) and hex name the same key', async (t) => {
  const bytes = randomBytes(32)
  const spellings = [
    bytes.toString('base64'),
    bytes.toString('base64').replace(/=+$/, ''),
    bytes.toString('base64url'),
    bytes.toString('hex'),
    bytes.toString('hex').toUpperCase(),
    `  ${bytes.toString('base64')}\n`
  ]
  for (const spelling of spellings) {
    const keys = loadSettings({ env: { ...base, REDIS_URL: 'redis://127.0.0.1', STATE_ENCRYPTION_KEY: spelling } }).fleet?.stateKeys ?? []
    t.equal(keys.length, 1, `${spelling.length} characters`)
    t.same(keys.map((key) => stateKey(key).id), [stateKey(bytes).id])
    t.notOk(JSON.stringify(keys).includes(bytes.toString('hex')), 'a decoded key does not serialise its material')
  }
})

t.test('STATE_ENCRYPTION_KEY: a comma list keeps its order (the first seals)', async (t) => {
  const a = randomBytes(32)
  const b = randomBytes(32)
  const keys = loadSettings({ env: { ...base, REDIS_URL: 'redis://127.0.0.1', STATE_ENCRYPTION_KEY: `${a.toString('base64')}, ${b.toString('hex')}` } }).fleet?.stateKeys ?? []
  t.same(keys.map((key) => stateKey(key).id), [stateKey(a).id, stateKey(b).id])
})

t.test('STATE_ENCRYPTION_KEY: malformed values name the variable and never echo the key, with or without REDIS_URL', async (t) => {
  const good = randomBytes(32).toString('base64')
  const short = randomBytes(31).toString('base64')
  const long = randomBytes(33).toString('hex')
  const cases: Array<[string, RegExp]> = [
    ['', /^STATE_ENCRYPTION_KEY is empty/],
    ['   ', /^STATE_ENCRYPTION_KEY is empty/],
    [short, /^STATE_ENCRYPTION_KEY must hold 32-byte keys in base64 or hex \(the key is base64 of 31 bytes, expected 32\)/],
    [long, /\(the key is 66 hex digits, expected 64\)/],
    ['correct horse battery staple, not a key at all', /\(key 1 of 2 is neither base64 nor hex\)/],
    [`${good},`, /has an empty entry \(key 2 of 2\)/],
    [`${good},${good}`, /lists the same key twice \(key 2 of 2\)/],
    [`${good},${short}`, /\(key 2 of 2 is base64 of 31 bytes, expected 32\)/]
  ]
  for (const [value, message] of cases) {
    for (const redis of [{ REDIS_URL: 'redis://127.0.0.1' }, {}] as Array<Record<string, string>>) {
      const error = configError({ ...redis, STATE_ENCRYPTION_KEY: value })
      t.match(error, { variable: 'STATE_ENCRYPTION_KEY', message })
      t.equal(error?.lines.length, 1)
      for (const part of value.split(',').filter((p) => p.trim().length > 8)) {
        t.notOk(error?.message.includes(part.trim()), 'no key material in the message')
      }
    }
  }
})

t.test('tracing: off unless an endpoint or OTEL_TRACES_EXPORTER=otlp says so; the standard variables decoded', async (t) => {
  t.equal(loadSettings({ env: { ...base, OTEL_SERVICE_NAME: 'x' } }).tracing, undefined, 'off by default')
  t.equal(loadSettings({ env: { ...base, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_SDK_DISABLED: 'true' } }).tracing, undefined, 'OTEL_SDK_DISABLED')
  t.equal(loadSettings({ env: { ...base, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_TRACES_EXPORTER: 'none' } }).tracing, undefined, 'exporter none')
  t.same(loadSettings({ env: { ...base, OTEL_TRACES_EXPORTER: 'otlp' } }).tracing, {
    serviceName: 'cmu-proxy',
    resourceAttributes: {},
    tracesUrl: 'http://localhost:4318/v1/traces',
    headers: {},
    sampler: { name: 'parentbased_always_on', ratio: 1 },
    propagateToAdobe: false,
    protocol: 'http/protobuf',
    maxQueueSize: 2048
  }, 'the SDK defaults')
  t.same(loadSettings({
    env: {
      ...base,
      OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector.example/otlp/',
      OTEL_EXPORTER_OTLP_HEADERS: 'x-general=1',
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'authorization=Bearer%20abc, x-tenant = a%2Cb',
      OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=prod,team=ads',
      OTEL_SERVICE_NAME: 'cmu-proxy-eu',
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.25',
      TRACE_PROPAGATE_TO_ADOBE: 'true',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
      OTEL_BSP_MAX_QUEUE_SIZE: '10000'
    }
  }).tracing, {
    serviceName: 'cmu-proxy-eu',
    resourceAttributes: { 'deployment.environment': 'prod', team: 'ads' },
    tracesUrl: 'https://collector.example/otlp/v1/traces',
    headers: { authorization: 'Bearer abc', 'x-tenant': 'a,b' },
    sampler: { name: 'parentbased_traceidratio', ratio: 0.25 },
    propagateToAdobe: true,
    protocol: 'http/json',
    maxQueueSize: 10000
  }, 'the traces headers (and protocol) win over the general ones; values percent-decoded')
  t.equal(loadSettings({ env: { ...base, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://b:4318/traces' } }).tracing?.tracesUrl, 'http://b:4318/traces', 'the traces endpoint as given')
})
