// The fleet area's caller-facing problem, next to its code: a member that
// cannot open the fleet's sealed values serves nobody (membership.ts).
import { ProxyError } from '../kernel/errors.js'

/** Retry-After on the refusal: the pod needs a restart with the right key list; callers should try another one meanwhile. */
const RETRY_AFTER_SECONDS = 60

export const FLEET_KEY_MISMATCH = 'CMU_PROXY_FLEET_KEY_MISMATCH'

/** 503 at once, before any lock, lookup or token call: this instance is not a member of its fleet. */
export function fleetKeyMismatch (): ProxyError {
  return new ProxyError(FLEET_KEY_MISMATCH, 503, 'This instance cannot open the fleet\'s shared state (its STATE_ENCRYPTION_KEY list is not the fleet\'s), so it serves nothing; another instance can.', {
    headers: { 'retry-after': String(RETRY_AFTER_SECONDS) }
  })
}
