// `npm run bench`: the proxy against the practical limit and against its
// Node peer. Starts, as separate processes on loopback, a fixed-response
// upstream, the proxy as a user runs it (`node dist/main.js` with `npm start`
// defaults, info logging), a cache-enabled proxy, the Node peer
// (@fastify/http-proxy with a static token, bench/peer.ts) and nginx when
// installed; loads each with wrk in alternating rounds; prints the table and
// the issue #11 targets, and writes both to bench/results/latest.json.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startNginx } from './nginx.js'
import type { ProcessGroup } from './process-group.js'
import { commandExists, freePort, projectRoot, rssBytes, spawnProxy, startPeer, startProcess } from './processes.js'
import { LARGE_PATH, SMALL_PATH } from './upstream-server.js'
import { runWrk, type LoadResult } from './wrk.js'

const ROOT = projectRoot()
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
/** Idle RSS is read once V8's memory reducer has shrunk the heap after start-up (it runs some seconds into idleness), as a sidecar sits most of its life. */
const IDLE_SETTLE_MS = 15_000

interface Target { name: string, base: string, headers: Record<string, string>, pid?: number | undefined }

interface Goal { measure: string, value: number | null, target: string, met: boolean | null }

function megabytes (bytes: number): number {
  return Math.round(bytes / 1024 / 1024)
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle] ?? 0 : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2
}


