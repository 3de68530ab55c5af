// What the fleet does with the shared state when it is not what it should
// be: values that cannot be opened, older values replayed or put back, a
// registration whose shared write failed; `cmu-proxy check` in a fleet. Real redis-server, the sandbox as
// Adobe, in-process members (fleet-helpers.ts).
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { runCheck } from '../../src/ops/check.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { stateKey } from '../../src/store/encryption-keys.js'
import { stateNamespace } from '../../src/store/namespace.js'
import { SealedStore } from '../../src/store/sealed-store.js'
import { fleetEnv, fleetOf, KEY, member, rawRedis } from '../helpers/fleet.js'
import { call, eventually, startSandbox, temporaryDirectory } from '../helpers/app.js'
import { startRedisServer } from '../helpers/redis-server.js'

/** `value` sealed for `key` with a key this fleet does not hold (another key list, or a stranger). */
async function sealedWithAnotherKey (key: string, value: Buffer): Promise<Buffer> {
  const memory = new MemoryStore()
  await new SealedStore(memory, [stateKey(randomBytes(32))]).set(key, value)
  return await memory.get(key) ?? Buffer.alloc(0)
}

t.test('a token or cached report that cannot be opened is treated as absent and overwritten, not as Redis down', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const raw = await rawRedis(t, redis)
  const [a, b] = await fleetOf(t, sandbox, redis, 2, { CACHE_ENABLED: 'true', RATE_LIMIT: '1000/minute' })
  const ns = stateNamespace('cmu-proxy:', { softwareStatement: a?.statement ?? '' })
  t.equal((await call(a?.url ?? '', '/cmu/v2/year/month.csv')).status, 200)
  t.equal(sandbox.calls.token, 1)

  // The token: B's refresh finds a value it cannot open, fetches, and writes the fleet's token back.
  await raw.set(ns.key('token'), await sealedWithAnotherKey(ns.key('token'), Buffer.from('{}')), { PX: 60_000 })
  await b?.app.broker.refreshNow()
  t.equal(sandbox.calls.token, 2, 'one token call')
  const newcomer = await member(t, sandbox, redis, { statement: a?.statement ?? '' })
  t.equal((await call(newcomer.url, '/cmu/v2')).status, 200)
  t.equal(sandbox.calls.token, 2, 'a newcomer takes the token B wrote over the unusable one')
  const warnings = (b?.logs ?? []).map((l) => JSON.parse(l) as { level: number, msg: string, key?: string, reason?: string }).filter((l) => l.level === 40 && /shared access token .* cannot be used here/.test(l.msg))
  t.equal(warnings.length, 1, 'logged once, at warn')
  t.match(warnings[0], { key: ns.key('token'), reason: /key id [0-9a-f]{16}/ }, 'with the key and the key id it was sealed with')

  // A cached report: a miss that is overwritten; the request carries on with Redis as usual.
  const [cacheKey] = await raw.keys(`${ns.base}cache:*`)
  await raw.set(cacheKey ?? '', 'not a sealed value', { PX: 60_000 })
  const rateKey = (await raw.keys(`${ns.base}rate:*`))[0] ?? ''
  const counted = Number(await raw.get(rateKey))
  const miss = await call(b?.url ?? '', '/cmu/v2/year/month.csv')
  t.equal(miss.headers['x-cache'], 'MISS')
  t.equal((await call(b?.url ?? '', '/cmu/v2/year')).status, 200)
  t.equal(Number(await raw.get(rateKey)), counted + 2, 'both requests were counted in Redis: an unusable value is not store trouble')
  const other = await member(t, sandbox, redis, { statement: a?.statement ?? '', env: { CACHE_ENABLED: 'true' } })
  t.equal((await call(other.url, '/cmu/v2/year/month.csv')).headers['x-cache'], 'HIT', 'the report was written back over the unusable value')
  t.match((await call(b?.url ?? '', '/metrics')).text, /^cmu_proxy_redis_up 1$/m)
})

