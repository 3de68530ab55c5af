// Fleet mode end to end: several proxies share one real redis-server against
// the sandbox, which counts every call Adobe would see. Most members are
// in-process apps (fast, inspectable); one that must die mid-call is a real
// `node dist/main.js` process, killed with SIGKILL.
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import t from 'tap'
import { spawnProxy } from '../../bench/processes.js'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { stateKey } from '../../src/store/encryption-keys.js'
import { stateNamespace } from '../../src/store/namespace.js'
import { ADMIN, allAnswerOk, fleetEnv, fleetOf, KEY, lockAttempts, member, rawRedis, SHORT_COMMAND_TIMEOUT_MS, SHORT_LOCK_TTL_MS, SHORT_TIMINGS, statuses, urlOf, waitingOnLock } from '../helpers/fleet.js'
import { assertProblem, call, eventually, startSandbox } from '../helpers/app.js'
import { startRedisServer } from '../helpers/redis-server.js'

t.test('three instances starting together with empty credentials files: one registration, one token call, then a burst served', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const fleet = await fleetOf(t, sandbox, redis, 3)
  const answers = await Promise.all(Array.from({ length: 60 }, async (_, i) => await call(urlOf(fleet, i), '/cmu/v2')))
  t.same(statuses(answers), [200], 'every caller got its report')
  t.equal(sandbox.calls.register, 1, 'one registration for the fleet')
  t.equal(sandbox.calls.token, 1, 'one token call for the fleet')
  t.same(fleet.map((p) => p.app.broker.status().counts.tokensFromFleet).sort(), [0, 1, 1], 'two instances took the token from the fleet')
})

t.test('restarted instances with empty credentials files make no registration and no token call', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const first = await fleetOf(t, sandbox, redis, 3)
  t.equal((await call(urlOf(first, 0), '/cmu/v2')).status, 200)
  await Promise.all(first.map(async (p) => { await p.close() }))
  const restarted = await fleetOf(t, sandbox, redis, 3, {}, first[0]?.statement)
  t.same(statuses(await Promise.all(restarted.map(async (p) => await call(p.url, '/cmu/v2')))), [200])
  t.equal(sandbox.calls.register, 1, 'no registration')
  t.equal(sandbox.calls.token, 1, 'no token call')
  for (const p of restarted) {
    t.ok(await eventually(() => { try { return JSON.parse(readFileSync(p.credentialsFile, 'utf8')).client_id !== undefined } catch { return false } }, 2_000), 'each keeps a durable local copy')
  }
})

t.test('one report asked of every instance: one upstream call, the same bytes everywhere', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const fleet = await fleetOf(t, sandbox, redis, 3, { CACHE_ENABLED: 'true' })
  const answers = []
  for (const p of fleet) answers.push(await call(p.url, '/cmu/v2/year/month.csv'))
  t.equal(sandbox.calls.cmu, 1, 'one upstream call')
  t.same(answers.map((a) => a.headers['x-cache']), ['MISS', 'HIT', 'HIT'], 'the others hit the shared cache')
  t.same(answers.map((a) => a.text), [answers[0]?.text, answers[0]?.text, answers[0]?.text], 'exact bytes')
  t.same(answers.map((a) => a.headers['content-disposition']), Array(3).fill(answers[0]?.headers['content-disposition']), 'and headers')
})

t.test('identical concurrent cold misses across the fleet: one upstream call', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const fleet = await fleetOf(t, sandbox, redis, 3, { CACHE_ENABLED: 'true' })
  t.ok(await allAnswerOk(fleet, '/readyz'))
  sandbox.faults.failNext('cmu', 1, { delayMs: 300 })
  const answers = await Promise.all(Array.from({ length: 12 }, async (_, i) => await call(urlOf(fleet, i), '/cmu/v2/year/month/day?start=2026-01-01')))
  t.same(statuses(answers), [200])
  t.equal(sandbox.calls.cmu, 1, 'one upstream call for twelve callers on three instances')
  t.equal(new Set(answers.map((a) => a.text)).size, 1, 'all the same report')
})

