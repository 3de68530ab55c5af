// A load generator in Node, for `npm run bench:cpu` on a machine without wrk:
// `connections` keep-alive connections (an undici Pool) each sending GET
// `url` back to back for `seconds`, in a process of its own so that its CPU
// is not the proxy's. Prints one JSON line: requests, non-2xx answers, seconds.
import { fileURLToPath } from 'node:url'
import { Pool } from 'undici'
import type { LoadResult } from './wrk.js'
import { STARTUP_DEADLINE_MS } from './process-group.js'
import { startProcess } from './processes.js'

/** Runs this file as a child process and reads its line (the same shape wrk gives, latency not measured). */
export async function runNodeLoad (url: string, connections: number, seconds: number): Promise<LoadResult> {
  const started = await startProcess(process.execPath, [fileURLToPath(import.meta.url), url, String(connections), String(seconds)], { ready: /^(\{.*\})\n/m, deadlineMs: seconds * 1000 + STARTUP_DEADLINE_MS })
  await started.child.stop()
  const result = JSON.parse(started.match[1] ?? '{}') as { requests: number, errors: number, seconds: number }
  return { requestsPerSecond: result.requests / result.seconds, p50Ms: Number.NaN, p99Ms: Number.NaN, errors: result.errors }
}

async function main (url: string, connections: number, seconds: number): Promise<void> {
  const target = new URL(url)
  const pool = new Pool(target.origin, { connections, pipelining: 1 })
  const path = `${target.pathname}${target.search}`
  const started = performance.now()
  const deadline = started + seconds * 1000
  let requests = 0
  let errors = 0
  await Promise.all(Array.from({ length: connections }, async () => {
    while (performance.now() < deadline) {
      try {
        const { statusCode, body } = await pool.request({ path, method: 'GET' })
        await body.dump({ limit: Number.POSITIVE_INFINITY })
        if (statusCode < 200 || statusCode > 299) errors++
      } catch {
        errors++
      }
      requests++
    }
  }))
  const elapsed = (performance.now() - started) / 1000
  await pool.close()
  process.stdout.write(`${JSON.stringify({ requests, errors, seconds: elapsed })}\n`)
}

if (process.argv[1]?.endsWith('node-load.js') === true) {
  const [url = '', connections = '16', seconds = '5'] = process.argv.slice(2)
  await main(url, Number(connections), Number(seconds))
}
