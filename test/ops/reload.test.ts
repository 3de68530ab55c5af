// Reload without a restart (config/reload.ts, ops/live-secrets.ts), one
// instance, through real HTTP: each secret changes, the old value stops
// working and the new one works; a broken file keeps every value in use; a
// file changed in place and a Secret volume's symlink swap reload by themselves.
import { execFileSync } from 'node:child_process'
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import t, { type Test } from 'tap'
import { heldAnswer } from '../../src/sandbox/faults.js'
import type { Sandbox } from '../../src/sandbox/server.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { SettingsReloader } from '../../src/config/reload.js'
import { SecretFileWatch } from '../../src/config/secret-file-watch.js'
import { assertProblem, call, capturedLogger, eventually, startProxy, startSandbox, temporaryDirectory } from '../helpers/app.js'
import { logLines, reloads, secretVolume, startReloadableProxy, statusWithKey, type ReloadableProxy } from '../helpers/reload.js'

const OLD_KEY = 'old-caller-key-0123456789'
const NEW_KEY = 'new-caller-key-0123456789'
const OTHER_KEY = 'other-caller-key-0123456789'
const OLD_ADMIN = 'old-admin-key-0123456789'
const NEW_ADMIN = 'new-admin-key-0123456789'

/** No secret of this file in any log line. */
function noSecretLogged (t: Test, logs: string[], secrets: string[]): void {
  const text = logs.join('\n')
  t.same(secrets.filter((secret) => text.includes(secret)), [], 'no secret in the logs')
}

t.test('PROXY_API_KEYS_FILE: after a reload the old key is refused and the new one accepted', async (t) => {
  const sandbox = await startSandbox(t)
  const keys = join(temporaryDirectory(t), 'api-keys')
  writeFileSync(keys, `${OLD_KEY}\n${OTHER_KEY}\n`)
  const proxy = await startReloadableProxy(t, sandbox, { env: { PROXY_API_KEYS_FILE: keys }, watch: false })
  t.equal(await statusWithKey(proxy.url, OLD_KEY), 200, 'the old key works before')
  t.equal(await statusWithKey(proxy.url, NEW_KEY), 401, 'the new key does not, yet')
  writeFileSync(keys, `# rotated\n${NEW_KEY}\n${OTHER_KEY}\n`)
  t.equal(proxy.reloading.reload('test'), 'ok')
  t.equal(await statusWithKey(proxy.url, OLD_KEY), 401, 'the old key is refused')
  t.equal(await statusWithKey(proxy.url, NEW_KEY), 200, 'the new key is accepted')
  t.equal(await statusWithKey(proxy.url, OTHER_KEY), 200, 'a key kept stays')
  t.equal(proxy.reloading.reload('test'), 'unchanged', 'nothing changed since')
  t.equal(await reloads(proxy.url, 'ok'), 1)
  t.equal(await reloads(proxy.url, 'unchanged'), 1)
  t.equal(await reloads(proxy.url, 'rejected'), 0)
  t.match(logLines(proxy, /^configuration reloaded: PROXY_API_KEYS$/)[0], { trigger: 'test', changed: ['PROXY_API_KEYS'], apiKeys: 2 })
  noSecretLogged(t, proxy.logs, [OLD_KEY, NEW_KEY, OTHER_KEY])
})

t.test('keys arrive on a proxy started without any: the door closes; it never opens again by reload', async (t) => {
  const sandbox = await startSandbox(t)
  const envFile = join(temporaryDirectory(t), 'cmu-proxy.env')
  writeFileSync(envFile, '# no keys yet\n')
  const proxy = await startReloadableProxy(t, sandbox, { env: { CMU_PROXY_ENV_FILE: envFile } })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200, 'open on loopback without keys')
  writeFileSync(envFile, `PROXY_API_KEYS=${NEW_KEY}\n`)
  t.equal(proxy.reloading.reload('SIGHUP'), 'ok')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 401, 'a caller without a key is refused now')
  t.equal(await statusWithKey(proxy.url, NEW_KEY), 200)
  writeFileSync(envFile, '# keys removed\n')
  t.equal(proxy.reloading.reload('SIGHUP'), 'rejected', 'no keys after keys: refused')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 401, 'still closed')
  t.equal(await statusWithKey(proxy.url, NEW_KEY), 200, 'the key in use still works')
  t.match(logLines(proxy, /reload rejected/), [{ variables: ['PROXY_API_KEYS'], msg: /PROXY_API_KEYS holds no key now/ }])
})