t.test('Adobe fails the instance that asked for the fleet: the others are told and do not ask again', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const fleet = await fleetOf(t, sandbox, redis, 3, { CACHE_ENABLED: 'true' })
  t.ok(await allAnswerOk(fleet, '/readyz'))
  // Adobe fails only once the others have found the lock taken and wait on it.
  const adobe = heldAnswer()
  t.teardown(adobe.release)
  sandbox.faults.failNext('cmu', 1, { status: 503, until: adobe.until, headers: { 'retry-after': '20' } })
  const path = '/cmu/v2/year/month/day?start=2026-02-01'
  const leader = call(urlOf(fleet, 0), path)
  t.ok(await eventually(() => sandbox.calls.cmu === 1, 2_000), 'the first instance is asking Adobe')
  const waiters = fleet.slice(1)
  const before = await Promise.all(waiters.map(lockAttempts))
  const others = Promise.all(waiters.map(async (p) => await call(p.url, path)))
  t.ok(await waitingOnLock(waiters, before), 'the others found the lock taken')
  adobe.release()
  t.equal((await leader).status, 503, "the one that asked gets Adobe's answer")
  t.equal(sandbox.calls.cmu, 1, 'one upstream call for the fleet, not one per instance')
  for (const answer of await others) {
    assertProblem(t, answer, 503, 'CMU_PROXY_UPSTREAM_FAILING')
    t.match(answer.headers['retry-after'], /^(19|20)$/, "with Adobe's Retry-After, counted from when it answered")
  }
  const again = await call(urlOf(fleet, 1), path)
  assertProblem(t, again, 503, 'CMU_PROXY_UPSTREAM_FAILING')
  t.equal(sandbox.calls.cmu, 1, 'an instance that was told does not ask again before the Retry-After, even with no copy to serve')
})

t.test('Adobe revokes the client (invalid_client): the fleet re-registers once, not once per instance', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const fleet = await fleetOf(t, sandbox, redis, 3)
  t.same(statuses(await Promise.all(fleet.map(async (p) => await call(p.url, '/cmu/v2')))), [200])
  t.equal(sandbox.calls.register, 1)
  sandbox.dcr.revokeClients()
  const answers = await Promise.all(Array.from({ length: 9 }, async (_, i) => await call(urlOf(fleet, i), '/cmu/v2')))
  t.ok(await allAnswerOk(fleet, '/cmu/v2', 5_000), 'every instance serves again')
  t.equal(sandbox.calls.register, 2, 'one re-registration for the fleet')
  t.ok(answers.filter((a) => a.status === 200).length >= 1, 'callers during the switch were served, or told why')
  for (const answer of answers.filter((a) => a.status !== 200)) t.match(answer.headers['content-type'], /^application\/problem\+json/)
})

t.test('stale-while-revalidate across the fleet: expired entries are served at once, and one instance refreshes', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  // One clock for the three members, moved by the test: a two-second TTL expires without a sleep;
  // thirty seconds in which a stale copy is served while refreshing.
  let clock = Date.now()
  const statement = makeSoftwareStatement()
  const env = { CACHE_ENABLED: 'true', CACHE_TTL_MAX_SECONDS: '2', CACHE_STALE_WHILE_REVALIDATE_SECONDS: '30' }
  const fleet = await Promise.all([0, 1, 2].map(async () => await member(t, sandbox, redis, { statement, env, now: () => clock })))
  const path = '/cmu/v2/year/month.csv'
  t.equal((await call(urlOf(fleet, 0), path)).headers['x-cache'], 'MISS')
  t.equal((await call(urlOf(fleet, 1), path)).headers['x-cache'], 'HIT', 'shared')
  clock += 2_100
  // Adobe answers the refresh only once every instance has answered: they cannot have waited for it.
  const adobe = heldAnswer()
  t.teardown(adobe.release)
  sandbox.faults.failNext('cmu', 1, { until: adobe.until })
  const answers = await Promise.all(fleet.map(async (p) => await call(p.url, path)))
  t.same(answers.map((a) => a.headers['x-cache']), ['STALE', 'STALE', 'STALE'], 'every instance answered at once from the stale copy')
  adobe.release()
  t.ok(await eventually(async () => (await call(urlOf(fleet, 2), path)).headers['x-cache'] === 'HIT', 2_000), 'the refreshed copy reaches the others')
  t.equal(sandbox.calls.cmu, 2, 'one refresh at Adobe for the fleet')
})

