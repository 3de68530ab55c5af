// Child processes for the benchmark and the soak: start, wait for a line that
// says they are up, sample their memory, stop them. Each is a process group
// (process-group.ts), so none outlives the run, even one cut short by Ctrl-C.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeSoftwareStatement } from '../src/sandbox/statement.js'
import { CHECKOUT, spawnGroup, STARTUP_DEADLINE_MS, type ProcessGroup } from './process-group.js'

/** The folder with package.json, whether this runs from bench/ (tap) or dist-bench/bench/. */
export function projectRoot (): string {
  return CHECKOUT
}

export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise((resolve) => server.close(resolve))
  return typeof address === 'object' && address !== null ? address.port : 0
}

/** The node-options that npm gives everything it runs in this project (.npmrc), so `npm start` too. */
export function npmNodeOptions (): string {
  const npmrc = readFileSync(join(projectRoot(), '.npmrc'), 'utf8')
  return /^node-options=(.*)$/m.exec(npmrc)?.[1]?.trim() ?? ''
}

/**
 * The proxy as a user runs it with `npm start`: the compiled entry point with
 * the node-options of .npmrc, and nothing else to remember; logs to a
 * discarded stdout. Resolves once /readyz is 200. `nodeArgs` go before the
 * script (e.g. --cpu-prof, which NODE_OPTIONS may not carry).
 */
export async function spawnProxy (env: Record<string, string>, nodeArgs: string[] = []): Promise<{ child: ProcessGroup, base: string }> {
  const port = await freePort()
  // Its own working directory (credentials file, config/), removed when it exits.
  const cwd = mkdtempSync(join(tmpdir(), 'cmu-proxy-bench-'))
  const child = spawnGroup(process.execPath, [...nodeArgs, join(projectRoot(), 'dist/main.js')], {
    name: 'node dist/main.js',
    cwd,
    env: {
      PATH: process.env.PATH,
      NODE_OPTIONS: npmNodeOptions(),
      CMU_PROXY_ENV_FILE: '/dev/null',
      PORT: String(port),
      ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(),
      ...env
    },
    stdout: 'ignore'
  })
  void child.exited.then(() => {
    try {
      rmSync(cwd, { recursive: true, force: true })
    } catch {}
  })
  const base = `http://127.0.0.1:${port}`
  await startedOrStopped(child, child.waitForHttp(`${base}/readyz`))
  return { child, base }
}

/** Resolves with `ready`; if it rejects, stops `child` first. */
async function startedOrStopped<T> (child: ProcessGroup, ready: Promise<T>): Promise<T> {
  try {
    return await ready
  } catch (err) {
    await child.stop('SIGKILL')
    throw err
  }
}

export interface Started { child: ProcessGroup, match: RegExpExecArray }

/** Spawns `command` in its own process group and resolves once its output matches `ready`. */
export async function startProcess (command: string, args: string[], options: { env?: Record<string, string | undefined>, cwd?: string, ready: RegExp, deadlineMs?: number }): Promise<Started> {
  const child = spawnGroup(command, args, { ...(options.env === undefined ? {} : { env: options.env }), ...(options.cwd === undefined ? {} : { cwd: options.cwd }) })
  const match = await startedOrStopped(child, child.waitForOutput(options.ready, options.deadlineMs ?? STARTUP_DEADLINE_MS))
  return { child, match }
}

/** Resident set size in bytes (Linux /proc), or undefined elsewhere. */
export function rssBytes (pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return match === null ? undefined : Number(match[1]) * 1024
  } catch {
    return undefined
  }
}

export function commandExists (command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0
}

/** The Node peer (peer.ts) as its own process; its info log (a line per request) goes to a discarded stdout, as ours does. */
export async function startPeer (upstreamPort: number, token: string): Promise<{ child: ProcessGroup, base: string }> {
  const port = await freePort()
  const child = spawnGroup(process.execPath, [join(projectRoot(), 'dist-bench/bench/peer.js'), String(port), `http://127.0.0.1:${upstreamPort}`, token], { name: 'node peer.js', stdout: 'ignore' })
  const base = `http://127.0.0.1:${port}`
  await startedOrStopped(child, child.waitForHttp(`${base}/ready`))
  return { child, base }
}

/** nginx, or any server that says nothing when it is up: resolves once `url` answers 2xx. */
export async function startServer (command: string, args: string[], url: string): Promise<ProcessGroup> {
  const child = spawnGroup(command, args, { stdout: 'ignore' })
  await startedOrStopped(child, child.waitForHttp(url))
  return child
}