t.test('a broken file keeps every value in use, logs one line naming the variable and never the value', async (t) => {
  const sandbox = await startSandbox(t)
  const dir = temporaryDirectory(t)
  const keys = join(dir, 'api-keys')
  const admin = join(dir, 'admin-key')
  writeFileSync(keys, `${OLD_KEY}\n`)
  writeFileSync(admin, OLD_ADMIN)
  const proxy = await startReloadableProxy(t, sandbox, { env: { PROXY_API_KEYS_FILE: keys, ADMIN_API_KEY_FILE: admin }, watch: false })
  // A good new admin key beside a broken key file: nothing of the reload applies.
  writeFileSync(admin, NEW_ADMIN)
  for (const [broken, why] of [['', /PROXY_API_KEYS_FILE points at an empty file/], ['# only a comment\n', /PROXY_API_KEYS_FILE holds no key/], ['short\n', /PROXY_API_KEYS_FILE must hold keys of at least 16 characters/]] as const) {
    writeFileSync(keys, broken)
    const before = proxy.logs.length
    t.equal(proxy.reloading.reload('test'), 'rejected', `refused: ${JSON.stringify(broken)}`)
    const lines = proxy.logs.slice(before).map((line) => JSON.parse(line) as { level: number, msg: string })
    t.equal(lines.length, 1, 'one line')
    t.match(lines[0], { level: 50, msg: why })
    t.equal(await statusWithKey(proxy.url, OLD_KEY), 200, 'the key in use still works')
    t.equal((await call(proxy.url, '/admin/status', { headers: { 'x-api-key': OLD_ADMIN } })).status, 200, 'the admin key in use too')
    t.equal((await call(proxy.url, '/cmu/v2')).status, 401, 'the door stays closed')
  }
  t.equal(await reloads(proxy.url, 'rejected'), 3)
  writeFileSync(keys, `${OLD_KEY}\n`)
  noSecretLogged(t, proxy.logs, [OLD_KEY, OLD_ADMIN, NEW_ADMIN, 'short', proxy.statement])
  t.equal(proxy.reloading.reload('fixed'), 'ok', 'once fixed, the reload applies what changed')
  t.equal((await call(proxy.url, '/admin/status', { headers: { 'x-api-key': NEW_ADMIN } })).status, 200, 'the new admin key works')
  t.equal((await call(proxy.url, '/admin/status', { headers: { 'x-api-key': OLD_ADMIN } })).status, 401, 'the old one is refused')
})

t.test('a secret file swapped for a FIFO, /dev/zero or a 2 MiB file: the reload is rejected at once, the values in use stay', async (t) => {
  const sandbox = await startSandbox(t)
  const dir = temporaryDirectory(t)
  const keys = join(dir, 'api-keys')
  writeFileSync(keys, `${OLD_KEY}\n`)
  const proxy = await startReloadableProxy(t, sandbox, { env: { PROXY_API_KEYS_FILE: keys }, watch: false })
  const swaps: Array<[string, () => void, RegExp]> = [
    // Opening a FIFO to read waits for a writer: a blocking read would hang the event loop.
    ['a FIFO', () => { execFileSync('mkfifo', [keys]) }, /PROXY_API_KEYS_FILE is not a regular file/],
    ['a symlink to /dev/zero', () => { symlinkSync('/dev/zero', keys) }, /PROXY_API_KEYS_FILE is not a regular file/],
    ['a 2 MiB file', () => { writeFileSync(keys, `${NEW_KEY}\n`.repeat(2 * 1024 * 1024 / 24)) }, /PROXY_API_KEYS_FILE is larger than 1 MiB/]
  ]
  for (const [what, swap, why] of swaps) {
    rmSync(keys)
    swap()
    t.equal(proxy.reloading.reload('test'), 'rejected', what)
    t.match(logLines(proxy, /reload rejected/).at(-1), { variables: ['PROXY_API_KEYS_FILE'], msg: why })
    t.equal(await statusWithKey(proxy.url, OLD_KEY), 200, 'the key in use still works')
    t.equal(await statusWithKey(proxy.url, NEW_KEY), 401)
  }
  t.equal(await reloads(proxy.url, 'rejected'), 3)
})

