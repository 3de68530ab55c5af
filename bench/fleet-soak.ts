// The fleet soak: four real proxy processes sharing one redis-server, under
// the soak's fault schedule (2 s tokens, tokens revoked twice, the client
// revoked once, the token endpoint down for a while, 1% of upstream
// connections dropped) plus a Redis outage that ends with an empty Redis.
// Traffic spreads a pool of reports over every instance with a short cache
// TTL, so reports are refetched all along. Reports what Adobe saw for the
// whole fleet: registrations, token calls, upstream calls per report.
// With `redis: false` the same four run alone, for comparison.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { Pool } from 'undici'
import { Sandbox } from '../src/sandbox/server.js'
import { makeSoftwareStatement } from '../src/sandbox/statement.js'
import { askAndTally, callerFailures, scheduleFaults, type Tally } from './fault-schedule.js'
import { freePort, spawnProxy, startProcess, type Started } from './processes.js'

export interface FleetSoakOptions {
  durationMs: number
  instances: number
  /** Concurrent callers per instance. */
  concurrency: number
  /** Distinct reports in the pool. */
  reports: number
  /** CACHE_TTL_MAX_SECONDS: how often each report is fetched again. */
  cacheTtlSeconds: number
  outageMs: number
  redisOutageMs: number
  dropRate: number
  /** False: the same instances without Redis, each on its own. */
  redis: boolean
  /** The sandbox's token lifetime (2 s under the fault schedule). */
  tokenLifetimeSeconds?: number
  /** False: no fault schedule, no Redis outage (the token-sharing measure of issue 20). */
  faults?: boolean
  progress?: (line: string) => void
}

/** What callers saw (Tally), and what Adobe saw for the whole fleet. */
export interface FleetSoakReport extends Tally {
  instances: number
  redis: boolean
  durationMs: number
  /** Every non-200 answer or failed exchange a caller saw: dropped connections are retried, so none. */
  callerFailures: number
  droppedUpstream: number
  registrations: number
  tokenCalls: number
  /** One token call per two thirds of a token's lifetime, for the whole run: what a fleet sharing one token needs. */
  tokenCallsForOneToken: number
  upstreamCalls: number
  /** Upstream calls per report per cache TTL: 1 when the fleet shares one cache, up to `instances` when not. */
  upstreamCallsPerReportPerTtl: number
  stats: { requestsPerSecond: number }
}

const ADMIN_KEY = 'fleet-soak-admin-key-0123456789'

export async function runFleetSoak (options: FleetSoakOptions): Promise<FleetSoakReport> {
  const progress = options.progress ?? (() => {})
  const tokenLifetimeSeconds = options.tokenLifetimeSeconds ?? 2
  const faults = options.faults ?? true
  const sandbox = new Sandbox({ tokenLifetimeSeconds })
  await sandbox.listen(0, '127.0.0.1')
  const redis = options.redis ? await startRedis() : undefined
  const statement = makeSoftwareStatement()
  const env: Record<string, string> = {
    LOG_LEVEL: 'warn',
    ADOBE_SOFTWARE_STATEMENT: statement,
    ...sandbox.adobeUrls,
    CACHE_ENABLED: 'true',
    CACHE_TTL_MAX_SECONDS: String(options.cacheTtlSeconds),
    CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0',
    ADMIN_API_KEY: ADMIN_KEY,
    TOKEN_RETRY_BASE_MS: '100',
    TOKEN_RETRY_MAX_MS: '1000',
    ...(redis === undefined ? {} : { REDIS_URL: redis.url, STATE_ENCRYPTION_KEY: randomBytes(32).toString('base64'), REDIS_LOCK_TTL_MS: '1000' })
  }
  // Started one after another, as a rollout would; every one cold, with an empty credentials file.
  const proxies: Array<{ child: Started['child'], base: string }> = []
  const pools: Pool[] = []
  const timers: NodeJS.Timeout[] = []
  const tally: Tally = { requests: 0, ok: 0, failures: {} }
  try {
    for (let i = 0; i < options.instances; i++) proxies.push(await spawnProxy(env))
    for (const { base } of proxies) pools.push(new Pool(base, { connections: options.concurrency }))
    const admin = async (path: string): Promise<void> => {
      const response = await pools[0]?.request({ method: 'POST', path, headers: { 'x-api-key': ADMIN_KEY } })
      await response?.body.dump()
    }
    sandbox.dropRate = options.dropRate
    const { started, at } = faults
      ? scheduleFaults({ sandbox, durationMs: options.durationMs, outageMs: options.outageMs, refreshToken: async () => { await admin('/admin/token/refresh').catch(() => {}) }, progress, timers })
      : { started: Date.now(), at: () => {} }
    if (redis !== undefined) {
      at(0.75, `redis killed for ${options.redisOutageMs / 1000} s`, async () => {
        await redis.stop()
        timers.push(setTimeout(() => { progress('redis back, empty'); void redis.start() }, options.redisOutageMs))
      })
    }

    const until = started + options.durationMs
    await Promise.all(pools.flatMap((pool, instance) => Array.from({ length: options.concurrency }, async (_, worker) => {
      let n = instance * 7 + worker
      while (Date.now() < until) {
        const report = (n++ % options.reports) + 1
        await askAndTally(pool, `/cmu/v2/year/month?limit=${report}&start=2026-01&end=2026-03`, tally)
      }
    })))
    const durationMs = Date.now() - started
    const droppedUpstream = sandbox.calls.cmuDropped
    const windows = Math.ceil(durationMs / 1000 / options.cacheTtlSeconds)
    return {
      instances: options.instances,
      redis: options.redis,
      durationMs,
      ...tally,
      callerFailures: callerFailures(tally),
      droppedUpstream,
      registrations: sandbox.calls.register,
      tokenCalls: sandbox.calls.token,
      tokenCallsForOneToken: Math.round(durationMs / (tokenLifetimeSeconds * 1000 * 2 / 3) * 10) / 10,
      upstreamCalls: sandbox.calls.cmu,
      upstreamCallsPerReportPerTtl: Math.round(sandbox.calls.cmu / (options.reports * windows) * 100) / 100,
      stats: { requestsPerSecond: Math.round(tally.requests / (durationMs / 1000)) }
    }
  } finally {
    for (const timer of timers) clearTimeout(timer)
    await Promise.all(pools.map(async (pool) => { await pool.close() }))
    await Promise.all(proxies.map(async ({ child }) => await child.stop()))
    await redis?.dispose()
    await sandbox.close()
  }
}

/** A throwaway redis-server on a free loopback port, nothing persisted, so it comes back empty. */
async function startRedis (): Promise<{ url: string, stop: () => Promise<void>, start: () => Promise<void>, dispose: () => Promise<void> }> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'cmu-proxy-fleet-soak-'))
  let server: Started | undefined
  const start = async (): Promise<void> => {
    server = await startProcess('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { ready: /Ready to accept connections/ })
  }
  await start()
  const stop = async (): Promise<void> => { await server?.child.stop('SIGKILL') }
  return {
    url: `redis://127.0.0.1:${port}`,
    start,
    stop,
    dispose: async () => {
      await stop()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
