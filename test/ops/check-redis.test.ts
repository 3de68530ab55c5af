// `cmu-proxy check` says what Redis answered (WRONGPASS, NOAUTH, NOPERM, a
// Cluster node, a TLS failure) instead of "did not answer within 10000 ms",
// and reaches Redis through Sentinel and over TLS with the REDIS_TLS_* files.
// Real redis-server and redis-sentinel processes; the sandbox as Adobe.
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { runCheck } from '../../src/ops/check.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { startSandbox, temporaryDirectory } from '../helpers/app.js'
import { rawRedisClient, startRedisServer } from '../helpers/redis-server.js'
import { makeTlsFiles, startSentinelSetup, startTlsRedisServer } from '../helpers/redis-topologies.js'

const PASSWORD = 'check-test-password'

async function checkWith (t: Test, redisEnv: Record<string, string>): Promise<{ code: number, lines: string[], fleet: string, elapsedMs: number }> {
  const sandbox = await startSandbox(t)
  const env = {
    CMU_PROXY_ENV_FILE: '/dev/null',
    ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(),
    ...sandbox.adobeUrls,
    CREDENTIALS_FILE: join(temporaryDirectory(t), 'credentials.json'),
    STATE_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    ...redisEnv
  }
  const lines: string[] = []
  const started = performance.now()
  const code = await runCheck(env, (line) => { lines.push(line) })
  return { code, lines, fleet: lines.find((line) => /^(PASS|FAIL) {2}fleet/.test(line)) ?? '', elapsedMs: performance.now() - started }
}

t.test('check reports what Redis answered, at once, and never the password', async (t) => {
  const redis = await startRedisServer(t)
  const raw = await rawRedisClient(t, redis)
  await raw.configSet('requirepass', PASSWORD)
  await raw.sendCommand(['AUTH', PASSWORD])
  await raw.sendCommand(['ACL', 'SETUSER', 'no-scripts', 'on', '>no-scripts-password', '~*', '&*', '+@all', '-eval'])
  const where = `redis://127.0.0.1:${redis.port} \\(REDIS_URL\\)`
  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['no password', { REDIS_URL: redis.url }, new RegExp(`^FAIL {2}fleet +${where}: Redis answered NOAUTH: Redis requires a password: set REDIS_PASSWORD or REDIS_PASSWORD_FILE$`)],
    ['a wrong password', { REDIS_URL: redis.url, REDIS_PASSWORD: 'not-the-password' }, new RegExp(`^FAIL {2}fleet +${where}: Redis answered WRONGPASS: wrong user name or password`)],
    ['a wrong user', { REDIS_URL: redis.url.replace('redis://', 'redis://nobody:not-the-password@') }, /Redis answered WRONGPASS/]
  ]
  for (const [name, env, line] of cases) {
    const result = await checkWith(t, env)
    t.equal(result.code, 1, `${name}: fails`)
    t.match(result.fleet, line, `${name}: says what Redis answered`)
    t.ok(result.elapsedMs < 5_000, `${name}: at once, not after AUTH_TIMEOUT_MS (${Math.round(result.elapsedMs)} ms)`)
    t.notMatch(result.lines.join('\n'), /not-the-password|check-test-password/, `${name}: no password printed`)
  }
  const limited = await checkWith(t, { REDIS_URL: redis.url.replace('redis://', 'redis://no-scripts:no-scripts-password@') })
  t.match(limited.fleet, /^PASS/, 'an ACL user that may connect')
  t.match(limited.lines.at(-1), /^FAIL {2}credentials +the fleet's client credentials cannot be read: .*Redis answered NOPERM: the ACL user may not run a command the proxy needs/, 'but not run EVAL: said so')
  const right = await checkWith(t, { REDIS_URL: redis.url, REDIS_PASSWORD: PASSWORD })
  t.match(right.fleet, new RegExp(`^PASS {2}fleet +${where} answered$`))
})

t.test('check: a Cluster node under plain REDIS_URL says to set REDIS_CLUSTER', async (t) => {
  const node = await startRedisServer(t, (_port, dir) => ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf')])
  const result = await checkWith(t, { REDIS_URL: node.url })
  t.equal(result.code, 1)
  t.match(result.fleet, /^FAIL {2}fleet +redis:\/\/127\.0\.0\.1:\d+ \(REDIS_URL\): REDIS_URL is a node of a Redis Cluster .*set REDIS_CLUSTER=true$/)
})

t.test('check over TLS: a private CA and a client certificate from REDIS_TLS_*_FILE; a missing one is named', async (t) => {
  const files = await makeTlsFiles(t)
  const { tlsPort } = await startTlsRedisServer(t, files, true)
  const url = `rediss://127.0.0.1:${tlsPort}`
  const all = { REDIS_URL: url, REDIS_TLS_CA_FILE: files.caFile, REDIS_TLS_CERT_FILE: files.clientCertFile, REDIS_TLS_KEY_FILE: files.clientKeyFile }
  const ok = await checkWith(t, all)
  t.match(ok.fleet, new RegExp(`^PASS {2}fleet +rediss://127\\.0\\.0\\.1:${tlsPort} \\(REDIS_URL\\) answered$`))
  const noCa = await checkWith(t, { REDIS_URL: url, REDIS_TLS_CERT_FILE: files.clientCertFile, REDIS_TLS_KEY_FILE: files.clientKeyFile })
  t.match(noCa.fleet, /^FAIL {2}fleet +.*: TLS: (SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY) \(REDIS_TLS_CA_FILE must hold the CA/, 'Node does not know the CA: said so')
  t.ok(noCa.elapsedMs < 5_000, 'at once')
  const noClientCertificate = await checkWith(t, { REDIS_URL: url, REDIS_TLS_CA_FILE: files.caFile })
  t.match(noClientCertificate.fleet, /^FAIL {2}fleet +.*: TLS: ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED \(Redis asks for a client certificate: set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE/, 'Redis wants a client certificate: said so')
  t.ok(noClientCertificate.elapsedMs < 5_000, 'at once')
})

t.test('check through Sentinel names the master and the sentinels', async (t) => {
  const setup = await startSentinelSetup(t)
  const result = await checkWith(t, setup.env)
  t.match(result.fleet, new RegExp(`^PASS {2}fleet +sentinel master ${setup.masterName} via 127\\.0\\.0\\.1:\\d+,127\\.0\\.0\\.1:${setup.sentinel.port} \\(REDIS_SENTINELS\\) answered$`))
})
