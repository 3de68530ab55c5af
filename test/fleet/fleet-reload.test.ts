// Reload and purge across a fleet: two (or three) in-process members on one
// real redis-server against the sandbox. A purge reaches the shared copies
// and every member's memory; a state key rotates in three reloads without a
// restart; a new software statement is registered once for the fleet.
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import type { Sandbox } from '../../src/sandbox/server.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { stateKey } from '../../src/store/encryption-keys.js'
import { stateNamespace } from '../../src/store/namespace.js'
import { assertProblem, call, eventually, startProxy, startSandbox, temporaryDirectory, type RunningProxy } from '../helpers/app.js'
import { ADMIN, fleetEnv, fleetOf, member, rawRedis } from '../helpers/fleet.js'
import { startRedisServer, type RedisServer } from '../helpers/redis-server.js'
import { reloadingFor } from '../helpers/reload.js'

const AS_ADMIN = { 'x-api-key': ADMIN }
const YEAR = '/cmu/v2/year'
const MONTH = '/cmu/v2/year/month'

const xCache = async (proxy: RunningProxy, path: string): Promise<string | string[] | undefined> => (await call(proxy.url, path)).headers['x-cache']
const memoryEntries = async (proxy: RunningProxy): Promise<number> => (await call(proxy.url, '/admin/status', { headers: AS_ADMIN })).json().cache.entries

t.test('a purge deletes the shared copies and every member\'s memory copies: one report, then everything', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const [a, b] = await fleetOf(t, sandbox, redis, 2, { CACHE_ENABLED: 'true' })
  if (a === undefined || b === undefined) throw new Error('two members')
  const raw = await rawRedis(t, redis)
  const shared = async (): Promise<number> => (await raw.keys(`${stateNamespace('cmu-proxy:', { softwareStatement: a.statement }).base}cache:*`)).length
  for (const path of [YEAR, MONTH]) {
    t.equal(await xCache(a, path), 'MISS', `A fetches ${path}`)
    t.equal(await xCache(b, path), 'HIT', 'B takes it from the fleet')
  }
  t.equal(sandbox.calls.cmu, 2)
  t.equal(await shared(), 2, 'two shared copies')

  const purged = await call(a.url, `/admin/cache?path=${encodeURIComponent(YEAR)}`, { method: 'DELETE', headers: AS_ADMIN })
  t.same(purged.json(), { purged: true, scope: 'path', path: YEAR, cacheEnabled: true, entries: { memory: 1, fleet: 1 } })
  t.equal(await shared(), 1, 'the shared copy of the report is gone, the other stays')
  t.ok(await eventually(async () => await memoryEntries(b) === 1), 'B dropped its memory copy when told')
  t.equal(await xCache(b, YEAR), 'MISS', 'B asks Adobe again for the purged report')
  t.equal(await xCache(b, MONTH), 'HIT', 'and not for the other one')
  t.equal(sandbox.calls.cmu, 3)

  const all = await call(b.url, '/admin/cache', { method: 'DELETE', headers: AS_ADMIN })
  t.same(all.json(), { purged: true, scope: 'all', cacheEnabled: true, entries: { memory: 2, fleet: 2 } })
  t.equal(await shared(), 0, 'no shared copy left')
  t.ok(await eventually(async () => await memoryEntries(a) === 0), 'A dropped everything when told')
  t.equal(await xCache(a, MONTH), 'MISS')
  t.match((await call(a.url, '/metrics')).text, /^cmu_proxy_cache_purges_total\{scope="path"\} 1$/m)
  t.match((await call(b.url, '/metrics')).text, /^cmu_proxy_cache_purges_total\{scope="all"\} 1$/m)
})

t.test('Redis down: the purge empties this member\'s memory and says it is incomplete (503)', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const [a] = await fleetOf(t, sandbox, redis, 1, { CACHE_ENABLED: 'true' })
  if (a === undefined) throw new Error('a member')
  await xCache(a, YEAR)
  await redis.kill()
  const answer = await call(a.url, '/admin/cache', { method: 'DELETE', headers: AS_ADMIN })
  assertProblem(t, answer, 503, 'CMU_PROXY_PURGE_INCOMPLETE')
  t.equal(answer.headers['retry-after'], '5')
  t.equal(await memoryEntries(a), 0, 'this member\'s memory is empty')
})

/** A member whose STATE_ENCRYPTION_KEY comes from its own file (as a pod's Secret volume). */
async function keyFileMember (t: Test, sandbox: Sandbox, redis: RedisServer, statement: string, keys: Buffer[]): Promise<{ proxy: RunningProxy, write: (keys: Buffer[]) => void, reload: () => string }> {
  const file = join(temporaryDirectory(t), 'state-key')
  const write = (list: Buffer[]): void => { writeFileSync(file, `${list.map((key) => key.toString('base64')).join(',')}\n`) }
  write(keys)
  const proxy = await member(t, sandbox, redis, { statement, env: { STATE_ENCRYPTION_KEY: undefined, STATE_ENCRYPTION_KEY_FILE: file }, fleetReconcileIntervalMs: 200 })
  const reloading = reloadingFor(t, proxy, false)
  return { proxy, write, reload: () => reloading.reload('test') }
}

