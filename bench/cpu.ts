// `npm run bench:cpu`: CPU per request of the proxy process on the hot path,
// read from /proc/<pid>/stat around a fixed load. Throughput on a shared
// 2-core machine moves with whatever else runs; the CPU one request costs the
// proxy moves much less, so a regression shows here without a full wrk run.
// Scenarios: 2 KB proxied (cache off), 2 KB cache hit, 200 KB proxied, and
// 2 KB proxied with tracing on (spans exported to a sink on loopback), which
// is what tracing costs; tracing off is the first row.
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { commandExists, projectRoot, spawnProxy, startPeer, startProcess } from './processes.js'
import { LARGE_PATH, SMALL_PATH } from './upstream-server.js'
import { runNodeLoad } from './node-load.js'
import { runWrk } from './wrk.js'

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

async function main (): Promise<void> {
  // wrk when installed (BENCH_LOAD=node to skip it); else the Node load generator, so that this runs on any machine (CPU is the proxy's either way).
  const generator = process.env.BENCH_LOAD !== 'node' && commandExists('wrk') ? 'wrk' : 'node-load'
  const load = generator === 'wrk' ? runWrk : runNodeLoad
  const root = projectRoot()
  const upstream = await startProcess(process.execPath, [join(root, 'dist-bench/bench/upstream-server.js'), '--serve'], { ready: /listening (\d+) (\S+)\n/ })
  const port = Number(upstream.match[1])
  const peer = await startPeer(port, upstream.match[2] ?? '')
  const adobe = { LOG_LEVEL: 'info', ADOBE_AUTH_URL: `http://127.0.0.1:${port}`, ADOBE_CMU_URL: `http://127.0.0.1:${port}/cmu` }
  // An OTLP/HTTP sink that takes whatever the traced proxy exports.
  const sink = createServer((req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json' }).end('{}') }) })
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve))
  const proxy = await spawnProxy({ ...adobe, CACHE_ENABLED: 'false' })
  const cached = await spawnProxy({ ...adobe, CACHE_ENABLED: 'true' })
  const traced = await spawnProxy({ ...adobe, CACHE_ENABLED: 'false', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(sink.address() as AddressInfo).port}` })
  try {
    const scenarios = [
      { name: '2 KB proxied', target: proxy, path: SMALL_PATH },
      { name: '2 KB cache hit', target: cached, path: SMALL_PATH },
      { name: '200 KB proxied', target: proxy, path: LARGE_PATH },
      { name: '2 KB, tracing on', target: traced, path: SMALL_PATH },
      { name: '2 KB, Node peer', target: peer, path: SMALL_PATH },
      { name: '200 KB, Node peer', target: peer, path: LARGE_PATH }
    ]
    for (const { target, path } of scenarios) await load(`${target.base}${path}`, CONNECTIONS, 1) // warm-up
    // Errors are counted: a proxy that fails fast would otherwise look cheap.
    const results: Array<{ scenario: string, microsecondsPerRequest: number[], errors: number }> = scenarios.map((s) => ({ scenario: s.name, microsecondsPerRequest: [], errors: 0 }))
    for (let round = 0; round < ROUNDS; round++) {
      for (const [i, { target, path }] of scenarios.entries()) {
        const pid = target.child.pid
        const before = cpuSeconds(pid)
        const { requestsPerSecond, errors } = await load(`${target.base}${path}`, CONNECTIONS, SECONDS)
        const spent = cpuSeconds(pid) - before
        const result = results[i]
        result?.microsecondsPerRequest.push(Math.round((spent / (requestsPerSecond * SECONDS)) * 1e6))
        if (result !== undefined) result.errors += errors
      }
    }
    const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0
    process.stdout.write(`CPU per request of the proxy process (${ROUNDS} rounds of ${SECONDS} s, ${CONNECTIONS} connections, load from ${generator}; median, all rounds)\n`)
    for (const { scenario, microsecondsPerRequest, errors } of results) {
      process.stdout.write(`${scenario.padEnd(18)} ${String(median(microsecondsPerRequest)).padStart(5)} µs   (${microsecondsPerRequest.join(', ')})${errors > 0 ? `   ${errors} FAILED REQUESTS: not comparable` : ''}\n`)
    }
  } finally {
    for (const child of [peer.child, traced.child, cached.child, proxy.child, upstream.child]) await child.stop()
    sink.close()
  }
}

if (process.argv[1]?.endsWith('cpu.js') === true) await main()
