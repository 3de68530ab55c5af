// Fleet mode's Redis settings: one node (REDIS_URL), a Cluster (REDIS_CLUSTER),
// Sentinel (REDIS_SENTINELS, REDIS_SENTINEL_NAME), credentials and TLS files.
// A bad value is one line naming its variable, never echoing a secret.
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { loadSettings } from '../../src/config/load.js'
import { ConfigError } from '../../src/config/problems.js'
import { parseNodeList } from '../../src/config/redis-settings.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { makeTlsFiles } from '../helpers/redis-topologies.js'

const KEY = randomBytes(32).toString('base64')
const BASE = { CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(), STATE_ENCRYPTION_KEY: KEY }

function problems (env: Record<string, string>, cwd?: string): string[] {
  try {
    loadSettings({ env: { ...BASE, ...env }, ...(cwd === undefined ? {} : { cwd }) })
  } catch (err) {
    if (err instanceof ConfigError) return err.lines
    throw err
  }
  return []
}

t.test('REDIS_URL: one node; the password and user of REDIS_PASSWORD and REDIS_USERNAME win over the URL\'s; never shown in the target', async (t) => {
  const config = loadSettings({ env: { ...BASE, REDIS_URL: 'rediss://url-user:url%40pw@redis.internal:6380/2' } })
  t.same(config.fleet?.redis, {
    commandTimeoutMs: 250,
    topology: { kind: 'standalone', node: { host: 'redis.internal', port: 6380 }, database: 2 },
    username: 'url-user',
    password: 'url@pw',
    tls: { ca: undefined, cert: undefined, key: undefined },
    target: 'rediss://redis.internal:6380',
    variable: 'REDIS_URL'
  })
  t.match(loadSettings({ env: { ...BASE, REDIS_URL: 'redis://url-user:url-pw@[::1]', REDIS_USERNAME: 'acl-user', REDIS_PASSWORD: 'file-pw' } }).fleet?.redis, {
    topology: { node: { host: '::1', port: 6379 }, database: 0 }, username: 'acl-user', password: 'file-pw', tls: undefined, target: 'redis://[::1]'
  })
  t.match(loadSettings({ env: { ...BASE, REDIS_URL: 'redis://node-1:7000', REDIS_CLUSTER: 'true' } }).fleet?.redis, { topology: { kind: 'cluster', seeds: [{ host: 'node-1', port: 7000 }] }, target: 'cluster via redis://node-1:7000' })
  t.equal(loadSettings({ env: { CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement() } }).fleet?.redis, undefined, 'no Redis: no fleet')
})

t.test('REDIS_SENTINELS and REDIS_SENTINEL_NAME: Redis behind Sentinel', async (t) => {
  const config = loadSettings({ env: { ...BASE, REDIS_SENTINELS: 'sentinel-1:26379, sentinel-2 ,[fd00::5]:26380', REDIS_SENTINEL_NAME: 'mymaster', REDIS_USERNAME: 'proxy', REDIS_PASSWORD: 'pw' } })
  t.ok(config.fleet !== undefined, 'fleet mode without REDIS_URL')
  t.match(config.fleet?.redis, {
    topology: { kind: 'sentinel', masterName: 'mymaster', sentinels: [{ host: 'sentinel-1', port: 26379 }, { host: 'sentinel-2', port: 26379 }, { host: 'fd00::5', port: 26380 }] },
    username: 'proxy',
    password: 'pw',
    tls: undefined,
    target: 'sentinel master mymaster via sentinel-1:26379,sentinel-2:26379,[fd00::5]:26380',
    variable: 'REDIS_SENTINELS'
  })
  t.same(parseNodeList('a:1,b:99999', 1), undefined, 'a port out of range')
  t.same(parseNodeList('a:b', 1), undefined)
})