t.test('ADMIN_API_KEY: rotated by reload; removed, it is revoked (every /admin request gets 401) until a key comes back', async (t) => {
  const sandbox = await startSandbox(t)
  const envFile = join(temporaryDirectory(t), 'cmu-proxy.env')
  writeFileSync(envFile, `ADMIN_API_KEY=${OLD_ADMIN}\n`)
  const proxy = await startReloadableProxy(t, sandbox, { env: { CMU_PROXY_ENV_FILE: envFile }, watch: false })
  const adminStatus = async (key: string): Promise<number> => (await call(proxy.url, '/admin/status', { headers: { authorization: `Bearer ${key}` } })).status
  writeFileSync(envFile, `ADMIN_API_KEY=${NEW_ADMIN}\n`)
  t.equal(proxy.reloading.reload('SIGHUP'), 'ok')
  t.equal(await adminStatus(OLD_ADMIN), 401, 'old admin key refused')
  t.equal(await adminStatus(NEW_ADMIN), 200, 'new admin key accepted')
  // A leaked key is revoked by removing it: the reload applies that, it does not wait for a restart.
  writeFileSync(envFile, '# admin key revoked\n')
  t.equal(proxy.reloading.reload('SIGHUP'), 'ok', 'the removal is applied')
  t.equal(await adminStatus(NEW_ADMIN), 401, 'the removed key is refused')
  t.equal(await adminStatus(OLD_ADMIN), 401, 'and so is any other')
  assertProblem(t, await call(proxy.url, '/admin/cache', { method: 'DELETE', headers: { 'x-api-key': NEW_ADMIN } }), 401, 'CMU_PROXY_UNAUTHORIZED')
  t.equal(await reloads(proxy.url, 'ok'), 2)
  t.equal(await reloads(proxy.url, 'unchanged'), 0)
  t.match(logLines(proxy, /admin API is closed/), [{ level: 40, trigger: 'SIGHUP' }], 'one line says /admin is closed')
  t.same(logLines(proxy, /only a restart applies/), [], 'not a restart matter')
  t.equal(proxy.reloading.reload('SIGHUP'), 'unchanged', 'still removed: nothing more')
  writeFileSync(envFile, `ADMIN_API_KEY=${OLD_ADMIN}\n`)
  t.equal(proxy.reloading.reload('SIGHUP'), 'ok', 'a key put back applies')
  t.equal(await adminStatus(OLD_ADMIN), 200, '/admin opens to it again')
  noSecretLogged(t, proxy.logs, [OLD_ADMIN, NEW_ADMIN])
})

t.test('ADMIN_API_KEY on a proxy started without one: /admin does not exist; turning it on waits for a restart', async (t) => {
  const sandbox = await startSandbox(t)
  const envFile = join(temporaryDirectory(t), 'cmu-proxy.env')
  writeFileSync(envFile, '# no admin key\n')
  const proxy = await startReloadableProxy(t, sandbox, { env: { CMU_PROXY_ENV_FILE: envFile, ADMIN_API_KEY: undefined }, watch: false })
  writeFileSync(envFile, `ADMIN_API_KEY=${NEW_ADMIN}\n`)
  t.equal(proxy.reloading.reload('SIGHUP'), 'unchanged', 'turning it on is not applied')
  t.equal((await call(proxy.url, '/admin/status', { headers: { authorization: `Bearer ${NEW_ADMIN}` } })).status, 404, 'no admin routes')
  t.match(logLines(proxy, /only a restart applies/), [{ variables: ['ADMIN_API_KEY'], msg: /ADMIN_API_KEY \(turned on or off\)/ }])
})

