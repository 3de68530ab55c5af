// Child processes for the benchmark and the soak: start, wait for a line that
// says they are up, sample their memory, stop them.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeSoftwareStatement } from '../src/sandbox/statement.js'

/** The folder with package.json, whether this runs from bench/ (tap) or dist-bench/bench/. */
export function projectRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir)
  return dir
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
 * discarded stdout. Resolves once /readyz is 200.
 */
export async function spawnProxy (env: Record<string, string>): Promise<{ child: ChildProcess, base: string }> {
  const port = await freePort()
  // Its own working directory (credentials file, config/), removed when it exits.
  const cwd = mkdtempSync(join(tmpdir(), 'cmu-proxy-bench-'))
  const child = spawn(process.execPath, [join(projectRoot(), 'dist/main.js')], {
    cwd,
    env: {
      PATH: process.env.PATH,
      NODE_OPTIONS: npmNodeOptions(),
      CMU_PROXY_ENV_FILE: '/dev/null',
      PORT: String(port),
      ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(),
      ...env
    },
    stdio: ['ignore', openSync('/dev/null', 'w'), 'inherit']
  })
  const removeCwd = (): void => {
    try {
      rmSync(cwd, { recursive: true, force: true })
    } catch {}
  }
  child.once('exit', removeCwd)
  child.once('error', removeCwd)
  const base = `http://127.0.0.1:${port}`
  await waitForHttp(child, `${base}/readyz`)
  return { child, base }
}

/** Polls `url` until it answers 2xx; kills `child` and throws if it never does. */
export async function waitForHttp (child: ChildProcess, url: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline && child.exitCode === null) {
    if (await fetch(url).then((r) => r.ok, () => false)) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  child.kill('SIGKILL')
  throw new Error(`${url} never answered`)
}

export interface Started { child: ChildProcess, match: RegExpExecArray, output: () => string }

/** Spawns `command` and resolves once its output matches `ready`. */
export async function startProcess (command: string, args: string[], options: { env?: Record<string, string | undefined>, cwd?: string, ready: RegExp, timeoutMs?: number }): Promise<Started> {
  const child = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const tail = (chunk: Buffer): void => { output = (output + chunk.toString()).slice(-20_000) }
  child.stdout?.on('data', tail)
  child.stderr?.on('data', tail)
  const deadline = Date.now() + (options.timeoutMs ?? 15_000)
  while (Date.now() < deadline) {
    const match = options.ready.exec(output)
    if (match !== null) {
      // From here on only keep draining, so a chatty child never blocks on a full pipe.
      return { child, match, output: () => output }
    }
    if (child.exitCode !== null) break
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  child.kill('SIGKILL')
  throw new Error(`${command} did not start:\n${output}`)
}

export async function stopProcess (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  // A child killed by a signal has a null exitCode but a signalCode: it will not exit again.
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => { resolve(code) }))
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
  const code = await exited
  clearTimeout(timer)
  return code
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
export async function startPeer (upstreamPort: number, token: string): Promise<{ child: ChildProcess, base: string }> {
  const port = await freePort()
  const child = spawn(process.execPath, [join(projectRoot(), 'dist-bench/bench/peer.js'), String(port), `http://127.0.0.1:${upstreamPort}`, token], { stdio: ['ignore', openSync('/dev/null', 'w'), 'inherit'] })
  const base = `http://127.0.0.1:${port}`
  await waitForHttp(child, `${base}/ready`)
  return { child, base }
}