t.test('a revoked token: at most two token calls fleet-wide, and no caller sees a failure', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const fleet = await fleetOf(t, sandbox, redis, 3)
  t.same(statuses(await Promise.all(fleet.map(async (p) => await call(p.url, '/cmu/v2')))), [200])
  const before = sandbox.calls.token
  sandbox.dcr.revokeTokens()
  const answers = await Promise.all(Array.from({ length: 30 }, async (_, i) => await call(urlOf(fleet, i), '/cmu/v2')))
  t.same(statuses(answers), [200], 'every caller got its report')
  t.ok(sandbox.calls.token - before <= 2, `${sandbox.calls.token - before} token call(s) after the revocation`)
  t.ok(sandbox.calls.cmuUnauthorized > 0, 'the revocation was seen')
})

t.test('short-lived tokens under traffic are shared, not fetched per instance', async (t) => {
  const sandbox = await startSandbox(t, { tokenLifetimeSeconds: 2 })
  const redis = await startRedisServer(t)
  const fleet = await fleetOf(t, sandbox, redis, 3, { TOKEN_REFRESH_MARGIN_SECONDS: '0' })
  const until = Date.now() + 3_000
  const seen: number[] = []
  await Promise.all(Array.from({ length: 6 }, async (_, i) => {
    while (Date.now() < until) seen.push((await call(urlOf(fleet, i), '/cmu/v2')).status)
  }))
  t.same([...new Set(seen)], [200], `${seen.length} requests, all answered`)
  // Refreshed at about 2/3 of 2 s: one instance alone makes about 3 calls in 3 s; three on their own, 9.
  t.ok(sandbox.calls.token <= 4, `${sandbox.calls.token} token calls in 3 s for three instances`)
  t.equal(sandbox.calls.cmuUnauthorized, 0, 'no expired token was sent')
})

t.test('the lock holder is killed mid-refresh: another instance takes over after the lock TTL', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const statement = makeSoftwareStatement()
  const holder = await spawnProxy({ ...fleetEnv(redis, SHORT_TIMINGS), ADOBE_SOFTWARE_STATEMENT: statement, ...sandbox.adobeUrls, CACHE_ENABLED: 'false' })
  t.teardown(async () => { await holder.child.stop('SIGKILL') })
  const [b, c] = await fleetOf(t, sandbox, redis, 2, SHORT_TIMINGS, statement)
  t.ok(await eventually(() => b?.app.broker.status().ready === true && c?.app.broker.status().ready === true, 2_000), 'the others took its token')
  t.equal(sandbox.calls.token, 1)

  sandbox.faults.failNext('token', 1, { hang: true })
  void fetch(`${holder.base}/admin/token/refresh`, { method: 'POST', headers: { 'x-api-key': ADMIN } }).catch(() => {})
  t.ok(await eventually(() => sandbox.calls.token === 2, 2_000), 'the holder is in its token call, holding the lock')
  await holder.child.stop('SIGKILL')

  const started = performance.now()
  await b?.app.broker.refreshNow()
  const elapsed = performance.now() - started
  t.ok(elapsed < SHORT_LOCK_TTL_MS * 3, `took over in ${Math.round(elapsed)} ms, after the dead holder's lock expired`)
  t.equal(sandbox.calls.token, 3, 'one token call by the instance that took over')
  t.ok(await eventually(() => c?.app.broker.status().counts.tokensFromFleet === 2, 2_000), 'and the third instance took that token')
  t.equal((await call(c?.url ?? '', '/cmu/v2')).status, 200)
})

t.test('a token call slower than the lock TTL: still one token call (the holder keeps its lock alive)', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  sandbox.faults.failNext('token', 1, { delayMs: SHORT_LOCK_TTL_MS * 3 })
  const fleet = await fleetOf(t, sandbox, redis, 3, SHORT_TIMINGS)
  const answers = await Promise.all(Array.from({ length: 15 }, async (_, i) => await call(urlOf(fleet, i), '/cmu/v2')))
  t.same(statuses(answers), [200])
  t.equal(sandbox.calls.token, 1, 'one token call though it took three lock TTLs')
  t.equal(sandbox.calls.register, 1)
})