t.test('other settings changed in the env file: ignored, one line says a restart applies them', async (t) => {
  const sandbox = await startSandbox(t)
  const envFile = join(temporaryDirectory(t), 'cmu-proxy.env')
  writeFileSync(envFile, `PROXY_API_KEYS=${OLD_KEY}\nUPSTREAM_CONNECTIONS=8\n`)
  const proxy = await startReloadableProxy(t, sandbox, { env: { CMU_PROXY_ENV_FILE: envFile } })
  writeFileSync(envFile, `PROXY_API_KEYS=${NEW_KEY}\nUPSTREAM_CONNECTIONS=16\nCACHE_MAX_BYTES=99999999\n`)
  t.equal(proxy.reloading.reload('SIGHUP'), 'ok', 'the keys apply')
  t.equal(await statusWithKey(proxy.url, NEW_KEY), 200)
  const lines = logLines(proxy, /only a restart applies/)
  t.equal(lines.length, 1, 'one line')
  t.match(lines[0], { level: 40, variables: ['UPSTREAM_CONNECTIONS', 'CACHE_MAX_BYTES'] })
  t.notMatch(lines[0]?.msg, /16|99999999/, 'names, not values')
})

t.test('RATE_LIMIT_KEYS_FILE: a key\'s own limit changes with a reload', async (t) => {
  const sandbox = await startSandbox(t)
  const dir = temporaryDirectory(t)
  const limits = join(dir, 'rate-limit-keys')
  writeFileSync(limits, `${OLD_KEY} 2/minute\n`)
  const proxy = await startReloadableProxy(t, sandbox, { env: { PROXY_API_KEYS: `${OLD_KEY},${OTHER_KEY}`, RATE_LIMIT: '100/minute', RATE_LIMIT_KEYS_FILE: limits }, watch: false })
  const limitOf = async (key: string): Promise<string | string[] | undefined> => (await call(proxy.url, '/cmu/v2', { headers: { 'x-api-key': key } })).headers['ratelimit-limit']
  t.equal(await limitOf(OLD_KEY), '2', 'its own limit')
  t.equal(await limitOf(OTHER_KEY), '100', 'everyone else\'s')
  writeFileSync(limits, `${OTHER_KEY} 5/minute\n`)
  t.equal(proxy.reloading.reload('test'), 'ok')
  t.equal(await limitOf(OLD_KEY), '100', 'its override is gone')
  t.equal(await limitOf(OTHER_KEY), '5', 'the other key has one now')
  writeFileSync(limits, 'not-a-key 5/minute\n')
  t.equal(proxy.reloading.reload('test'), 'rejected', 'an override for a key that is not configured is refused, as at start')
  t.equal(await limitOf(OTHER_KEY), '5', 'the rules in use stay')
  noSecretLogged(t, proxy.logs, [OLD_KEY, OTHER_KEY])
})

t.test('a key file changed in place reloads by itself', async (t) => {
  const sandbox = await startSandbox(t)
  const keys = join(temporaryDirectory(t), 'api-keys')
  writeFileSync(keys, `${OLD_KEY}\n`)
  const proxy = await startReloadableProxy(t, sandbox, { env: { PROXY_API_KEYS_FILE: keys } })
  writeFileSync(keys, `${NEW_KEY}\n`)
  t.ok(await eventually(async () => await statusWithKey(proxy.url, NEW_KEY) === 200), 'the new key works without a signal')
  t.equal(await statusWithKey(proxy.url, OLD_KEY), 401, 'the old one is refused')
  t.match(logLines(proxy, /^configuration reloaded/), [{ trigger: `file changed: ${keys}` }])
})

t.test('a Secret volume\'s ..data symlink swap reloads by itself', async (t) => {
  const sandbox = await startSandbox(t)
  const volume = secretVolume(join(temporaryDirectory(t), 'secrets'), { 'api-keys': `${OLD_KEY}\n`, 'admin-key': OLD_ADMIN })
  const proxy = await startReloadableProxy(t, sandbox, { env: { PROXY_API_KEYS_FILE: volume.path('api-keys'), ADMIN_API_KEY_FILE: volume.path('admin-key') } })
  t.equal(await statusWithKey(proxy.url, OLD_KEY), 200)
  volume.update({ 'api-keys': `${NEW_KEY}\n`, 'admin-key': NEW_ADMIN })
  t.ok(await eventually(async () => await statusWithKey(proxy.url, NEW_KEY) === 200), 'the new key works')
  t.equal(await statusWithKey(proxy.url, OLD_KEY), 401)
  t.equal((await call(proxy.url, '/admin/status', { headers: { 'x-api-key': NEW_ADMIN } })).status, 200, 'and the new admin key, from the same swap')
  t.equal(await reloads(proxy.url, 'ok'), 1, 'one swap, one reload')
  t.match(logLines(proxy, /^configuration reloaded/), [{ changed: ['PROXY_API_KEYS', 'ADMIN_API_KEY'] }])
})

