// `npm run soak`: the full fault run (about 60 s, loopback only).
import { runSoak } from './soak.js'

const durationMs = Number(process.env.SOAK_SECONDS ?? 60) * 1000
const report = await runSoak({
  durationMs,
  concurrency: Number(process.env.SOAK_CONCURRENCY ?? 16),
  outageMs: 5_000,
  dropRate: 0.01,
  progress: (line) => { process.stderr.write(`${line}\n`) }
})
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
const passed = report.callerFailures === 0 && report.upstream401sBeyondRevocations === 0 && report.peakRssMb < 150
const retried = Object.values(report.retries).reduce((n, v) => n + v, 0)
process.stdout.write(passed
  ? `PASS: ${report.requests} requests, no caller-visible failure; ${report.droppedUpstream} injected drops, ${retried} retries, budget exhausted ${report.retryBudgetExhausted} times; peak RSS ${report.peakRssMb} MB, trend ${report.rssTrendMbPerMinute} MB/min\n`
  : 'FAIL: see the report above\n')
process.exitCode = passed ? 0 : 1
