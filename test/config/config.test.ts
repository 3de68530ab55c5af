import { randomBytes } from 'node:crypto'
import { symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { loadSettings } from '../../src/config/load.js'
import { ConfigError } from '../../src/config/problems.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { runNode } from '../helpers/processes.js'

const NO_ENV_FILE = { CMU_PROXY_ENV_FILE: '/dev/null' }

t.test('defaults follow DESIGN.md', async (t) => {
  const statement = makeSoftwareStatement()
  const dir = t.testdir()
  const settings = loadSettings({ env: { ...NO_ENV_FILE, ADOBE_SOFTWARE_STATEMENT: statement }, cwd: dir })
  t.match(settings, {
    server: { host: '127.0.0.1', port: 8080, logLevel: 'info', shutdownGraceMs: 10_000 },
    adobe: { authUrl: 'https://api.auth.adobe.com', cmuUrl: 'https://mgmt.auth.adobe.com/cmu', credentialsFile: join(dir, 'data/credentials.json') },
    inbound: { pathPrefix: '/cmu' }
  })
  t.equal(settings.adobe.softwareStatement, statement)
})

t.test('the env file is read and the real environment wins', async (t) => {
  const dir = t.testdir({ config: { 'cmu-proxy.env': `PORT=9000\nLOG_LEVEL=debug\nADOBE_SOFTWARE_STATEMENT=${makeSoftwareStatement()}\n` } })
  const { server } = loadSettings({ env: { PORT: '9100' }, cwd: dir })
  t.equal(server.port, 9100, 'environment beats file')
  t.equal(server.logLevel, 'debug', 'file value used')
})

t.test('secret files: explicit, the default path, and conflicts', async (t) => {
  const statement = makeSoftwareStatement()
  const dir = t.testdir({ config: { 'software-statement.jwt': `${statement}\n` }, 'secret.txt': 'shh\n', 'empty.jwt': '' })
  t.equal(loadSettings({ env: NO_ENV_FILE, cwd: dir }).adobe.softwareStatement, statement, 'config/software-statement.jwt by default, trimmed')
  const withSecret = loadSettings({ env: { ...NO_ENV_FILE, ADOBE_CLIENT_ID: 'id', ADOBE_CLIENT_SECRET_FILE: join(dir, 'secret.txt') }, cwd: dir })
  t.same(withSecret.adobe.staticCredentials, { client_id: 'id', client_secret: 'shh' })
  t.match(catchConfigError(() => loadSettings({ env: { ...NO_ENV_FILE, ADOBE_SOFTWARE_STATEMENT: statement, ADOBE_SOFTWARE_STATEMENT_FILE: 'x' }, cwd: dir })), { variable: 'ADOBE_SOFTWARE_STATEMENT_FILE', message: /both set/ })
  t.match(catchConfigError(() => loadSettings({ env: { ...NO_ENV_FILE, ADOBE_SOFTWARE_STATEMENT_FILE: join(dir, 'missing.jwt') }, cwd: dir })), { variable: 'ADOBE_SOFTWARE_STATEMENT_FILE', message: /cannot be read \(ENOENT\)/ })
  t.match(catchConfigError(() => loadSettings({ env: { ...NO_ENV_FILE, ADOBE_SOFTWARE_STATEMENT_FILE: join(dir, 'empty.jwt') }, cwd: dir })), { variable: 'ADOBE_SOFTWARE_STATEMENT_FILE', message: /empty file/ })
  t.match(catchConfigError(() => loadSettings({ env: { CMU_PROXY_ENV_FILE: join(dir, 'nope.env') }, cwd: dir })), { variable: 'CMU_PROXY_ENV_FILE' })
})

t.test('each bad setting is one message naming the variable, never echoing a secret', async (t) => {
  const statement = makeSoftwareStatement()
  const base = { ...NO_ENV_FILE, ADOBE_SOFTWARE_STATEMENT: statement }
  const cases: Array<[Record<string, string>, string, RegExp]> = [
    [{ PORT: 'eighty' }, 'PORT', /^PORT must be integer \(got "eighty"\)$/],
    [{ PORT: '70000' }, 'PORT', /^PORT must be <= 65535/],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', /allowed values: fatal, error/],
    [{ ADOBE_AUTH_URL: 'ftp://x' }, 'ADOBE_AUTH_URL', /must match pattern/],
    [{ ADOBE_CMU_URL: 'https://host/cmu?x=1' }, 'ADOBE_CMU_URL', /plain base URL/],
    [{ ADOBE_CMU_URL: 'https://exa mple/' }, 'ADOBE_CMU_URL', /not a valid URL/],
    [{ ADOBE_ESM_URL: 'ftp://x/esm' }, 'ADOBE_ESM_URL', /must match pattern/],
    [{ ADOBE_ESM_URL: 'https://user:pw@host/esm' }, 'ADOBE_ESM_URL', /plain base URL/],
    [{ ADOBE_ESM_URL: 'https://exa mple/esm' }, 'ADOBE_ESM_URL', /not a valid URL/],
    [{ PROXY_PATH_PREFIX: '/esm' }, 'PROXY_PATH_PREFIX', /must not be \/esm or overlap it/],
    [{ PROXY_PATH_PREFIX: '/esm/cmu' }, 'PROXY_PATH_PREFIX', /must not be \/esm or overlap it/],
    [{ ADOBE_SOFTWARE_STATEMENT: 'not a jwt secret' }, 'ADOBE_SOFTWARE_STATEMENT', /^ADOBE_SOFTWARE_STATEMENT is not a JWT/],
    [{ ADOBE_SOFTWARE_STATEMENT: `${Buffer.from('{"alg":').toString('base64url')}.e30.c2ln` }, 'ADOBE_SOFTWARE_STATEMENT', /^ADOBE_SOFTWARE_STATEMENT is not a JWT: its header and payload must be base64url-encoded JSON objects/],
    [{ ADOBE_CLIENT_ID: 'abc' }, 'ADOBE_CLIENT_SECRET', /required when the other half/],
    [{ TOKEN_RETRY_BASE_MS: '5000', TOKEN_RETRY_MAX_MS: '1000' }, 'TOKEN_RETRY_MAX_MS', /smaller than TOKEN_RETRY_BASE_MS/],
    [{ UPSTREAM_HEADERS_TIMEOUT_MS: '0' }, 'UPSTREAM_HEADERS_TIMEOUT_MS', /must be >= 1/],
    // Timer values: past 2^31-1 ms setTimeout fires after 1 ms, so each has a sane ceiling.
    [{ UPSTREAM_HEADERS_TIMEOUT_MS: '4294967296' }, 'UPSTREAM_HEADERS_TIMEOUT_MS', /must be <= 3600000/],
    [{ TOKEN_RETRY_MAX_MS: '4294967296' }, 'TOKEN_RETRY_MAX_MS', /must be <= 3600000/],
    [{ SHUTDOWN_GRACE_SECONDS: '2147484' }, 'SHUTDOWN_GRACE_SECONDS', /must be <= 3600/],
    [{ PROXY_PATH_PREFIX: 'cmu' }, 'PROXY_PATH_PREFIX', /must match pattern/]
  ]
  for (const [env, variable, message] of cases) {
    const error = catchConfigError(() => loadSettings({ env: { ...base, ...env } }))
    t.equal(error?.variable, variable, `${JSON.stringify(env)} names ${variable}`)
    t.match(error?.message, message)
    t.notOk(error?.message.includes('secret'), 'value of a secret not echoed')
    t.notOk(error?.message.includes('\n'), 'one line')
  }
  const missing = catchConfigError(() => loadSettings({ env: NO_ENV_FILE, cwd: t.testdir() }))
  t.equal(missing?.variable, 'ADOBE_SOFTWARE_STATEMENT')
})

t.test('secure by default: no inbound keys beyond loopback unless PROXY_ALLOW_ANONYMOUS=true', async (t) => {
  const base = { ...NO_ENV_FILE, ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement() }
  for (const host of ['127.0.0.1', '127.8.9.10', '::1', 'localhost', 'LocalHost']) {
    t.equal(loadSettings({ env: { ...base, HOST: host } }).server.host, host, `HOST=${host} is loopback: keys optional`)
  }
  for (const host of ['0.0.0.0', '::', '10.1.2.3', '128.0.0.1', '::ffff:10.0.0.1', 'cmu-proxy.internal']) {
    const error = catchConfigError(() => loadSettings({ env: { ...base, HOST: host } }))
    t.equal(error?.variable, 'PROXY_API_KEYS', `HOST=${host} without keys is refused`)
    t.match(error?.message, /^PROXY_API_KEYS is required when HOST \(.+\) is not a loopback address[^\n]*PROXY_ALLOW_ANONYMOUS=true/)
  }
  t.equal(catchConfigError(() => loadSettings({ env: { ...base, HOST: '0.0.0.0', PROXY_API_KEYS: '# no key yet' } }))?.variable, 'PROXY_API_KEYS', 'a list without keys is no keys')
  t.same(loadSettings({ env: { ...base, HOST: '0.0.0.0', PROXY_API_KEYS: 'key-a-0123456789abcdef' } }).inbound.apiKeys, ['key-a-0123456789abcdef'], 'keys set')
  const anonymous = loadSettings({ env: { ...base, HOST: '0.0.0.0', PROXY_ALLOW_ANONYMOUS: 'true' } })
  t.match(anonymous.inbound, { allowAnonymous: true, apiKeys: [] }, 'explicit opt-out')
  t.equal(loadSettings({ env: base }).inbound.allowAnonymous, false, 'off by default')
})

t.test('every bad setting is reported at once, one line each, cross-field rules included', async (t) => {
  const base = { ...NO_ENV_FILE, ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement() }
  const error = catchConfigError(() => loadSettings({
    env: { ...base, PORT: 'x', LOG_LEVEL: 'loud', ADOBE_AUTH_URL: 'ftp://x', ADOBE_CMU_URL: 'https://h/cmu?x=1', ADOBE_CLIENT_ID: 'abc', TOKEN_RETRY_BASE_MS: '5000', TOKEN_RETRY_MAX_MS: '1000' }
  }))
  t.same(error?.problems.map((p) => p.variable), ['PORT', 'LOG_LEVEL', 'ADOBE_AUTH_URL', 'ADOBE_CMU_URL', 'ADOBE_CLIENT_SECRET', 'TOKEN_RETRY_MAX_MS'])
  const lines = error?.message.split('\n') ?? []
  t.equal(lines.length, 6, 'one line per variable')
  t.match(lines, [/^PORT must be integer/, /^LOG_LEVEL must be equal to one of the allowed values/, /^ADOBE_AUTH_URL must match pattern/, /^ADOBE_CMU_URL must be a plain base URL/, /^ADOBE_CLIENT_SECRET is required/, /^TOKEN_RETRY_MAX_MS must not be smaller/])

  const dependent = catchConfigError(() => loadSettings({ env: { ...base, TOKEN_RETRY_BASE_MS: 'soon', TOKEN_RETRY_MAX_MS: '10' } }))
  t.same(dependent?.problems.map((p) => p.variable), ['TOKEN_RETRY_BASE_MS'], 'a rule over a bad value is not checked on top')

  const dir = t.testdir()
  const unreadable = catchConfigError(() => loadSettings({ env: { ...NO_ENV_FILE, ADOBE_SOFTWARE_STATEMENT_FILE: join(dir, 'absent.jwt'), PORT: 'x' }, cwd: dir }))
  t.same(unreadable?.problems.map((p) => p.variable), ['ADOBE_SOFTWARE_STATEMENT_FILE', 'PORT'], 'no follow-on "statement is required"')

  const secrets = catchConfigError(() => loadSettings({ env: { ...base, ADOBE_SOFTWARE_STATEMENT: 'not a jwt secret', ADMIN_API_KEY: 'short secret', PORT: 'x' } }))
  t.equal(secrets?.problems.length, 3)
  t.notMatch(secrets?.message, /secret/, 'no secret value echoed')
})

t.test('fleet mode: REDIS_URL needs a well-formed STATE_ENCRYPTION_KEY; one line each, nothing echoed', async (t) => {
  const base = { ...NO_ENV_FILE, ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement() }
  const key = randomBytes(32).toString('base64')
  const dir = t.testdir({ 'state.key': `${key}\n`, 'redis-password': 'pw-from-file\n', 'short.key': randomBytes(16).toString('hex') })
  const { fleet } = loadSettings({ env: { ...base, REDIS_URL: 'rediss://user:pw@redis.internal:6380/0', STATE_ENCRYPTION_KEY_FILE: join(dir, 'state.key'), REDIS_PASSWORD_FILE: join(dir, 'redis-password') }, cwd: dir })
  t.match(fleet, { redis: { target: 'rediss://redis.internal:6380', username: 'user', password: 'pw-from-file' }, keyPrefix: 'cmu-proxy:', commandTimeoutMs: 250, lockTtlMs: 5000 })
  t.same(fleet?.stateKeys.map((k) => k.export().toString('base64')), [key], 'the key, decoded')
  t.equal(loadSettings({ env: base, cwd: dir }).fleet, undefined, 'no Redis by default: one process, file and memory')

  const cases: Array<[Record<string, string>, string, RegExp]> = [
    [{ REDIS_URL: 'redis://127.0.0.1:6379' }, 'STATE_ENCRYPTION_KEY', /^STATE_ENCRYPTION_KEY is required with REDIS_URL .*openssl rand -base64 32$/],
    [{ REDIS_URL: 'redis://127.0.0.1', STATE_ENCRYPTION_KEY: 'not a key: secret-phrase' }, 'STATE_ENCRYPTION_KEY', /^STATE_ENCRYPTION_KEY must hold 32-byte keys in base64 or hex \(the key is neither base64 nor hex\)/],
    [{ REDIS_URL: 'redis://127.0.0.1', STATE_ENCRYPTION_KEY_FILE: join(dir, 'short.key') }, 'STATE_ENCRYPTION_KEY_FILE', /^STATE_ENCRYPTION_KEY_FILE must hold 32-byte keys .*32 hex digits, expected 64/],
    [{ REDIS_URL: 'http://:secret-pw@127.0.0.1', STATE_ENCRYPTION_KEY: key }, 'REDIS_URL', /^REDIS_URL must match pattern "\^rediss\?:\/\/"$/],
    [{ REDIS_URL: 'redis://:secret-pw@exa mple', STATE_ENCRYPTION_KEY: key }, 'REDIS_URL', /^REDIS_URL is not a valid URL$/],
    [{ REDIS_KEY_PREFIX: 'has space' }, 'REDIS_KEY_PREFIX', /^REDIS_KEY_PREFIX must match pattern/],
    [{ REDIS_LOCK_TTL_MS: '10' }, 'REDIS_LOCK_TTL_MS', /must be >= 100/],
    [{ REDIS_URL: 'redis://127.0.0.1', STATE_ENCRYPTION_KEY: key, REDIS_LOCK_TTL_MS: '500', REDIS_COMMAND_TIMEOUT_MS: '200' }, 'REDIS_LOCK_TTL_MS', /^REDIS_LOCK_TTL_MS must be at least 3 × REDIS_COMMAND_TIMEOUT_MS \(600 ms\)$/]
  ]
  for (const [env, variable, message] of cases) {
    const error = catchConfigError(() => loadSettings({ env: { ...base, ...env }, cwd: dir }))
    t.equal(error?.lines.length, 1, `one line for ${JSON.stringify(env)}`)
    t.match(error, { variable, message })
    t.notMatch(error?.message, /secret-pw|secret-phrase/, 'never echoes a password or a key')
  }
  const both = catchConfigError(() => loadSettings({ env: { ...base, REDIS_URL: 'redis://127.0.0.1', PORT: 'x' }, cwd: dir }))
  t.same(both?.problems.map((p) => p.variable), ['PORT', 'STATE_ENCRYPTION_KEY'], 'reported with every other problem at once')
})

t.test('the real entry point exits 78 with one line on a bad setting', async (t) => {
  const dir = t.testdir()
  writeFileSync(join(dir, 'statement.jwt'), makeSoftwareStatement())
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ ADOBE_SOFTWARE_STATEMENT_FILE: join(dir, 'statement.jwt'), PORT: 'x' }, /^cmu-proxy: configuration error: PORT must be integer \(got "x"\)\n$/],
    [{ ADOBE_SOFTWARE_STATEMENT_FILE: join(dir, 'absent.jwt') }, /^cmu-proxy: configuration error: ADOBE_SOFTWARE_STATEMENT_FILE cannot be read/],
    [{ ADOBE_SOFTWARE_STATEMENT_FILE: join(dir, 'statement.jwt'), ADOBE_AUTH_URL: 'nope' }, /^cmu-proxy: configuration error: ADOBE_AUTH_URL must match pattern/],
    [{ ADOBE_SOFTWARE_STATEMENT_FILE: join(dir, 'statement.jwt'), HOST: '0.0.0.0' }, /^cmu-proxy: configuration error: PROXY_API_KEYS is required when HOST \(0\.0\.0\.0\) is not a loopback address[^\n]*PROXY_ALLOW_ANONYMOUS=true[^\n]*\n$/],
    [{ ADOBE_SOFTWARE_STATEMENT_FILE: join(dir, 'statement.jwt'), PORT: 'x', LOG_LEVEL: 'loud' }, /^cmu-proxy: configuration error: PORT must be integer \(got "x"\)\ncmu-proxy: configuration error: LOG_LEVEL must be equal to one of the allowed values: [^\n]+\n$/]
  ]
  for (const [env, stderr] of cases) {
    const result = await runNode('main', [], { cwd: dir, env: { PATH: process.env.PATH, CMU_PROXY_ENV_FILE: '/dev/null', ...env } })
    t.equal(result.code, 78, `exit 78 for ${Object.keys(env).join(', ')}`)
    t.match(result.stderr, stderr)
    t.equal(result.stdout, '')
  }
})