t.test('Redis killed under traffic: no caller sees a failure; it returns empty and nothing re-registers', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const raw = await rawRedis(t, redis)
  const fleet = await fleetOf(t, sandbox, redis, 3, { CACHE_ENABLED: 'true', RATE_LIMIT: '100000/minute' })
  t.same(statuses(await Promise.all(fleet.map(async (p) => await call(p.url, '/cmu/v2')))), [200])
  const statement = fleet[0]?.statement ?? ''
  const seen: number[] = []
  let n = 0
  const traffic = Promise.all(Array.from({ length: 6 }, async (_, i) => {
    const until = Date.now() + 2_000
    while (Date.now() < until) seen.push((await call(urlOf(fleet, i), `/cmu/v2/year/month?limit=${++n}`)).status)
  }))
  await new Promise((resolve) => setTimeout(resolve, 400))
  await redis.kill()
  t.ok(await eventually(async () => (await call(urlOf(fleet, 0), '/metrics')).text.includes('cmu_proxy_redis_up 0'), 2_000), 'reported down')
  t.equal((await call(urlOf(fleet, 1), '/readyz')).status, 200, 'still ready: a token is held')
  await new Promise((resolve) => setTimeout(resolve, 400))
  await redis.restart()
  await traffic
  t.same([...new Set(seen)], [200], `${seen.length} requests across the outage, all answered`)

  const ns = stateNamespace('cmu-proxy:', { softwareStatement: statement })
  await raw.connect().catch(() => {})
  t.ok(await eventually(async () => await raw.exists([ns.key('credentials'), ns.key('token')]).catch(() => 0) === 2, 4_000), 'the instances put the credentials and the token back')
  const newcomer = await member(t, sandbox, redis, { statement })
  t.equal((await call(newcomer.url, '/cmu/v2')).status, 200)
  t.equal(sandbox.calls.register, 1, 'nothing re-registered')
  t.equal(sandbox.calls.token, 1, 'nor fetched another token')
})

t.test('a frozen Redis: each request waits at most one command timeout, then none', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const [proxy] = await fleetOf(t, sandbox, redis, 1, { CACHE_ENABLED: 'true', RATE_LIMIT: '100000/minute', ...SHORT_TIMINGS })
  t.equal((await call(proxy?.url ?? '', '/cmu/v2')).status, 200)
  redis.pause()
  t.teardown(() => { redis.resume() })
  const durations: number[] = []
  for (let i = 0; i < 8; i++) {
    const started = performance.now()
    t.equal((await call(proxy?.url ?? '', `/cmu/v2/year?limit=${i + 1}`)).status, 200)
    durations.push(performance.now() - started)
  }
  t.ok(durations.every((d) => d < SHORT_COMMAND_TIMEOUT_MS + 300), `no request waited more than one timeout (its rate-limit count and its cache lookup both ask Redis): ${durations.map(Math.round).join(', ')} ms`)
  // A request that waited on Redis took at least one command timeout; one that did not takes a few ms (more on a loaded machine).
  t.ok(durations.slice(3).every((d) => d < SHORT_COMMAND_TIMEOUT_MS), 'once Redis counts as down, none waits at all')
  redis.resume()
})

