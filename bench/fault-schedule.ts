// The soak's fault schedule and its tally of what callers saw, shared by the
// single-process soak (soak.ts) and the fleet soak (fleet-soak.ts): 2 s
// tokens revoked twice, the client revoked once, then the token endpoint down.
import type { Dispatcher } from 'undici'
import type { Sandbox } from '../src/sandbox/server.js'

export interface FaultSchedule {
  sandbox: Sandbox
  durationMs: number
  /** How long the token endpoint stays down. */
  outageMs: number
  /** Takes a fresh token on the proxy (its admin endpoint) before the outage. */
  refreshToken: () => Promise<void>
  progress: (line: string) => void
  /** Collects the timers, for the caller to clear. */
  timers: NodeJS.Timeout[]
}

/** Starts the schedule now; `at` adds a step of the caller's own at a fraction of the run. */
export function scheduleFaults (schedule: FaultSchedule): { started: number, at: (fraction: number, what: string, action: () => void | Promise<void>) => void } {
  const { sandbox, durationMs, outageMs, progress, timers } = schedule
  const started = Date.now()
  const at = (fraction: number, what: string, action: () => void | Promise<void>): void => {
    timers.push(setTimeout(() => { progress(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`); void action() }, durationMs * fraction))
  }
  at(0.15, 'revoke tokens', () => { sandbox.dcr.revokeTokens() })
  at(0.3, 'revoke client', () => { sandbox.dcr.revokeClients() })
  at(0.45, 'revoke tokens', () => { sandbox.dcr.revokeTokens() })
  // A 2 s token cannot outlive a longer outage: take a 20 s one first, as a real 6 h token would be.
  at(0.55, `token endpoint down for ${outageMs / 1000} s`, async () => {
    sandbox.dcr.tokenLifetimeSeconds = 20
    await schedule.refreshToken()
    sandbox.faults.failNext('token', Infinity, { status: 503, body: 'Service Unavailable' })
    timers.push(setTimeout(() => {
      progress('token endpoint back')
      sandbox.faults.clear('token')
      sandbox.dcr.tokenLifetimeSeconds = 2
    }, outageMs))
  })
  return { started, at }
}

export interface Tally {
  requests: number
  ok: number
  /** Non-200 answers by "status code" (e.g. "502 CMU_PROXY_UPSTREAM_UNREACHABLE"). */
  failures: Record<string, number>
}

/** One GET, counted: a 200, or a failure by status and problem code. */
export async function askAndTally (client: Dispatcher, path: string, tally: Tally): Promise<void> {
  tally.requests++
  try {
    const response = await client.request({ method: 'GET', path })
    const text = await response.body.text()
    if (response.statusCode === 200) tally.ok++
    else count(tally.failures, `${response.statusCode} ${problemCode(text)}`)
  } catch (err) {
    count(tally.failures, `client ${(err as { code?: string }).code ?? 'error'}`)
  }
}

/** Every non-200 answer or failed exchange a caller saw (dropped connections are retried: none should show). */
export function callerFailures (tally: Tally): number {
  return Object.values(tally.failures).reduce((n, v) => n + v, 0)
}

function problemCode (text: string): string {
  try {
    return String((JSON.parse(text) as { code?: unknown }).code ?? 'upstream')
  } catch {
    return 'upstream'
  }
}

function count (into: Record<string, number>, key: string): void {
  into[key] = (into[key] ?? 0) + 1
}