t.test('a secret file must be a regular file of at most 1 MiB: the entry point exits 78 with one line naming the variable', async (t) => {
  const dir = t.testdir()
  writeFileSync(join(dir, 'statement.jwt'), makeSoftwareStatement())
  // What a path swapped under the proxy could point at: an endless device, a huge file.
  symlinkSync('/dev/zero', join(dir, 'zero-keys'))
  writeFileSync(join(dir, 'huge-keys'), Buffer.alloc(2 * 1024 * 1024, 'k'))
  // A symlink to a regular file (a Kubernetes Secret volume) is fine.
  writeFileSync(join(dir, 'keys'), 'admin-key-0123456789abcdef\n')
  symlinkSync(join(dir, 'keys'), join(dir, 'linked-keys'))
  t.equal(loadSettings({ env: { ...NO_ENV_FILE, ADOBE_SOFTWARE_STATEMENT_FILE: join(dir, 'statement.jwt'), ADMIN_API_KEY_FILE: join(dir, 'linked-keys') }, cwd: dir }).inbound.adminKey, 'admin-key-0123456789abcdef')
  const cases: Array<[string, RegExp]> = [
    ['zero-keys', /^cmu-proxy: configuration error: ADMIN_API_KEY_FILE is not a regular file: [^\n]*zero-keys\n$/],
    ['huge-keys', /^cmu-proxy: configuration error: ADMIN_API_KEY_FILE is larger than 1 MiB: [^\n]*huge-keys\n$/]
  ]
  for (const [file, stderr] of cases) {
    const result = await runNode('main', [], { cwd: dir, env: { PATH: process.env.PATH, CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT_FILE: join(dir, 'statement.jwt'), ADMIN_API_KEY_FILE: join(dir, file) } })
    t.equal(result.code, 78, `exit 78 for ${file}`)
    t.match(result.stderr, stderr)
  }
})

function catchConfigError (fn: () => unknown): ConfigError | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
  return undefined
}

t.test('a malformed OTel key=value list is a configuration error that never echoes it', async (t) => {
  for (const name of ['OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_RESOURCE_ATTRIBUTES']) {
    const attempt = (): unknown => loadSettings({ env: { ...NO_ENV_FILE, ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(), [name]: 'authorization=Bearer%zzsecret' } })
    t.throws(attempt, new RegExp(`^${name} must be key=value pairs`))
    try { attempt() } catch (err) { t.notMatch((err as Error).message, /secret/) }
  }
})