t.test('ADOBE_SOFTWARE_STATEMENT_FILE: a new statement registers once; the old token serves until the new one is held', async (t) => {
  const sandbox = await startSandbox(t)
  const file = join(temporaryDirectory(t), 'statement.jwt')
  writeFileSync(file, makeSoftwareStatement())
  const proxy = await startReloadableProxy(t, sandbox, { env: { ADOBE_SOFTWARE_STATEMENT: undefined, ADOBE_SOFTWARE_STATEMENT_FILE: file, ADMIN_API_KEY: OLD_ADMIN }, watch: false })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  const before = proxy.app.broker.status()
  t.equal(sandbox.calls.register, 1)
  const next = makeSoftwareStatement()
  writeFileSync(file, next)
  // Adobe answers the new registration only when the test says.
  const adobe = heldAnswer()
  sandbox.faults.failNext('register', 1, { until: adobe.until })
  t.equal(proxy.reloading.reload('test'), 'ok')
  t.equal(proxy.reloading.reload('test again'), 'unchanged', 'the same statement again: nothing more')
  t.ok(await eventually(() => sandbox.calls.register === 2), 'the new statement is being registered')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200, 'meanwhile the old client\'s token serves')
  t.not(proxy.app.broker.statement, next, 'the old statement is still in use')
  adobe.release()
  t.ok(await eventually(() => proxy.app.broker.statement === next), 'the new statement is in use')
  t.equal(sandbox.calls.register, 2, 'one registration for the new statement')
  const after = proxy.app.broker.status()
  t.not(after.clientId, before.clientId, 'another client')
  t.equal(after.counts.registrations, 2, 'the counters go on across the switch')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200, 'reports flow with the new client\'s token')
  const status = (await call(proxy.url, '/admin/status', { headers: { 'x-api-key': OLD_ADMIN } })).json()
  t.equal(status.softwareStatement.fingerprint, createHash('sha256').update(next).digest('hex').slice(0, 12), 'the admin view shows the statement in use')
  noSecretLogged(t, proxy.logs, [next, proxy.statement])
})

t.test('switching back to the statement of before takes its stored credentials: no second registration', async (t) => {
  const sandbox = await startSandbox(t)
  const file = join(temporaryDirectory(t), 'statement.jwt')
  const first = makeSoftwareStatement()
  writeFileSync(file, first)
  const proxy = await startReloadableProxy(t, sandbox, { env: { ADOBE_SOFTWARE_STATEMENT: undefined, ADOBE_SOFTWARE_STATEMENT_FILE: file }, watch: false })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  const firstClient = proxy.app.broker.status().clientId
  const second = makeSoftwareStatement()
  writeFileSync(file, second)
  t.equal(proxy.reloading.reload('second'), 'ok')
  t.ok(await eventually(() => proxy.app.broker.statement === second), 'the second statement is in use')
  t.equal(sandbox.calls.register, 2)
  writeFileSync(file, first)
  t.equal(proxy.reloading.reload('back'), 'ok')
  t.ok(await eventually(() => proxy.app.broker.statement === first), 'the first statement is in use again')
  t.equal(sandbox.calls.register, 2, 'its credentials were still in CREDENTIALS_FILE')
  t.equal(proxy.app.broker.status().clientId, firstClient, 'the same client as before')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
})

t.test('a new statement Adobe refuses: the old one keeps serving', async (t) => {
  const sandbox = await startSandbox(t)
  const file = join(temporaryDirectory(t), 'statement.jwt')
  writeFileSync(file, makeSoftwareStatement())
  const proxy = await startReloadableProxy(t, sandbox, { env: { ADOBE_SOFTWARE_STATEMENT: undefined, ADOBE_SOFTWARE_STATEMENT_FILE: file }, watch: false })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  const started = proxy.app.broker.statement
  sandbox.faults.failNext('register', 1_000, { status: 400, body: JSON.stringify({ error: 'invalid_software_statement' }), contentType: 'application/json' })
  writeFileSync(file, makeSoftwareStatement())
  t.equal(proxy.reloading.reload('test'), 'ok', 'the file is valid: the reload applies')
  t.ok(await eventually(() => logLines(proxy, /no token yet for the new software statement/).length === 1), 'the refusal is logged')
  t.equal(proxy.app.broker.statement, started, 'the statement in use stays')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200, 'and serves')
  t.equal((await call(proxy.url, '/readyz')).status, 200, 'ready')
})

