// The suite's last test (.taprc `after`: tap runs it once every file has
// ended, passed or not): no process this checkout's tests started is still
// running. What counts as ours: a process carrying the marker every helper
// spawn adds (bench/process-group.ts: redis-server, npm and what it runs, node
// dist/*.js), or a node running this checkout's dist/ or dist-bench/ (a child
// spawned some other way). Other checkouts on the machine are not looked at.
// What it finds, it lists, then SIGKILLs, so a failed run does not leave it.
import { readFileSync } from 'node:fs'
import t from 'tap'
import { CHECKOUT, listProcesses, MARKER, type ProcessInfo } from '../bench/process-group.js'

/** A group the test files killed as they ended may take a moment to be gone. */
const SETTLE_MS = 5_000

function environ (pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')
  } catch {
    return []
  }
}

function ancestors (): Set<number> {
  const all = new Map((listProcesses() ?? []).map((p) => [p.pid, p]))
  const mine = new Set<number>()
  for (let pid: number | undefined = process.pid; pid !== undefined && pid > 0 && !mine.has(pid); pid = all.get(pid)?.ppid) mine.add(pid)
  return mine
}

function leftovers (): ProcessInfo[] {
  const exclude = ancestors()
  const marker = `${MARKER}=${CHECKOUT}`
  const ran = [`${CHECKOUT}/dist/`, `${CHECKOUT}/dist-bench/`]
  return (listProcesses(true) ?? []).filter((p) =>
    !exclude.has(p.pid) && p.state !== 'Z' &&
    (environ(p.pid).includes(marker) || ran.some((path) => p.args.includes(path))))
}

t.test('the suite left no process of its own behind', async (t) => {
  if (listProcesses() === undefined) {
    t.pass('no /proc on this system: nothing to look at')
    return
  }
  const deadline = Date.now() + SETTLE_MS
  let left = leftovers()
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    left = leftovers()
  }
  t.same(left.map((p) => `pid ${p.pid} pgid ${p.pgid} ppid ${p.ppid}: ${p.args}`), [], 'no redis-server, npm or node dist/*.js of this checkout still runs')
  for (const p of left) {
    try {
      process.kill(p.pid, 'SIGKILL')
    } catch {}
  }
})