async function main (): Promise<void> {
  if (!commandExists('wrk')) {
    process.stderr.write('npm run bench needs wrk: apt-get install wrk (and nginx for the comparison)\n')
    process.exitCode = 1
    return
  }
  const upstream = await startProcess(process.execPath, [join(ROOT, 'dist-bench/bench/upstream-server.js'), '--serve'], { ready: /listening (\d+) (\S+)\n/ })
  const upstreamPort = Number(upstream.match[1])
  const token = upstream.match[2] ?? ''
  const children: ProcessGroup[] = [upstream.child]
  try {
    const adobe = { LOG_LEVEL: 'info', ADOBE_AUTH_URL: `http://127.0.0.1:${upstreamPort}`, ADOBE_CMU_URL: `http://127.0.0.1:${upstreamPort}/cmu`, ADOBE_ESM_URL: `http://127.0.0.1:${upstreamPort}/esm` }
    const proxy = await spawnProxy({ ...adobe, CACHE_ENABLED: 'false' })
    const cached = await spawnProxy({ ...adobe, CACHE_ENABLED: 'true' })
    const peer = await startPeer(upstreamPort, token)
    children.push(proxy.child, cached.child, peer.child)
    await new Promise((resolve) => setTimeout(resolve, IDLE_SETTLE_MS))
    const idleRss = Math.max(rssBytes(proxy.child.pid) ?? 0, rssBytes(cached.child.pid) ?? 0)

    const targets: Target[] = [
      { name: 'direct', base: `http://127.0.0.1:${upstreamPort}`, headers: { authorization: `Bearer ${token}` } },
      { name: 'node peer', base: peer.base, headers: {}, pid: peer.child.pid },
      { name: 'proxy', base: proxy.base, headers: {}, pid: proxy.child.pid }
    ]
    let nginxNote = ''
    if (commandExists('nginx')) {
      const port = await freePort()
      children.push(await startNginx(port, upstreamPort, token))
      targets.splice(1, 0, { name: 'nginx', base: `http://127.0.0.1:${port}`, headers: {} })
    } else {
      nginxNote = 'nginx not installed (apt-get install nginx): no nginx rows'
    }
    const hits: Target = { name: 'proxy (cache hit)', base: cached.base, headers: {}, pid: cached.child.pid }
    const extras = [hits]

    const results = new Map<string, LoadResult[]>()
    const peakRss = new Map<number, number>()
    const record = async (label: string, target: Target, path: string, connections: number): Promise<void> => {
      const pid = target.pid
      const sampler = setInterval(() => { if (pid !== undefined) peakRss.set(pid, Math.max(peakRss.get(pid) ?? 0, rssBytes(pid) ?? 0)) }, 200)
      const result = await runWrk(`${target.base}${path}`, connections, SECONDS, target.headers)
      clearInterval(sampler)
      if (result.errors > 0) process.stderr.write(`warning: ${result.errors} errors for ${label}\n`)
      results.set(label, [...(results.get(label) ?? []), result])
    }

    for (const target of [...targets, ...extras]) await runWrk(`${target.base}${SMALL_PATH}`, 10, 1, target.headers) // warm-up
    const scenarios = [['2 KB JSON', SMALL_PATH], ['200 KB CSV', LARGE_PATH]] as const
    for (let round = 1; round <= ROUNDS; round++) {
      process.stderr.write(`round ${round}/${ROUNDS}\n`)
      for (const [scenario, path] of scenarios) {
        // Alternate the order every round so no target always runs on a warmer machine.
        const order = round % 2 === 1 ? [...targets, ...extras] : [...targets, ...extras].reverse()
        for (const target of order) await record(`${scenario}|${target.name}|${CONNECTIONS}`, target, path, CONNECTIONS)
      }
      for (const target of targets) await record(`2 KB JSON|${target.name}|1`, target, SMALL_PATH, 1)
    }

    const rows = [...results.entries()].map(([label, runs]) => {
      const [scenario = '', target = '', connections = ''] = label.split('|')
      return { scenario, target, connections: Number(connections), requestsPerSecond: Math.round(median(runs.map((r) => r.requestsPerSecond))), p50Ms: median(runs.map((r) => r.p50Ms)), p99Ms: median(runs.map((r) => r.p99Ms)), errors: runs.reduce((n, r) => n + r.errors, 0) }
    })
    const rps = (scenario: string, target: string): number | undefined => rows.find((r) => r.scenario === scenario && r.target === target && r.connections === CONNECTIONS)?.requestsPerSecond
    const p50At1 = (target: string): number | undefined => rows.find((r) => r.scenario === '2 KB JSON' && r.target === target && r.connections === 1)?.p50Ms
    const ratio = (a?: number, b?: number): number | null => a === undefined || b === undefined || b === 0 ? null : Math.round((a / b) * 100) / 100
    const atLeast = (measure: string, value: number | null, target: number): Goal => ({ measure, value, target: `>= ${target}`, met: value === null ? null : value >= target })
    const below = (measure: string, value: number | null, target: number): Goal => ({ measure, value, target: `< ${target}`, met: value === null ? null : value < target })
    const addedP50 = p50At1('proxy') === undefined || p50At1('direct') === undefined ? null : Math.round(((p50At1('proxy') ?? 0) - (p50At1('direct') ?? 0)) * 1000) / 1000
    const peakProxyRss = Math.max(peakRss.get(proxy.child.pid) ?? 0, peakRss.get(cached.child.pid) ?? 0)
    // The issue #11 targets: ratios within this one run.
    const goals: Goal[] = [
      atLeast('2 KB, proxy / nginx', ratio(rps('2 KB JSON', 'proxy'), rps('2 KB JSON', 'nginx')), 0.45),
      atLeast('200 KB, proxy / nginx', ratio(rps('200 KB CSV', 'proxy'), rps('200 KB CSV', 'nginx')), 0.9),
      atLeast('2 KB, proxy / node peer', ratio(rps('2 KB JSON', 'proxy'), rps('2 KB JSON', 'node peer')), 1.5),
      atLeast('200 KB, proxy / node peer', ratio(rps('200 KB CSV', 'proxy'), rps('200 KB CSV', 'node peer')), 1.5),
      atLeast('cache hits 2 KB / nginx', ratio(rps('2 KB JSON', 'proxy (cache hit)'), rps('2 KB JSON', 'nginx')), 0.8),
      atLeast('cache hits 200 KB / nginx', ratio(rps('200 KB CSV', 'proxy (cache hit)'), rps('200 KB CSV', 'nginx')), 2),
      below('added p50 at 1 connection, ms over direct', addedP50, 0.15),
      below('peak RSS under load, MiB', megabytes(peakProxyRss), 100),
      below('idle RSS, MiB', megabytes(idleRss), 70)
    ]

    const lines = [
      `cmu-proxy benchmark: ${ROUNDS} alternating rounds of ${SECONDS} s, wrk, medians${nginxNote === '' ? '' : `; ${nginxNote}`}`,
      '',
      `${'scenario'.padEnd(12)}${'target'.padEnd(20)}${'conns'.padStart(6)}${'req/s'.padStart(10)}${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}${'errors'.padStart(8)}`,
      ...rows.map((r) => `${r.scenario.padEnd(12)}${r.target.padEnd(20)}${String(r.connections).padStart(6)}${String(r.requestsPerSecond).padStart(10)}${r.p50Ms.toFixed(3).padStart(9)}${r.p99Ms.toFixed(3).padStart(9)}${String(r.errors).padStart(8)}`),
      '',
      `${'measure'.padEnd(44)}${'value'.padStart(8)}  target    `,
      ...goals.map((g) => `${g.measure.padEnd(44)}${String(g.value ?? 'n/a').padStart(8)}  ${g.target.padEnd(8)}  ${g.met === null ? '' : g.met ? 'met' : 'NOT MET'}`),
      `(node peer peak RSS ${megabytes(peakRss.get(peer.child.pid) ?? 0)} MiB)`
    ]
    process.stdout.write(`${lines.join('\n')}\n`)
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true })
    writeFileSync(join(ROOT, 'bench/results/latest.json'), `${JSON.stringify({ date: new Date().toISOString(), rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS, rows, goals, idleRssMb: megabytes(idleRss), peakProxyRssMb: megabytes(peakProxyRss) }, null, 2)}\n`)
  } finally {
    for (const child of children.reverse()) await child.stop()
  }
}

await main()
