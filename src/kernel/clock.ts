// Deadlines (token expiry, back-off, cache age) are measured on a monotonic
// clock: a wall-clock step (NTP, VM resume, an operator's `date -s`) must not
// expire a token early or keep a dead one alive. The values stay anchored to
// the epoch at start-up, so they still read as dates in /admin/status.

/** Anchored once: epoch ms at performance.now() === 0. */
const ORIGIN = Date.now() - performance.now()

/** Milliseconds since the epoch as of start-up, advanced by a monotonic clock. */
export function monotonicNow (): number {
  return ORIGIN + performance.now()
}

/** `ms` limited to [min, max]; NaN becomes `min`. */
export function clampDelay (ms: number, min: number, max: number): number {
  return Number.isNaN(ms) ? min : Math.min(max, Math.max(min, ms))
}
