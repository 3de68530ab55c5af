// `npm run bench`: the proxy against the practical limit. Starts, as separate
// processes on loopback, a fixed-response upstream, the proxy in production
// mode (node dist/main.js, info logging), a cache-enabled proxy, and nginx
// when installed; loads each with wrk in alternating rounds; prints a table
// and writes it to bench/results/latest.json.
import type { ChildProcess } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startNginx } from './nginx.js'
import { commandExists, freePort, projectRoot, rssBytes, spawnProxy, startProcess, stopProcess } from './processes.js'
import { LARGE_PATH, SMALL_PATH } from './upstream-server.js'
import { runWrk, type LoadResult } from './wrk.js'

const ROOT = projectRoot()
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)

interface Target { name: string, base: string, headers: Record<string, string>, pid?: number | undefined }

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
  const children: ChildProcess[] = [upstream.child]
  try {
    const adobe = { LOG_LEVEL: 'info', ADOBE_AUTH_URL: `http://127.0.0.1:${upstreamPort}`, ADOBE_CMU_URL: `http://127.0.0.1:${upstreamPort}/cmu` }
    const proxy = await spawnProxy({ ...adobe, CACHE_ENABLED: 'false' })
    const cached = await spawnProxy({ ...adobe, CACHE_ENABLED: 'true' })
    children.push(proxy.child, cached.child)
    const targets: Target[] = [
      { name: 'direct', base: `http://127.0.0.1:${upstreamPort}`, headers: { authorization: `Bearer ${token}` } },
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
    const find = (scenario: string, target: string, connections = CONNECTIONS): typeof rows[number] | undefined => rows.find((r) => r.scenario === scenario && r.target === target && r.connections === connections)
    const ratio = (a?: number, b?: number): number | null => a === undefined || b === undefined || b === 0 ? null : Math.round((a / b) * 100) / 100
    const summary = {
      small: { proxyVsNginx: ratio(find('2 KB JSON', 'proxy')?.requestsPerSecond, find('2 KB JSON', 'nginx')?.requestsPerSecond), proxyVsDirect: ratio(find('2 KB JSON', 'proxy')?.requestsPerSecond, find('2 KB JSON', 'direct')?.requestsPerSecond), target: 0.75 },
      large: { proxyVsNginx: ratio(find('200 KB CSV', 'proxy')?.requestsPerSecond, find('200 KB CSV', 'nginx')?.requestsPerSecond), proxyVsDirect: ratio(find('200 KB CSV', 'proxy')?.requestsPerSecond, find('200 KB CSV', 'direct')?.requestsPerSecond), target: 0.9 },
      cacheHitsVsNginx: { small: ratio(find('2 KB JSON', 'proxy (cache hit)')?.requestsPerSecond, find('2 KB JSON', 'nginx')?.requestsPerSecond), large: ratio(find('200 KB CSV', 'proxy (cache hit)')?.requestsPerSecond, find('200 KB CSV', 'nginx')?.requestsPerSecond), target: 1.5 },
      addedP50MsAtOneConnection: { value: Math.round(((find('2 KB JSON', 'proxy', 1)?.p50Ms ?? 0) - (find('2 KB JSON', 'direct', 1)?.p50Ms ?? 0)) * 1000) / 1000, target: 0.15 },
      peakProxyRssMb: { value: megabytes(Math.max(peakRss.get(proxy.child.pid ?? -1) ?? 0, peakRss.get(cached.child.pid ?? -1) ?? 0)), target: 150 }
    }

    const lines = [
      `cmu-proxy benchmark: ${ROUNDS} alternating rounds of ${SECONDS} s, wrk, medians${nginxNote === '' ? '' : `; ${nginxNote}`}`,
      '',
      `${'scenario'.padEnd(12)}${'target'.padEnd(20)}${'conns'.padStart(6)}${'req/s'.padStart(10)}${'p50 ms'.padStart(9)}${'p99 ms'.padStart(9)}${'errors'.padStart(8)}`,
      ...rows.map((r) => `${r.scenario.padEnd(12)}${r.target.padEnd(20)}${String(r.connections).padStart(6)}${String(r.requestsPerSecond).padStart(10)}${r.p50Ms.toFixed(3).padStart(9)}${r.p99Ms.toFixed(3).padStart(9)}${String(r.errors).padStart(8)}`),
      '',
      `2 KB:   proxy/nginx ${summary.small.proxyVsNginx ?? 'n/a'} (target >= 0.75), proxy/direct ${summary.small.proxyVsDirect ?? 'n/a'}`,
      `200 KB: proxy/nginx ${summary.large.proxyVsNginx ?? 'n/a'} (target >= 0.9), proxy/direct ${summary.large.proxyVsDirect ?? 'n/a'}`,
      `cache hits/nginx: 2 KB ${summary.cacheHitsVsNginx.small ?? 'n/a'}, 200 KB ${summary.cacheHitsVsNginx.large ?? 'n/a'} (target >= 1.5)`,
      `added p50 at 1 connection: ${summary.addedP50MsAtOneConnection.value} ms (target < 0.15)`,
      `peak proxy RSS: ${summary.peakProxyRssMb.value} MB (target < 150)`
    ]
    process.stdout.write(`${lines.join('\n')}\n`)
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true })
    writeFileSync(join(ROOT, 'bench/results/latest.json'), `${JSON.stringify({ date: new Date().toISOString(), rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS, rows, summary }, null, 2)}\n`)
  } finally {
    for (const child of children.reverse()) await stopProcess(child)
  }
}

await main()
