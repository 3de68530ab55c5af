// `npm run soak:fleet`: four proxies sharing one Redis under the soak's faults
// (about 60 s, loopback only). FLEET_SOAK_REDIS=off runs the same four alone.
// FLEET_SOAK_SCENARIO=tokens: no faults, 3 s tokens (issue 20): the fleet's
// token calls must stay within 1.2 times one per two thirds of a lifetime.
import { runFleetSoak } from './fleet-soak.js'

const tokens = process.env.FLEET_SOAK_SCENARIO === 'tokens'
const report = await runFleetSoak({
  durationMs: Number(process.env.SOAK_SECONDS ?? 60) * 1000,
  instances: Number(process.env.FLEET_SOAK_INSTANCES ?? 4),
  concurrency: Number(process.env.SOAK_CONCURRENCY ?? 4),
  reports: 20,
  cacheTtlSeconds: 5,
  outageMs: 5_000,
  redisOutageMs: 3_000,
  dropRate: tokens ? 0 : 0.01,
  redis: process.env.FLEET_SOAK_REDIS !== 'off',
  ...(tokens ? { tokenLifetimeSeconds: 3, faults: false } : {}),
  progress: (line) => { process.stderr.write(`${line}\n`) }
})
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
const withinTokens = !tokens || !report.redis || report.tokenCalls <= 1.2 * report.tokenCallsForOneToken
const passed = report.callerFailures === 0 && (!report.redis || report.registrations <= (tokens ? 1 : 2)) && withinTokens
process.stdout.write(passed
  ? `PASS: ${report.requests} requests on ${report.instances} instances, ${report.registrations} registrations, ${report.tokenCalls} token calls (one shared token needs ${report.tokenCallsForOneToken}), ${report.upstreamCallsPerReportPerTtl} upstream calls per report per TTL, no caller-visible failure (${report.droppedUpstream} injected drops, each retried)\n`
  : 'FAIL: see the report above\n')
process.exitCode = passed ? 0 : 1