t.test('STATE_ENCRYPTION_KEY rotates in three reloads across the fleet, with no restart and no registration', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const raw = await rawRedis(t, redis)
  const statement = makeSoftwareStatement()
  const ns = stateNamespace('cmu-proxy:', { softwareStatement: statement })
  const [OLD, NEW] = [randomBytes(32), randomBytes(32)]
  const idOf = (key: Buffer): string => stateKey(key).id.toString('hex')
  const sealedWith = async (name: string): Promise<string | undefined> => (await raw.get(`${ns.base}${name}`) as Buffer | null)?.subarray(1, 9).toString('hex')
  const members = [await keyFileMember(t, sandbox, redis, statement, [OLD]), await keyFileMember(t, sandbox, redis, statement, [OLD])]
  const [a, b] = members
  if (a === undefined || b === undefined) throw new Error('two members')
  t.equal((await call(a.proxy.url, '/cmu/v2')).status, 200)
  t.ok(await eventually(() => b.proxy.app.broker.currentToken() !== undefined), 'B took the fleet\'s token')
  t.equal(await sealedWith('token'), idOf(OLD))

  /** A refreshes; B must open the notice and take the very token A got. */
  const tokenCrosses = async (): Promise<boolean> => {
    await a.proxy.app.broker.refreshNow()
    const token = a.proxy.app.broker.currentToken()
    return await eventually(() => b.proxy.app.broker.currentToken() === token)
  }

  // Phase 1: every member opens NEW; OLD still seals.
  for (const m of members) { m.write([OLD, NEW]); t.equal(m.reload(), 'ok', 'phase 1 applied') }
  t.ok(await tokenCrosses(), 'phase 1: the fleet shares tokens')
  t.equal(await sealedWith('token'), idOf(OLD), 'OLD still seals')

  // Phase 2, one member at a time: NEW seals; a member still in phase 1 opens it.
  a.write([NEW, OLD])
  t.equal(a.reload(), 'ok')
  // A refresh may take a token the fleet already holds (one B shared meanwhile) and write nothing: refresh until A's own write shows.
  t.ok(await eventually(async () => { await a.proxy.app.broker.refreshNow(); return await sealedWith('token') === idOf(NEW) }), 'NEW seals')
  t.ok(await tokenCrosses(), 'a phase-1 member opens what a phase-2 member sealed')
  b.write([NEW, OLD])
  t.equal(b.reload(), 'ok')
  t.ok(await eventually(async () => await sealedWith('credentials') === idOf(NEW)), 'the credentials are re-sealed under NEW as they are read')

  // A list without the key that seals now is refused: it would strand what this member wrote.
  const stranger = randomBytes(32)
  a.write([stranger])
  t.equal(a.reload(), 'rejected')
  t.match(a.proxy.logs.map((line) => JSON.parse(line)).filter((line) => /reload rejected/.test(line.msg)), [{ msg: /STATE_ENCRYPTION_KEY_FILE no longer lists the key that seals now/ }])

  // Phase 3: OLD goes.
  for (const m of members) { m.write([NEW]); t.equal(m.reload(), 'ok', 'phase 3 applied') }
  t.ok(await tokenCrosses(), 'phase 3: the fleet shares tokens')
  const newcomer = await keyFileMember(t, sandbox, redis, statement, [NEW])
  t.equal((await call(newcomer.proxy.url, '/cmu/v2')).status, 200, 'a member that only knows NEW reads the fleet\'s state')
  t.equal(sandbox.calls.register, 1, 'no registration all along')
  const logs = members.flatMap((m) => m.proxy.logs).join('\n')
  t.same([OLD, NEW, stranger].map((key) => key.toString('base64')).filter((key) => logs.includes(key)), [], 'no key in the logs')
})

t.test('a new software statement is registered once for the fleet; every member switches to that client', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const first = makeSoftwareStatement()
  const members = await Promise.all([0, 1].map(async () => {
    const file = join(temporaryDirectory(t), 'statement.jwt')
    writeFileSync(file, first)
    // From the file only (fleetEnv drops unset variables, so the env is built here).
    const proxy = await startProxy(t, sandbox, { credentialsFile: join(temporaryDirectory(t), 'credentials.json'), fleetReconcileIntervalMs: 200, env: { ...fleetEnv(redis), ADOBE_SOFTWARE_STATEMENT: undefined, ADOBE_SOFTWARE_STATEMENT_FILE: file } })
    return { proxy, file, reloading: reloadingFor(t, proxy, false) }
  }))
  t.same(await Promise.all(members.map(async (m) => (await call(m.proxy.url, '/cmu/v2')).status)), [200, 200])
  t.equal(sandbox.calls.register, 1)
  const next = makeSoftwareStatement()
  for (const m of members) writeFileSync(m.file, next)
  t.same(members.map((m) => m.reloading.reload('test')), ['ok', 'ok'], 'both reload at once')
  t.ok(await eventually(() => members.every((m) => m.proxy.app.broker.statement === next)), 'both use the new statement')
  t.equal(sandbox.calls.register, 2, 'one registration for the fleet')
  // A member that took the fleet's token holds no credentials in memory: the registering one does.
  const [client] = members.map((m) => m.proxy.app.broker.status().clientId).filter((id) => id !== undefined)
  t.type(client, 'string')
  t.same(await Promise.all(members.map(async (m) => (await call(m.proxy.url, '/cmu/v2')).status)), [200, 200])
  const fileClient = (m: { proxy: RunningProxy }): string | undefined => { try { return JSON.parse(readFileSync(m.proxy.credentialsFile, 'utf8')).client_id } catch { return undefined } }
  t.ok(await eventually(() => members.every((m) => fileClient(m) === client)), 'each member\'s credentials file holds the new client')
  const restarted = await member(t, sandbox, redis, { statement: next })
  t.equal((await call(restarted.url, '/cmu/v2')).status, 200)
  t.equal(sandbox.calls.register, 2, 'an instance started with the new statement finds the same credentials')
})