t.test('what reaches Redis is sealed: no client secret, token, statement or report in the raw values', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const raw = await rawRedis(t, redis)
  const fleet = await fleetOf(t, sandbox, redis, 2, { CACHE_ENABLED: 'true', RATE_LIMIT: '100/minute' })
  const report = await call(urlOf(fleet, 0), '/cmu/v2/year/month.csv')
  t.equal(report.status, 200)
  t.equal((await call(urlOf(fleet, 1), '/cmu/v2/year/month.csv')).headers['x-cache'], 'HIT')
  const registered = fleet.map((p) => { try { return JSON.parse(readFileSync(p.credentialsFile, 'utf8')) as { client_secret: string } } catch { return undefined } }).find(Boolean)
  const secrets = [
    registered?.client_secret ?? '',
    ...sandbox.dcr.issued.map((i) => i.token),
    fleet[0]?.statement ?? '',
    report.text.split('\n')[1] ?? ''
  ]
  t.ok(secrets.every((s) => s.length > 8), 'found what to look for')
  const keys = await raw.keys('*')
  t.ok(keys.length >= 4, `${keys.length} keys`)
  const prefix = stateNamespace('cmu-proxy:', { softwareStatement: fleet[0]?.statement ?? '' }).base
  for (const key of keys) {
    t.ok(key.toString().startsWith(prefix), `${key.toString()} is namespaced`)
    if (await raw.type(key) !== 'string') continue
    const value = await raw.get(key) ?? Buffer.alloc(0)
    for (const secret of secrets) {
      for (const form of [secret, Buffer.from(secret).toString('base64'), Buffer.from(secret).toString('hex')]) {
        t.notOk(value.includes(form.slice(0, 24)), `${key.toString()} holds no secret`)
      }
    }
  }
  const status = await call(urlOf(fleet, 0), '/admin/status', { headers: { 'x-api-key': ADMIN } })
  t.match(status.json().state, { backend: 'redis', up: true, redis: `redis://127.0.0.1:${redis.port}`, keyPrefix: prefix })
  for (const secret of secrets.slice(0, 3)) t.notOk(status.text.includes(secret), '/admin/status shows no secret')
  for (const p of fleet) for (const secret of secrets.slice(0, 3)) t.notOk(p.logs.join('\n').includes(secret), 'nor do the logs')
  const metrics = (await call(urlOf(fleet, 0), '/metrics')).text
  t.match(metrics, /^cmu_proxy_redis_up 1$/m)
  t.match(metrics, /^cmu_proxy_redis_operation_duration_seconds_count\{operation="get"\} [1-9]/m, 'latency histogram')
  t.match(metrics, /^cmu_proxy_redis_errors_total 0$/m)
})

t.test('the wrong encryption key: not a member, a clear error at once, and no registration', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const [first] = await fleetOf(t, sandbox, redis, 1)
  t.equal((await call(first?.url ?? '', '/cmu/v2')).status, 200)
  const stranger = await member(t, sandbox, redis, { statement: first?.statement ?? '', env: { STATE_ENCRYPTION_KEY: randomBytes(32).toString('hex') } })
  const refused = await call(stranger.url, '/cmu/v2')
  assertProblem(t, refused, 503, 'CMU_PROXY_FLEET_KEY_MISMATCH')
  t.ok(Number(refused.headers['retry-after']) > 0, 'with Retry-After')
  const ready = await call(stranger.url, '/readyz')
  t.equal(ready.status, 503)
  t.match(ready.json(), { status: 'not_ready', code: 'CMU_PROXY_FLEET_KEY_MISMATCH', reason: 'fleet_key_mismatch' })
  t.match(ready.json().detail, /sealed with a key that is not in STATE_ENCRYPTION_KEY \(key id [0-9a-f]{16}\)/, 'says which variable and which key')
  const unsealable = stranger.logs.filter((l) => l.includes('"code":"CMU_PROXY_STATE_UNSEALABLE"'))
  t.equal(unsealable.length, 1, 'and logs it once, with its code')
  t.equal(sandbox.calls.register, 1, 'it did not register a second client')
  t.equal(sandbox.calls.token, 1, 'nor fetch a token')
})

t.test('a two-phase key rotation during rolling restarts: old and new instances coexist without a registration or a token call', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const raw = await rawRedis(t, redis)
  const [first] = await fleetOf(t, sandbox, redis, 1)
  const statement = first?.statement ?? ''
  t.equal((await call(first?.url ?? '', '/cmu/v2')).status, 200)
  const newKey = randomBytes(32)
  const OLD = KEY.toString('base64')
  const NEW = newKey.toString('base64')
  const credentialsKey = stateNamespace('cmu-proxy:', { softwareStatement: statement }).key('credentials')
  const sealedWith = async (): Promise<string | undefined> => (await raw.get(credentialsKey))?.subarray(1, 9).toString('hex')

  // Phase 1: OLD,NEW starts beside instances that know only OLD.
  const phase1 = await member(t, sandbox, redis, { statement, env: { STATE_ENCRYPTION_KEY: `${OLD},${NEW}` } })
  t.equal((await call(phase1.url, '/cmu/v2')).status, 200)
  t.equal(await sealedWith(), stateKey(KEY).id.toString('hex'), 'phase 1 leaves the credentials sealed with OLD')
  const oldNewcomer = await member(t, sandbox, redis, { statement })
  t.equal((await call(oldNewcomer.url, '/cmu/v2')).status, 200, 'an instance that knows only OLD still starts from the fleet')

  // Phase 2: NEW,OLD starts beside phase-1 instances.
  const phase2 = await member(t, sandbox, redis, { statement, env: { STATE_ENCRYPTION_KEY: `${NEW},${OLD}` } })
  t.equal((await call(phase2.url, '/cmu/v2')).status, 200)
  t.ok(await eventually(async () => await sealedWith() === stateKey(newKey).id.toString('hex'), 2_000), 'phase 2 re-seals the credentials with NEW')
  const phase1Newcomer = await member(t, sandbox, redis, { statement, env: { STATE_ENCRYPTION_KEY: `${OLD},${NEW}` } })
  t.equal((await call(phase1Newcomer.url, '/cmu/v2')).status, 200, 'a phase-1 instance starting now opens what NEW sealed')

  t.equal(sandbox.calls.register, 1, 'no registration through the rotation')
  t.equal(sandbox.calls.token, 1, 'nor a token call: every instance opened the shared token')
})