/**
 * A proxy on a statement file, its first statement in use, then a second
 * statement reloaded: its registration, and the next `held` - 1, hang until
 * the test releases `adobe`.
 */
async function secondStatementRegistering (t: Test, held: number): Promise<{ sandbox: Sandbox, file: string, first: string, proxy: ReloadableProxy, adobe: ReturnType<typeof heldAnswer> }> {
  const sandbox = await startSandbox(t)
  const file = join(temporaryDirectory(t), 'statement.jwt')
  const first = makeSoftwareStatement()
  writeFileSync(file, first)
  const proxy = await startReloadableProxy(t, sandbox, { env: { ADOBE_SOFTWARE_STATEMENT: undefined, ADOBE_SOFTWARE_STATEMENT_FILE: file }, watch: false })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  const adobe = heldAnswer()
  sandbox.faults.failNext('register', held, { until: adobe.until })
  writeFileSync(file, makeSoftwareStatement())
  t.equal(proxy.reloading.reload('second'), 'ok')
  t.ok(await eventually(() => sandbox.calls.register === 2), 'the second statement is registering')
  return { sandbox, file, first, proxy, adobe }
}

t.test('statements in quick succession: the newest wins, one still registering is given up; going back cancels', async (t) => {
  // The second statement's registration hangs until the test says.
  const { file, first, proxy, adobe } = await secondStatementRegistering(t, 1)
  writeFileSync(file, first)
  t.equal(proxy.reloading.reload('back'), 'ok', 'back to the statement in use')
  t.ok(await eventually(() => logLines(proxy, /gave up switching/).length === 1), 'the switch is given up')
  const third = makeSoftwareStatement()
  writeFileSync(file, third)
  t.equal(proxy.reloading.reload('third'), 'ok')
  t.ok(await eventually(() => proxy.app.broker.statement === third), 'the third statement is in use')
  adobe.release()
  t.equal(proxy.app.broker.statement, third, 'the abandoned registration changes nothing')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
})

t.test('two statements while a third is still registering: the last one asked for is the one in use', async (t) => {
  // Every new registration waits until the test says, so nothing is ready before all reloads came.
  const { sandbox, file, proxy, adobe } = await secondStatementRegistering(t, 10)
  // Back to back: the third's switch is still closing the second's broker when the fourth comes.
  const [third, fourth] = [makeSoftwareStatement(), makeSoftwareStatement()]
  writeFileSync(file, third)
  t.equal(proxy.reloading.reload('third'), 'ok')
  writeFileSync(file, fourth)
  t.equal(proxy.reloading.reload('fourth'), 'ok')
  t.ok(await eventually(() => sandbox.calls.register >= 3), 'the fourth statement is registering')
  adobe.release()
  t.ok(await eventually(() => proxy.app.broker.statement === fourth), 'the fourth statement is in use')
  t.equal(proxy.reloading.reload('again'), 'unchanged', 'the statement in effect is the one in use')
  t.equal(sandbox.calls.register, 3, 'the third statement was never built: nothing registered for it')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  t.equal(proxy.app.broker.statement, fourth, 'and it stays in use')
})

t.test('a statement file read half written (JWT-shaped, but its payload is not JSON): rejected before anything registers', async (t) => {
  const sandbox = await startSandbox(t)
  const file = join(temporaryDirectory(t), 'statement.jwt')
  writeFileSync(file, makeSoftwareStatement())
  const proxy = await startReloadableProxy(t, sandbox, { env: { ADOBE_SOFTWARE_STATEMENT: undefined, ADOBE_SOFTWARE_STATEMENT_FILE: file }, watch: false })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  const started = proxy.app.broker.statement
  const [header = '', payload = '', signature = ''] = makeSoftwareStatement().split('.')
  const part = (text: string): string => Buffer.from(text).toString('base64url')
  const broken = [
    // An in-place writer's new beginning over the old file's end: three parts still, the payload cut mid-JSON.
    `${header}.${part(Buffer.from(payload, 'base64url').toString('utf8').slice(0, 20))}.${signature}`,
    `${part('{"alg":"RS2')}.${payload}.${signature}`,
    `${header}.${part('["not", "an", "object"]')}.${signature}`
  ]
  for (const statement of broken) {
    writeFileSync(file, statement)
    t.equal(proxy.reloading.reload('test'), 'rejected')
    t.match(logLines(proxy, /reload rejected/).at(-1), { variables: ['ADOBE_SOFTWARE_STATEMENT'], msg: /ADOBE_SOFTWARE_STATEMENT is not a JWT: its header and payload must be base64url-encoded JSON objects/ })
  }
  t.equal(proxy.app.broker.statement, started, 'the statement in use stays')
  t.equal(sandbox.calls.register, 1, 'nothing registered with a broken statement')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  noSecretLogged(t, proxy.logs, [started ?? '', ...broken])
})

