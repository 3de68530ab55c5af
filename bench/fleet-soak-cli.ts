// `npm run soak:fleet`: four proxies sharing one Redis under the soak's faults
// (about 60 s, loopback only). FLEET_SOAK_REDIS=off runs the same four alone.
import { runFleetSoak } from './fleet-soak.js'

const report = await runFleetSoak({
  durationMs: Number(process.env.SOAK_SECONDS ?? 60) * 1000,
  instances: Number(process.env.FLEET_SOAK_INSTANCES ?? 4),
  concurrency: Number(process.env.SOAK_CONCURRENCY ?? 4),
  reports: 20,
  cacheTtlSeconds: 5,
  outageMs: 5_000,
  redisOutageMs: 3_000,
  dropRate: 0.01,
  redis: process.env.FLEET_SOAK_REDIS !== 'off',
  progress: (line) => { process.stderr.write(`${line}\n`) }
})
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
const passed = report.callerFailures === 0 && (!report.redis || report.registrations <= 2)
process.stdout.write(passed
  ? `PASS: ${report.requests} requests on ${report.instances} instances, ${report.registrations} registrations, ${report.tokenCalls} token calls, ${report.upstreamCallsPerReportPerTtl} upstream calls per report per TTL, no caller-visible failure (${report.droppedUpstream} injected drops, each retried)\n`
  : 'FAIL: see the report above\n')
process.exitCode = passed ? 0 : 1
