// `npm run bench:cpu`: CPU per request of the proxy process on the hot path,
// read from /proc/<pid>/stat around a fixed load. Throughput on a shared
// 2-core machine moves with whatever else runs; the CPU one request costs the
// proxy moves much less, so a regression shows here without a full wrk run.
// Scenarios: 2 KB proxied (cache off), 2 KB cache hit, 200 KB proxied, each
// 2 KB path again with tracing on, sampled out (always_off) and sampled in
// (always_on, spans exported to a sink on loopback), and the Node peer.
// What tracing costs is printed as the throughput the CPU allows against the
// untraced row (µs untraced / µs traced).
//   BENCH_ONLY=<regex>   run only the scenarios whose name matches
//   BENCH_CPU_PROF=<dir> write a CPU profile of each proxy there (node --cpu-prof)
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join, resolve } from 'node:path'
import { commandExists, projectRoot, spawnProxy, startPeer, startProcess } from './processes.js'
import { LARGE_PATH, SMALL_PATH } from './upstream-server.js'
import { runNodeLoad } from './node-load.js'
import { runWrk } from './wrk.js'
import type { ProcessGroup } from './process-group.js'

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
/** Few enough connections that the proxy, not wrk or the upstream, is what the time is spent on. */
const CONNECTIONS = 16
const TICKS_PER_SECOND = 100

/** User + system CPU seconds of a process so far (Linux). */
export function cpuSeconds (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND
}

interface Target { child: ProcessGroup, base: string }
interface Scenario { name: string, target: string, path: string, baseline?: string }

/** Each proxy the scenarios use, by name: its environment on top of the upstream's URLs. */
function proxies (sinkUrl: string): Record<string, Record<string, string>> {
  const traced = { OTEL_EXPORTER_OTLP_ENDPOINT: sinkUrl }
  return {
    proxy: { CACHE_ENABLED: 'false' },
    cached: { CACHE_ENABLED: 'true' },
    'proxy sampled out': { CACHE_ENABLED: 'false', ...traced, OTEL_TRACES_SAMPLER: 'always_off' },
    'proxy sampled in': { CACHE_ENABLED: 'false', ...traced, OTEL_TRACES_SAMPLER: 'always_on' },
    'cached sampled out': { CACHE_ENABLED: 'true', ...traced, OTEL_TRACES_SAMPLER: 'always_off' },
    'cached sampled in': { CACHE_ENABLED: 'true', ...traced, OTEL_TRACES_SAMPLER: 'always_on' }
  }
}

const SCENARIOS: Scenario[] = [
  { name: '2 KB proxied', target: 'proxy', path: SMALL_PATH },
  { name: '2 KB proxied, sampled out', target: 'proxy sampled out', path: SMALL_PATH, baseline: '2 KB proxied' },
  { name: '2 KB proxied, sampled in', target: 'proxy sampled in', path: SMALL_PATH, baseline: '2 KB proxied' },
  { name: '2 KB cache hit', target: 'cached', path: SMALL_PATH },
  { name: '2 KB cache hit, sampled out', target: 'cached sampled out', path: SMALL_PATH, baseline: '2 KB cache hit' },
  { name: '2 KB cache hit, sampled in', target: 'cached sampled in', path: SMALL_PATH, baseline: '2 KB cache hit' },
  { name: '200 KB proxied', target: 'proxy', path: LARGE_PATH },
  { name: '2 KB, Node peer', target: 'peer', path: SMALL_PATH },
  { name: '200 KB, Node peer', target: 'peer', path: LARGE_PATH }
]

