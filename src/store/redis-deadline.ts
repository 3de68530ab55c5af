// How long a Redis command may take, measured on Redis rather than on our
// own event loop. A timer alone measures both: when the loop is blocked
// (a long synchronous task, a GC pause, a busy host), the deadline timer runs
// in the timers phase of the next turn, before the poll phase reads the reply
// that has been waiting in the socket all along, and a command Redis answered
// in microseconds "times out". So:
// - the clock starts once the command has been written (node-redis writes in
//   a setImmediate; ours is queued after it), not while it waited for a turn;
// - when the timer fires, the verdict waits one more setImmediate: the poll
//   phase in between reads whatever arrived meanwhile;
// - a timer that fires more than a whole timeout late (the loop was stalled
//   that long right then) grants one more timeout: a long reply may still be
//   half read. A loaded machine's usual lateness grants nothing.
// https://nodejs.org/en/learn/asynchronous-work/event-loop-timers-and-nexttick

/** The command had no answer within its deadline, counted on Redis's time. */
export class DeadlineError extends Error {
  readonly timeoutMs: number
  constructor (timeoutMs: number) {
    super(`no answer within ${timeoutMs} ms`)
    this.name = 'DeadlineError'
    this.timeoutMs = timeoutMs
  }
}

/** A timer this late means our loop, not Redis, was busy when it was due. */
export function stalledLoop (timeoutMs: number, lateMs: number): boolean {
  return lateMs > timeoutMs
}

/** `sent`'s outcome, or a DeadlineError once Redis has had `timeoutMs` of our attention without answering. */
export async function withinDeadline<T> (sent: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  let immediate: NodeJS.Immediate | undefined
  let settled = false
  const deadline = new Promise<never>((_resolve, reject) => {
    let extended = false
    const arm = (ms: number): void => {
      const due = performance.now() + ms
      timer = setTimeout(() => {
        const late = performance.now() - due
        // Timers may fire a little early on the loop's cached clock: never before the full timeout.
        if (late < 0) return arm(-late)
        if (!extended && stalledLoop(timeoutMs, late)) {
          extended = true
          return arm(timeoutMs)
        }
        immediate = setImmediate(() => { if (!settled) reject(new DeadlineError(timeoutMs)) })
      }, ms)
      timer.unref()
    }
    immediate = setImmediate(() => { arm(timeoutMs) })
  })
  try {
    return await Promise.race([sent, deadline])
  } finally {
    settled = true
    clearTimeout(timer)
    clearImmediate(immediate)
  }
}
