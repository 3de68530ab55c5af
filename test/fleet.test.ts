// Fleet mode end to end: several proxies (in-process apps, and real
// processes where one must die) share one real redis-server against the
// sandbox, which counts every call Adobe would see.
import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import type { Sandbox } from '../src/sandbox/server.js'
import { makeSoftwareStatement } from '../src/sandbox/statement.js'
import { call, eventually, startProxy, startSandbox, temporaryDirectory, type ProxyOptions, type RunningProxy } from './helpers.js'
import { join } from 'node:path'
import { startRedisServer, type RedisServer } from './redis-server.js'

const KEY = randomBytes(32).toString('base64')

interface FleetOptions { statement?: string, env?: Record<string, string | undefined>, now?: ProxyOptions['now'] }

/** `n` proxies on one Redis, each with its own (empty) credentials file, sharing one statement. */
async function startFleet (t: Test, sandbox: Sandbox, redis: RedisServer, n: number, options: FleetOptions = {}): Promise<RunningProxy[]> {
  const statement = options.statement ?? makeSoftwareStatement()
  return await Promise.all(Array.from({ length: n }, async () => await startMember(t, sandbox, redis, { ...options, statement })))
}

async function startMember (t: Test, sandbox: Sandbox, redis: RedisServer, options: FleetOptions & { statement: string, credentialsFile?: string }): Promise<RunningProxy> {
  return await startProxy(t, sandbox, {
    statement: options.statement,
    credentialsFile: options.credentialsFile ?? join(temporaryDirectory(t), 'credentials.json'),
    env: { REDIS_URL: redis.url, STATE_ENCRYPTION_KEY: KEY, REDIS_LOCK_TTL_MS: '500', REDIS_COMMAND_TIMEOUT_MS: '200', TOKEN_RETRY_BASE_MS: '50', TOKEN_RETRY_MAX_MS: '500', LOG_LEVEL: 'info', ...options.env },
    ...(options.now === undefined ? {} : { now: options.now })
  })
}

t.test('a cold burst across three instances: one registration, one token call', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const fleet = await startFleet(t, sandbox, redis, 3)
  const answers = await Promise.all(Array.from({ length: 60 }, async (_, i) => await call(fleet[i % 3]?.url ?? '', '/cmu/v2')))
  t.same([...new Set(answers.map((a) => a.status))], [200], 'every caller got its report')
  t.equal(sandbox.calls.register, 1, 'one registration for the fleet')
  t.equal(sandbox.calls.token, 1, 'one token call for the fleet')
})
