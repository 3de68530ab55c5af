// Issue 20, D3 end to end: a pod with another STATE_ENCRYPTION_KEY list next
// to three good pods on one real redis-server. It is not a member: it takes
// no lock and publishes nothing, so the good pods never wait on it; it is
// not ready, and its callers get a 503 at once.
import { randomBytes } from 'node:crypto'
import { copyFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { allAnswerOk, fleetOf, lockAttempts, member, statuses, storeOperations } from '../helpers/fleet.js'
import { assertProblem, call, eventually, startSandbox, temporaryDirectory, whenInFlight } from '../helpers/app.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { heldAnswer } from '../../src/sandbox/faults.js'

const REPORTS = 5
const CALLERS_PER_POD = 4

function p99 (durations: number[]): number {
  const sorted = [...durations].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)] ?? 0
}

t.test('a wrong-key pod asking for the same cold reports as three good pods: the good ones stay fast and make one call per report; it is not ready', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const env = { CACHE_ENABLED: 'true' }
  const good = await fleetOf(t, sandbox, redis, 3, env)
  t.ok(await allAnswerOk(good, '/readyz'), 'the good pods are ready')
  // With a credentials file (a copy of a good pod's), as in the issue: it could get tokens and fetch on its own.
  const credentialsFile = join(temporaryDirectory(t), 'credentials.json')
  t.ok(await eventually(() => existsSync(good[0]?.credentialsFile ?? '')), 'a good pod keeps its credentials file')
  copyFileSync(good[0]?.credentialsFile ?? '', credentialsFile)
  const wrong = await member(t, sandbox, redis, { statement: good[0]?.statement ?? '', credentialsFile, env: { ...env, STATE_ENCRYPTION_KEY: randomBytes(32).toString('base64') } })

  const ready = await call(wrong.url, '/readyz')
  t.equal(ready.status, 503, 'the wrong-key pod is not ready')
  t.match(ready.json(), { status: 'not_ready', code: 'CMU_PROXY_FLEET_KEY_MISMATCH', reason: 'fleet_key_mismatch' })

  // Adobe holds every answer until all the good pods' callers are in flight: they overlap for sure.
  const adobe = heldAnswer()
  t.teardown(adobe.release)
  sandbox.faults.failNext('cmu', Infinity, { until: adobe.until })
  const paths = Array.from({ length: REPORTS }, (_, i) => `/cmu/v2/year/month?limit=${i + 1}`)
  const timed = async (url: string, path: string): Promise<{ status: number, ms: number, answer: Awaited<ReturnType<typeof call>> }> => {
    const started = performance.now()
    const answer = await call(url, path)
    return { status: answer.status, ms: performance.now() - started, answer }
  }
  // The wrong-key pod asks first, so that without membership it would be the one holding the reports' locks.
  const refusing = Promise.all(paths.flatMap((path) => Array.from({ length: CALLERS_PER_POD }, async () => await timed(wrong.url, path))))
  await Promise.race([refusing, whenInFlight(wrong.url, REPORTS * CALLERS_PER_POD)])
  const goodAnswers = Promise.all(good.flatMap((pod) => paths.flatMap((path) => Array.from({ length: CALLERS_PER_POD }, async () => await timed(pod.url, path)))))
  t.ok(await Promise.all(good.map(async (pod) => await whenInFlight(pod.url, REPORTS * CALLERS_PER_POD))).then((all) => all.every(Boolean)), 'every good caller is in flight')
  adobe.release()
  const answered = await goodAnswers
  const refused = await refusing

  t.same(statuses(answered), [200], 'every good caller got its report')
  const slowest = p99(answered.map((a) => a.ms))
  t.ok(slowest < 1_500, `good pods' p99 ${Math.round(slowest)} ms (Adobe held the answers until all were in flight)`)
  t.ok(sandbox.calls.cmu <= REPORTS, `${sandbox.calls.cmu} Adobe calls for ${REPORTS} reports`)

  for (const { answer } of refused.slice(0, 2)) assertProblem(t, answer, 503, 'CMU_PROXY_FLEET_KEY_MISMATCH')
  t.same(statuses(refused), [503], 'each of its callers refused')
  t.ok(refused.every((a) => a.ms < 1_000), `at once: slowest ${Math.round(Math.max(...refused.map((a) => a.ms)))} ms`)
  t.equal(await lockAttempts(wrong), 0, 'it took no fleet lock')
  t.equal(await storeOperations(wrong, 'publish'), 0, 'published nothing')
  t.equal(await storeOperations(wrong, 'set') + await storeOperations(wrong, 'setIfAbsent') + await storeOperations(wrong, 'replaceIf'), 0, 'and wrote nothing')
  const unsealable = wrong.logs.filter((l) => l.includes('"code":"CMU_PROXY_STATE_UNSEALABLE"'))
  t.equal(unsealable.length, 1, 'one log line says why, with its code')
  t.equal(sandbox.calls.register, 1, 'no second client')
  t.equal(sandbox.calls.token, 1, 'and no token call by the wrong-key pod')
  t.ok(await eventually(async () => (await call(good[0]?.url ?? '', '/readyz')).status === 200), 'the good pods stay ready')
})