async function main (): Promise<void> {
  // wrk when installed (BENCH_LOAD=node to skip it); else the Node load generator, so that this runs on any machine (CPU is the proxy's either way).
  const generator = process.env.BENCH_LOAD !== 'node' && commandExists('wrk') ? 'wrk' : 'node-load'
  const load = generator === 'wrk' ? runWrk : runNodeLoad
  const only = process.env.BENCH_ONLY === undefined ? undefined : new RegExp(process.env.BENCH_ONLY)
  const profileDir = process.env.BENCH_CPU_PROF === undefined ? undefined : resolve(process.env.BENCH_CPU_PROF)
  const scenarios = SCENARIOS.filter((s) => only === undefined || only.test(s.name) || SCENARIOS.some((other) => other.baseline === s.name && only.test(other.name)))
  const root = projectRoot()
  const upstream = await startProcess(process.execPath, [join(root, 'dist-bench/bench/upstream-server.js'), '--serve'], { ready: /listening (\d+) (\S+)\n/ })
  const port = Number(upstream.match[1])
  const adobe = { LOG_LEVEL: 'info', ADOBE_AUTH_URL: `http://127.0.0.1:${port}`, ADOBE_CMU_URL: `http://127.0.0.1:${port}/cmu`, ADOBE_ESM_URL: `http://127.0.0.1:${port}/esm` }
  // An OTLP/HTTP sink that takes whatever the traced proxies export.
  const sink = createServer((req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json' }).end('{}') }) })
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve))
  const targets = new Map<string, Target>()
  const profiling = profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]
  try {
    const configs = proxies(`http://127.0.0.1:${(sink.address() as AddressInfo).port}`)
    for (const name of new Set(scenarios.map((s) => s.target))) {
      if (name === 'peer') {
        targets.set(name, await startPeer(port, upstream.match[2] ?? ''))
      } else {
        const started = await spawnProxy({ ...adobe, ...configs[name] }, profiling)
        targets.set(name, started)
      }
    }
    const target = (s: Scenario): Target => targets.get(s.target) as Target
    for (const s of scenarios) await load(`${target(s).base}${s.path}`, CONNECTIONS, 1) // warm-up
    // Errors are counted: a proxy that fails fast would otherwise look cheap.
    const results = scenarios.map((s) => ({ scenario: s, microsecondsPerRequest: [] as number[], requestsPerSecond: [] as number[], errors: 0 }))
    for (let round = 0; round < ROUNDS; round++) {
      for (const result of results) {
        const { pid } = target(result.scenario).child
        const before = cpuSeconds(pid)
        const { requestsPerSecond, errors } = await load(`${target(result.scenario).base}${result.scenario.path}`, CONNECTIONS, SECONDS)
        const spent = cpuSeconds(pid) - before
        result.microsecondsPerRequest.push(Math.round((spent / (requestsPerSecond * SECONDS)) * 1e6))
        result.requestsPerSecond.push(Math.round(requestsPerSecond))
        result.errors += errors
      }
    }
    const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0
    process.stdout.write(`CPU per request of the proxy process (${ROUNDS} rounds of ${SECONDS} s, ${CONNECTIONS} connections, load from ${generator}; median, all rounds)\n`)
    for (const { scenario, microsecondsPerRequest, requestsPerSecond, errors } of results) {
      const µs = median(microsecondsPerRequest)
      const base = results.find((r) => r.scenario.name === scenario.baseline)
      const ratio = base === undefined ? '' : `   ${(median(base.microsecondsPerRequest) / µs).toFixed(2)}× untraced`
      process.stdout.write(`${scenario.name.padEnd(28)} ${String(µs).padStart(5)} µs   (${microsecondsPerRequest.join(', ')})   ${median(requestsPerSecond)} req/s${ratio}${errors > 0 ? `   ${errors} FAILED REQUESTS: not comparable` : ''}\n`)
    }
    // A traced proxy that dropped spans did less work than tracing asks for: say so.
    for (const [name, started] of targets) {
      const dropped = (await (await fetch(`${started.base}/metrics`)).text()).split('\n').filter((l) => l.startsWith('cmu_proxy_trace_spans_dropped_total') && !l.endsWith(' 0'))
      if (dropped.length > 0) process.stdout.write(`${name}: ${dropped.join(', ')}\n`)
    }
  } finally {
    for (const started of targets.values()) await started.child.stop()
    await upstream.child.stop()
    sink.close()
  }
}

if (process.argv[1]?.endsWith('cpu.js') === true) await main()
