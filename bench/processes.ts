// Child processes for the benchmark and the soak: start, wait for a line that
// says they are up, sample their memory, stop them.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'

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
  if (child.exitCode !== null) return child.exitCode
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