t.test('an older token put back or replayed into Redis is never taken over a newer one', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const raw = await rawRedis(t, redis)
  const [a, b] = await fleetOf(t, sandbox, redis, 2)
  const ns = stateNamespace('cmu-proxy:', { softwareStatement: a?.statement ?? '' })
  t.equal((await call(a?.url ?? '', '/cmu/v2')).status, 200)
  const older = await raw.get(ns.key('token'))
  const olderToken = a?.app.broker.currentToken()
  await a?.app.broker.refreshNow()
  const newer = a?.app.broker.currentToken()
  t.not(newer, olderToken)
  t.ok(await eventually(() => b?.app.broker.currentToken() === newer, 2_000), 'B took the newer token')
  const expiresAt = b?.app.broker.status().token?.expiresAt ?? 0

  // Someone with access to Redis (or a stale put-back) writes the older sealed value back: it still opens.
  await raw.set(ns.key('token'), older ?? '', { PX: 60_000 })
  await b?.app.broker.refreshNow()
  t.not(b?.app.broker.currentToken(), olderToken, 'B did not go back to the older token')
  t.ok((b?.app.broker.status().token?.expiresAt ?? 0) > expiresAt, 'its token expires later than before the refresh')
  t.equal(sandbox.calls.token, 3, 'it fetched a newer one for the fleet instead')
})

t.test('cmu-proxy check in fleet mode reads the fleet\'s credentials and never registers a second client', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const statement = makeSoftwareStatement()
  const env: Record<string, string> = { CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: statement, ...sandbox.adobeUrls, CREDENTIALS_FILE: join(temporaryDirectory(t), 'credentials.json'), ...fleetEnv(redis) }
  const runCheckWith = async (vars: Record<string, string>): Promise<{ code: number, lines: string[] }> => {
    const lines: string[] = []
    return { code: await runCheck(vars, (line) => { lines.push(line) }), lines }
  }
  const run = async (): Promise<{ code: number, lines: string[] }> => await runCheckWith(env)

  const empty = await run()
  t.equal(empty.code, 1)
  t.match(empty.lines.at(-1), /^FAIL {2}credentials +the fleet's store holds no usable client credentials \(none registered yet, or the value holds none\); check does not register in fleet mode/)
  t.equal(sandbox.calls.register, 0, 'no registration from check')

  const [a] = await fleetOf(t, sandbox, redis, 1, undefined, statement)
  t.equal((await call(a?.url ?? '', '/cmu/v2')).status, 200)
  const registered = await run()
  t.equal(registered.code, 0, registered.lines.join('\n'))
  t.match(registered.lines, [/^PASS {2}config/, /^PASS {2}egress/, /^PASS {2}statement/, /^PASS {2}fleet +redis:\/\/127\.0\.0\.1:\d+ \(REDIS_URL\) answered$/, /^PASS {2}credentials +client .{4}….{4} from the fleet's store$/, /^PASS {2}token/, /^PASS {2}cmu/])
  t.equal(sandbox.calls.register, 1, 'the fleet registered once, check never')
  t.notMatch(registered.lines.join('\n'), new RegExp(KEY.toString('base64').replace(/[+/]/g, '.')), 'the state key is never printed')
  t.notOk(existsSync(env.CREDENTIALS_FILE ?? ''), 'check wrote no credentials file on this host')

  // An operator tries the next rotation step (NEW,OLD) with check before rolling it out: it reads, and re-seals nothing.
  const raw = await rawRedis(t, redis)
  const credentialsKey = stateNamespace('cmu-proxy:', { softwareStatement: statement }).key('credentials')
  const sealedBefore = await raw.get(credentialsKey)
  const nextStep = await runCheckWith({ ...env, STATE_ENCRYPTION_KEY: `${randomBytes(32).toString('base64')},${KEY.toString('base64')}` })
  t.equal(nextStep.code, 0, nextStep.lines.join('\n'))
  const sealedAfter = await raw.get(credentialsKey)
  t.ok(sealedBefore !== null && sealedAfter !== null && Buffer.from(sealedAfter).equals(Buffer.from(sealedBefore)), 'the fleet\'s sealed credentials are byte for byte what they were')

  const wrongKey = await runCheckWith({ ...env, STATE_ENCRYPTION_KEY: randomBytes(32).toString('base64') })
  t.equal(wrongKey.code, 1)
  t.match(wrongKey.lines.at(-1), /^FAIL {2}credentials +the fleet's client credentials cannot be read: cannot open the sealed value .*STATE_ENCRYPTION_KEY list/, 'another key list is what check catches')

  await redis.kill()
  env.AUTH_TIMEOUT_MS = '500'
  const down = await run()
  t.equal(down.code, 1)
  t.match(down.lines.at(-1), /^FAIL {2}fleet +redis:\/\/127\.0\.0\.1:\d+ \(REDIS_URL\) did not answer within \d+ ms: ECONNREFUSED$/)
})