t.test('a new statement whose credentials cannot be persisted is not switched to', async (t) => {
  const sandbox = await startSandbox(t)
  const dir = temporaryDirectory(t)
  const file = join(dir, 'statement.jwt')
  writeFileSync(file, makeSoftwareStatement())
  const proxy = await startReloadableProxy(t, sandbox, { env: { ADOBE_SOFTWARE_STATEMENT: undefined, ADOBE_SOFTWARE_STATEMENT_FILE: file }, watch: false })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  const started = proxy.app.broker.statement
  // CREDENTIALS_FILE turned into a directory: a registration could not be kept.
  rmSync(proxy.credentialsFile)
  mkdirSync(proxy.credentialsFile)
  writeFileSync(file, makeSoftwareStatement())
  t.equal(proxy.reloading.reload('test'), 'ok')
  t.ok(await eventually(() => logLines(proxy, /new software statement cannot be used here/).length === 1), 'said once')
  t.equal(proxy.app.broker.statement, started, 'the statement in use stays')
  t.equal(sandbox.calls.register, 1, 'nothing registered that could not be kept')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
})

t.test('a target that fails to apply: rejected, logged, counted', async (t) => {
  const sandbox = await startSandbox(t)
  const keys = join(temporaryDirectory(t), 'api-keys')
  writeFileSync(keys, `${OLD_KEY}\n`)
  const proxy = await startProxy(t, sandbox, { env: { PROXY_API_KEYS_FILE: keys } })
  const results: string[] = []
  const reloader = new SettingsReloader({ load: proxy.load, started: proxy.configuration, logger: proxy.logger, target: { apply: () => { throw new RangeError('cannot') }, counted: (result) => { results.push(result) } } })
  writeFileSync(keys, `${NEW_KEY}\n`)
  t.equal(reloader.reload('test'), 'rejected')
  t.same(results, ['rejected'])
  t.match(logLines(proxy, /could not be applied/), [{ variables: ['PROXY_API_KEYS'], reason: 'RangeError' }])
})

t.test('the watch: a directory that cannot be watched is said once; a second file in a watched directory is watched too', async (t) => {
  const { lines, logger } = capturedLogger('info')
  const dir = temporaryDirectory(t)
  const changed: string[] = []
  const watch = new SecretFileWatch({ onChange: (file) => { changed.push(file) }, logger, debounceMs: 20 })
  t.teardown(() => { watch.close() })
  watch.watch([join(dir, 'missing', 'file'), join(dir, 'a')])
  t.match(lines.map((line) => JSON.parse(line)), [{ dir: join(dir, 'missing'), reason: 'ENOENT', msg: /changes there apply on SIGHUP only/ }])
  watch.watch([join(dir, 'a'), join(dir, 'b')])
  writeFileSync(join(dir, 'unrelated'), 'x')
  writeFileSync(join(dir, 'b'), 'x')
  t.ok(await eventually(() => changed.length === 1), 'one change')
  t.same(changed, [join(dir, 'b')], 'the file that matters, not the unrelated one')
  // The files moved elsewhere (a reload read new _FILE paths): the old directory is no longer watched.
  const elsewhere = temporaryDirectory(t)
  watch.watch([join(elsewhere, 'c')])
  writeFileSync(join(dir, 'b'), 'y')
  writeFileSync(join(elsewhere, 'c'), 'y')
  t.ok(await eventually(() => changed.length === 2), 'one more change')
  t.same(changed, [join(dir, 'b'), join(elsewhere, 'c')], 'from the new directory only')
})
