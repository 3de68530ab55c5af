// Runs wrk against one URL and reads its summary.
import { runToEnd, STARTUP_DEADLINE_MS } from './process-group.js'

export interface LoadResult { requestsPerSecond: number, p50Ms: number, p99Ms: number, errors: number }

export async function runWrk (url: string, connections: number, seconds: number, headers: Record<string, string> = {}): Promise<LoadResult> {
  const args = ['-t', connections === 1 ? '1' : '2', '-c', String(connections), '-d', `${seconds}s`, '--latency', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url]
  const { code, stdout, stderr } = await runToEnd('wrk', args, { deadlineMs: seconds * 1000 + STARTUP_DEADLINE_MS })
  if (code !== 0) throw new Error(`wrk exited ${String(code)}:\n${stdout}${stderr}`)
  return parseWrk(stdout)
}

export function parseWrk (output: string): LoadResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(output)
  const p50 = /^\s+50%\s+([\d.]+)(us|ms|s)\s*$/m.exec(output)
  const p99 = /^\s+99%\s+([\d.]+)(us|ms|s)\s*$/m.exec(output)
  if (rps === null || p50 === null || p99 === null) throw new Error(`unexpected wrk output:\n${output}`)
  const errors = /Non-2xx or 3xx responses:\s+(\d+)/.exec(output)
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output)
  const socketTotal = socketErrors === null ? 0 : socketErrors.slice(1).reduce((sum, n) => sum + Number(n), 0)
  return { requestsPerSecond: Number(rps[1]), p50Ms: toMs(p50), p99Ms: toMs(p99), errors: Number(errors?.[1] ?? 0) + socketTotal }
}

function toMs (match: RegExpExecArray): number {
  const value = Number(match[1])
  return match[2] === 'us' ? value / 1000 : match[2] === 's' ? value * 1000 : value
}