t.test('bad Redis settings: one line each, naming the variable', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ REDIS_SENTINELS: 's1:26379' }, /^REDIS_SENTINEL_NAME is required with REDIS_SENTINELS/],
    [{ REDIS_SENTINELS: 's1:26379;s2', REDIS_SENTINEL_NAME: 'm' }, /^REDIS_SENTINELS must be host:port pairs separated by commas/],
    [{ REDIS_SENTINELS: 's1', REDIS_SENTINEL_NAME: 'm', REDIS_URL: 'redis://r' }, /^REDIS_SENTINELS and REDIS_URL are both set/],
    [{ REDIS_SENTINEL_NAME: 'm', REDIS_URL: 'redis://r' }, /^REDIS_SENTINEL_NAME is set but REDIS_SENTINELS is not/],
    [{ REDIS_CLUSTER: 'true' }, /^REDIS_CLUSTER needs REDIS_URL/],
    [{ REDIS_CLUSTER: 'true', REDIS_SENTINELS: 's1', REDIS_SENTINEL_NAME: 'm' }, /^REDIS_CLUSTER cannot be combined with REDIS_SENTINELS/],
    [{ REDIS_CLUSTER: 'true', REDIS_URL: 'redis://r/1' }, /^REDIS_URL names a database, which a Redis Cluster does not have/],
    [{ REDIS_URL: 'redis://r/db' }, /^REDIS_URL must end with the host and port, or with \/<database number>/],
    [{ REDIS_SENTINELS: 's1', REDIS_SENTINEL_NAME: 'm', STATE_ENCRYPTION_KEY: '' }, /^STATE_ENCRYPTION_KEY (is required with REDIS_SENTINELS|is empty)/]
  ]
  for (const [env, line] of cases) {
    const found = problems(env)
    t.equal(found.length, 1, `one line for ${JSON.stringify(env)}: ${found.join(' | ')}`)
    t.match(found[0], line)
  }
  // decodeURIComponent threw a URIError here once: a stack trace and exit 1 instead of a line and exit 78.
  for (const url of ['redis://user:pa%zzword-secret@r:6379', 'redis://us%E0%A4er:password-secret@r', 'redis://:100%-secret@r']) {
    const found = problems({ REDIS_URL: url })
    t.same(found, ['REDIS_URL has a user or password that is not valid percent-encoding (write a % in it as %25)'], url)
    t.notMatch(found.join('\n'), /secret/, 'never the password')
  }
  t.equal(loadSettings({ env: { ...BASE, REDIS_URL: 'redis://:100%25-sure@r' } }).fleet?.redis.password, '100%-sure', '%25 is a %')
  const { STATE_ENCRYPTION_KEY: _key, ...withoutKey } = BASE
  t.match(catchLines(() => loadSettings({ env: { ...withoutKey, REDIS_SENTINELS: 's1', REDIS_SENTINEL_NAME: 'm' } })), [/^STATE_ENCRYPTION_KEY is required with REDIS_SENTINELS/])
})

t.test('TLS files: read at start, checked, and named when wrong; the key never echoed', async (t) => {
  const files = await makeTlsFiles(t)
  const other = await makeTlsFiles(t, 'another-ca')
  const dir = files.dir
  writeFileSync(join(dir, 'not-pem.txt'), 'secret-looking-bytes-that-are-no-pem\n')
  const tls = { REDIS_TLS_CA_FILE: files.caFile, REDIS_TLS_CERT_FILE: files.clientCertFile, REDIS_TLS_KEY_FILE: files.clientKeyFile }
  const config = loadSettings({ env: { ...BASE, REDIS_URL: 'rediss://r:6380', ...tls } })
  t.match(config.fleet?.redis?.tls, { ca: readFileSync(files.caFile, 'utf8').trim(), cert: /^-----BEGIN CERTIFICATE-----/, key: /^-----BEGIN PRIVATE KEY-----/ })
  t.match(loadSettings({ env: { ...BASE, REDIS_SENTINELS: 's1', REDIS_SENTINEL_NAME: 'm', REDIS_TLS_CA_FILE: files.caFile } }).fleet?.redis, { tls: { ca: /CERTIFICATE/ }, target: /\(TLS\)$/ }, 'Sentinel: TLS on with a CA file')
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ REDIS_URL: 'rediss://r', REDIS_TLS_CA_FILE: join(dir, 'absent.crt') }, /^REDIS_TLS_CA_FILE cannot be read \(ENOENT\): .*absent\.crt$/],
    [{ REDIS_URL: 'rediss://r', REDIS_TLS_CA_FILE: join(dir, 'not-pem.txt') }, /^REDIS_TLS_CA_FILE does not hold a PEM certificate/],
    [{ REDIS_URL: 'rediss://r', REDIS_TLS_CERT_FILE: files.clientCertFile, REDIS_TLS_KEY_FILE: join(dir, 'not-pem.txt') }, /^REDIS_TLS_KEY_FILE does not hold an unencrypted PEM private key/],
    [{ REDIS_URL: 'rediss://r', REDIS_TLS_CERT_FILE: files.clientCertFile }, /^REDIS_TLS_KEY_FILE is required with REDIS_TLS_CERT_FILE/],
    [{ REDIS_URL: 'rediss://r', REDIS_TLS_CERT_FILE: files.clientCertFile, REDIS_TLS_KEY_FILE: other.clientKeyFile }, /^REDIS_TLS_KEY_FILE is not the key of the certificate in REDIS_TLS_CERT_FILE$/],
    [{ REDIS_URL: 'redis://r', REDIS_TLS_CA_FILE: files.caFile }, /^REDIS_TLS_CA_FILE needs a rediss:\/\/ REDIS_URL/],
    [{ REDIS_TLS_CA_FILE: files.caFile }, /^REDIS_TLS_CA_FILE is set but no Redis is/]
  ]
  for (const [env, line] of cases) {
    const found = problems(env)
    t.equal(found.length, 1, `one line: ${found.join(' | ')}`)
    t.match(found[0], line)
    t.notMatch(found.join('\n'), /secret-looking|PRIVATE KEY/, 'never the content')
  }
})

function catchLines (fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.lines
    throw err
  }
  return []
}
