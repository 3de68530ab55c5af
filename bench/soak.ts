// The soak/fault run: steady load on the proxy (a real `node dist/main.js`
// process) while the sandbox misbehaves on a schedule: 2 s tokens, the token
// revoked twice, the client revoked once, the token endpoint down for a
// while, and 1% of upstream requests on reused keep-alive connections dropped
// (the proxy retries each once on a fresh connection, which the sandbox never
// drops). Reports what callers saw: nothing of all this should reach them.
import { Pool } from 'undici'
import { Sandbox } from '../src/sandbox/server.js'
import { askAndTally, callerFailures, scheduleFaults, type Tally } from './fault-schedule.js'
import { rssBytes, spawnProxy } from './processes.js'

export interface SoakOptions {
  durationMs: number
  concurrency: number
  /** How long the token endpoint stays down (5 s in the full run). */
  outageMs: number
  dropRate: number
  progress?: (line: string) => void
}

export interface SoakReport {
  durationMs: number
  requests: number
  ok: number
  /** Non-200 answers by "status code" (e.g. "502 CMU_PROXY_UPSTREAM_UNREACHABLE"). */
  failures: Record<string, number>
  /** Every non-200 answer or failed exchange a caller saw. */
  callerFailures: number
  droppedUpstream: number
  /** The proxy's cmu_proxy_upstream_retries_total, by reason. */
  retries: Record<string, number>
  /** The proxy's cmu_proxy_upstream_retry_budget_exhausted_total. */
  retryBudgetExhausted: number
  upstream401s: number
  /** 401s that no revocation explains (each revocation can catch every in-flight request). */
  upstream401sBeyondRevocations: number
  tokenCalls: number
  registerCalls: number
  peakRssMb: number
  /** Least-squares slope of RSS over the second half of the run. */
  rssTrendMbPerMinute: number
  /** RSS at each tenth of the run, to tell a plateau from a leak by eye. */
  rssMbByTenth: number[]
}

const ADMIN_KEY = 'soak-admin-key-0123456789'
const REVOCATIONS = 3 // tokens twice, client once

export async function runSoak (options: SoakOptions): Promise<SoakReport> {
  const progress = options.progress ?? (() => {})
  const sandbox = new Sandbox({ tokenLifetimeSeconds: 2 })
  await sandbox.listen(0, '127.0.0.1')
  const { child, base } = await spawnProxy({
    LOG_LEVEL: 'warn',
    ...sandbox.adobeUrls,
    CACHE_ENABLED: 'false',
    ADMIN_API_KEY: ADMIN_KEY,
    TOKEN_RETRY_BASE_MS: '100',
    TOKEN_RETRY_MAX_MS: '1000'
  })
  const client = new Pool(base, { connections: options.concurrency })
  const admin = async (path: string): Promise<void> => {
    const response = await client.request({ method: 'POST', path, headers: { 'x-api-key': ADMIN_KEY } })
    await response.body.dump()
  }
  const rss: Array<[number, number]> = []
  const tally: Tally = { requests: 0, ok: 0, failures: {} }
  const timers: NodeJS.Timeout[] = []
  try {
    sandbox.dropRate = options.dropRate
    const { started } = scheduleFaults({ sandbox, durationMs: options.durationMs, outageMs: options.outageMs, refreshToken: async () => { await admin('/admin/token/refresh') }, progress, timers })
    const sampler = setInterval(() => { rss.push([Date.now() - started, rssBytes(child.pid) ?? 0]) }, 250)
    timers.push(sampler)

    const until = started + options.durationMs
    await Promise.all(Array.from({ length: options.concurrency }, async () => {
      while (Date.now() < until) await askAndTally(client, '/cmu/v2/year/month?limit=3&start=2026-01&end=2026-03', tally)
    }))
    const metrics = await (await client.request({ method: 'GET', path: '/metrics' })).body.text()
    const retries: Record<string, number> = {}
    for (const [, reason = '', value] of metrics.matchAll(/^cmu_proxy_upstream_retries_total\{reason="(\w+)"\} (\d+)$/gm)) retries[reason] = Number(value)
    const second = rss.filter(([t]) => t >= options.durationMs / 2)
    return {
      durationMs: Date.now() - started,
      ...tally,
      callerFailures: callerFailures(tally),
      droppedUpstream: sandbox.calls.cmuDropped,
      retries,
      retryBudgetExhausted: Number(/^cmu_proxy_upstream_retry_budget_exhausted_total (\d+)$/m.exec(metrics)?.[1] ?? NaN),
      upstream401s: sandbox.calls.cmuUnauthorized,
      upstream401sBeyondRevocations: Math.max(0, sandbox.calls.cmuUnauthorized - REVOCATIONS * options.concurrency),
      tokenCalls: sandbox.calls.token,
      registerCalls: sandbox.calls.register,
      peakRssMb: Math.round(Math.max(0, ...rss.map(([, bytes]) => bytes)) / 1024 / 1024),
      rssTrendMbPerMinute: Math.round(slope(second) * 60_000 / 1024 / 1024 * 100) / 100,
      rssMbByTenth: Array.from({ length: 10 }, (_, i) => {
        const sampleAt = rss.find(([t]) => t >= (options.durationMs * (i + 1)) / 10) ?? rss.at(-1)
        return Math.round((sampleAt?.[1] ?? 0) / 1024 / 1024)
      })
    }
  } finally {
    for (const timer of timers) clearTimeout(timer)
    await client.close()
    await child.stop()
    await sandbox.close()
  }
}

/** Least-squares slope of y over x. */
function slope (points: Array<[number, number]>): number {
  if (points.length < 2) return 0
  const n = points.length
  const meanX = points.reduce((s, [x]) => s + x, 0) / n
  const meanY = points.reduce((s, [, y]) => s + y, 0) / n
  const numerator = points.reduce((s, [x, y]) => s + (x - meanX) * (y - meanY), 0)
  const denominator = points.reduce((s, [x]) => s + (x - meanX) ** 2, 0)
  return denominator === 0 ? 0 : numerator / denominator
}
