// A token as this process holds it: its instants on the deadline clock
// (monotonic, kernel/clock.ts), so a wall-clock step neither expires it early
// nor keeps it alive. The fleet shares tokens with wall-clock instants
// (instances share no monotonic clock); the two conversions live here.
import type { FleetToken } from './coordination.js'
import type { TokenWindow } from './token-policy.js'

export interface HeldToken extends TokenWindow {
  value: string
}

/** `offsetMs`: wall clock minus deadline clock, read once for all three instants. */
export function toFleetToken (held: HeldToken, offsetMs: number): FleetToken {
  return { access_token: held.value, obtained_at: held.obtainedAt + offsetMs, expires_at: held.expiresAt + offsetMs, usable_until: held.usableUntil + offsetMs }
}

/** `offsetMs`: wall clock minus deadline clock, as for toFleetToken. */
export function fromFleetToken (token: FleetToken, offsetMs: number): HeldToken {
  return { value: token.access_token, obtainedAt: token.obtained_at - offsetMs, expiresAt: token.expires_at - offsetMs, usableUntil: token.usable_until - offsetMs }
}