t.test('with Redis, the rate limit holds across two instances', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const fleet = await fleetOf(t, sandbox, redis, 2, { RATE_LIMIT: '10/minute' })
  const answers = []
  for (let i = 0; i < 10; i++) answers.push(await call(urlOf(fleet, i), '/cmu/v2'))
  t.same(statuses(answers), [200], 'ten allowed, spread over two instances')
  const limited = await call(urlOf(fleet, 0), '/cmu/v2')
  assertProblem(t, limited, 429, 'CMU_PROXY_RATE_LIMITED')
  t.equal(limited.headers['ratelimit-remaining'], '0')
  t.ok(Number(limited.headers['retry-after']) > 0)
  t.equal((await call(urlOf(fleet, 1), '/cmu/v2')).status, 429, 'on the other instance too')
  t.equal(sandbox.calls.cmu, 10, 'Adobe saw only the allowed requests')
})

t.test('the token endpoint down on a cold fleet: callers get the failure shared, not a call each', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  sandbox.faults.failNext('token', Infinity, { status: 503, body: 'Service Unavailable' })
  const fleet = await fleetOf(t, sandbox, redis, 3, { TOKEN_RETRY_BASE_MS: '1000', TOKEN_RETRY_MAX_MS: '2000' })
  const answers = await Promise.all(Array.from({ length: 30 }, async (_, i) => await call(urlOf(fleet, i), '/cmu/v2')))
  for (const answer of answers.slice(0, 3)) assertProblem(t, answer, 503, 'CMU_PROXY_TOKEN_ENDPOINT_ERROR')
  t.same(statuses(answers), [503])
  t.ok(sandbox.calls.token <= 3, `${sandbox.calls.token} token calls for 30 callers on three instances`)
  t.equal(sandbox.calls.register, 1)
  sandbox.faults.clear()
  t.ok(await allAnswerOk(fleet, '/readyz', 5_000), 'all recover')
})

t.test('Redis down at start and no credentials file: no registration until Redis can be asked', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  await redis.kill()
  const [proxy] = await fleetOf(t, sandbox, redis, 1)
  t.ok(await eventually(async () => (await call(proxy?.url ?? '', '/readyz')).json().code === 'CMU_PROXY_NOT_REGISTERED', 3_000), 'not ready, and says why')
  const ready = await call(proxy?.url ?? '', '/readyz')
  t.equal(ready.status, 503)
  const fixed = 'No access token is available: no client credentials are held here and the fleet\'s state store cannot be read; not registering while another instance may hold them'
  t.equal(`No access token is available: ${String(ready.json().reason)}`, fixed, 'a fixed sentence: no Redis error text (host, port, ACL user) in /readyz')
  const refused = await call(proxy?.url ?? '', '/cmu/v2')
  t.equal(refused.json().detail, fixed, 'nor in a caller\'s 503')
  t.notMatch(refused.text + ready.text, String(redis.port), 'Redis\'s port appears in neither')
  t.ok(proxy?.logs.some((line) => /could not obtain an access token/.test(line) && /"reason":"[^"]+"/.test(line)), 'the log line keeps the store\'s own reason')
  t.equal(sandbox.calls.register, 0, 'it did not guess')
  await redis.restart()
  t.ok(await eventually(async () => (await call(proxy?.url ?? '', '/readyz')).status === 200, 5_000), 'ready once Redis answers (and holds no credentials)')
  t.equal(sandbox.calls.register, 1)
})
