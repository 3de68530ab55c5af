// Child processes in tests: every one in its own process group, killed as a
// group when its test ends (passed or failed) and when the test file's
// process dies (tap's timeout included); start-up waits on readiness with a
// deadline meant for a loaded machine, and fails with the child's output.
// test/no-leftover-processes.ts, run by tap after every file, fails if any is left.
//
//   const proxy = startNode(t, 'main', [], { env })
//   const [, url] = await proxy.waitForOutput(/Server listening at (\S+)/)
//   await proxy.waitForHttp(`${url}/readyz`)
//   ...
//   t.same(await proxy.stop('SIGTERM'), { code: 0, signal: null })
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { runToEnd, spawnGroup, type ExitStatus, type ProcessGroup, type SpawnOptions } from '../../bench/process-group.js'

export { runToEnd, STARTUP_DEADLINE_MS, STOP_GRACE_MS, type ExitStatus, type ProcessGroup, type SpawnOptions } from '../../bench/process-group.js'

/** Starts `command` in its own process group; the group is SIGKILLed when `t` ends. */
export function startChild (t: Test, command: string, args: string[], options: SpawnOptions = {}): ProcessGroup {
  const group = spawnGroup(command, args, options)
  t.teardown(async () => { await group.stop('SIGKILL') })
  return group
}

export type EntryPoint = 'main' | 'cli' | 'demo'

/** The path of a compiled entry point (dist/<name>.js): `npm test` builds first. */
export function entryPoint (name: EntryPoint): string {
  return fileURLToPath(new URL(`../../dist/${name}.js`, import.meta.url))
}

/** `node dist/<name>.js ...args` with this Node, as startChild. */
export function startNode (t: Test, name: EntryPoint, args: string[] = [], options: SpawnOptions = {}): ProcessGroup {
  return startChild(t, process.execPath, [entryPoint(name), ...args], { name: `node dist/${name}.js`, ...options })
}

/** `node dist/<name>.js ...args` to its end, with its exit status and output. */
export async function runNode (name: EntryPoint, args: string[] = [], options: SpawnOptions & { deadlineMs?: number } = {}): Promise<ExitStatus & { stdout: string, stderr: string }> {
  return await runToEnd(process.execPath, [entryPoint(name), ...args], { name: `node dist/${name}.js`, ...options })
}
