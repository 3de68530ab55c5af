// The token rules, as pure functions of (state, now, random): how long a
// token may be handed out, when to refresh it, which token from the fleet may
// serve, how long to back off after a failure and what the failure means, and
// how fast token calls may go. No I/O, no timers, no clock of its own:
// token-broker.ts applies them, test/adobe/token-policy.test.ts checks them,
// one row per rule. Sources: shared/DESIGN.md "Token lifecycle" and Adobe's
// DCR and throttling pages (shared/adobe-api.md).
import { clampDelay } from '../kernel/clock.js'
import { TOKEN_UNAVAILABLE_CODES as CODES } from '../kernel/errors.js'
import { MAX_RETRY_AFTER_MS } from '../kernel/retry-after.js'
import type { FleetToken } from './coordination.js'
import { CoordinationUnavailable, DcrError, FleetAttemptFailed, NoSoftwareStatement, TokenStepFailed, type FailureNotice } from './errors.js'

export interface TokenPolicySettings {
  /** TOKEN_REFRESH_MARGIN_SECONDS: refresh no later than this long before expiry (capped at a third of the lifetime). */
  refreshMarginMs: number
  /** TOKEN_RETRY_BASE_MS: the back-off's first step. */
  retryBaseMs: number
  /** TOKEN_RETRY_MAX_MS: the back-off's ceiling, and the slow pace for what only a human can fix. */
  retryMaxMs: number
}

// Every delay is clamped: these come from Adobe's answers (Retry-After,
// expires_in), and setTimeout turns anything past 2^31-1 ms into 1 ms, which
// would make the proxy hammer Adobe exactly while it throttles us.
export const TOKEN_LIMITS = {
  /** Adobe's throttle on /o/client/*: at least one second before the next call after a 429. */
  minThrottleWaitMs: 1_000,
  /** The longest wait before retrying a failed call. */
  maxRetryDelayMs: MAX_RETRY_AFTER_MS,
  /** A token is refreshed after a day at most, however long Adobe says it lives (its sample: 6 h). */
  maxRefreshDelayMs: 24 * 3_600_000,
  /** Never sooner than a second after the last token: Adobe's throttle allows about one call per second. */
  minRefreshDelayMs: 1_000,
  /** The longest lifetime believed: keeps expiresAt a real date whatever expires_in says. */
  maxTokenLifetimeMs: 7 * 24 * 3_600_000,
  /** A token is not handed out in its last seconds (this, or a tenth of its life if less): the request must still reach Adobe in time. */
  maxInjectionSkewMs: 5_000,
  /**
   * Token calls, whatever asks for them (refresh timer, 401s, admin, short
   * lifetimes): a burst of a few, then one per second, which is Adobe's
   * throttle on /o/client/* (1 request/s, burst 10), with room to spare.
   */
  tokenCallBurst: 5,
  tokenCallIntervalMs: 1_000
} as const

// Lifetime

/** The instants of one token, all on one clock. */
export interface TokenWindow {
  obtainedAt: number
  expiresAt: number
  /** Handed out only while now < usableUntil. */
  usableUntil: number
}

/** What Adobe's expires_in (seconds) is believed to be, in ms: at most a week. */
export function believedLifetimeMs (expiresInSeconds: number): number {
  return Math.min(expiresInSeconds * 1000, TOKEN_LIMITS.maxTokenLifetimeMs)
}

/** A token asked for at `askedAt`: its lifetime counts from when we asked, not when Adobe answered (errs on the early side). */
export function tokenWindow (askedAt: number, lifetimeMs: number): TokenWindow {
  const skew = Math.min(TOKEN_LIMITS.maxInjectionSkewMs, lifetimeMs / 10)
  return { obtainedAt: askedAt, expiresAt: askedAt + lifetimeMs, usableUntil: askedAt + lifetimeMs - skew }
}

export function isUsable (token: TokenWindow | undefined, now: number): boolean {
  return token !== undefined && now < token.usableUntil
}

/**
 * The delay until a token is refreshed, in the background while it serves:
 * about two thirds of its lifetime minus up to 10% jitter (replicas do not
 * refresh in lock-step), never later than the margin before expiry (the margin
 * at most a third of the lifetime), less the token's age (one from the fleet
 * was obtained earlier), within [1 s, 24 h].
 */
export function refreshDelay (settings: TokenPolicySettings, lifetimeMs: number, ageMs: number, random: number): number {
  const { minRefreshDelayMs: min, maxRefreshDelayMs: max } = TOKEN_LIMITS
  const margin = Math.min(settings.refreshMarginMs, lifetimeMs / 3)
  const jittered = lifetimeMs * (2 / 3) * (1 - 0.1 * random)
  return clampDelay(clampDelay(Math.min(jittered, lifetimeMs - margin), min, max) - ageMs, min, max)
}

// Tokens from the fleet (times on the wall clock)

export interface FleetTokenContext {
  /** A registration was asked for: only a token fetched with the new credentials will do. */
  registering: boolean
  /** The token held when the attempt began, if any. */
  replaced: FleetToken | undefined
  /** The last token Adobe refused (401). */
  rejected: string | undefined
  wallNow: number
}

/**
 * May a token another instance obtained end this instance's attempt? Not the
 * one it replaces or one Adobe refused, not one past its usable life, and not
 * one that expires before the one it replaces: an older token (put back, or
 * replayed by someone with access to Redis) is never taken over a newer one.
 */
export function acceptableFromFleet (shared: FleetToken, context: FleetTokenContext): boolean {
  const { registering, replaced, rejected, wallNow } = context
  return !registering && shared.access_token !== replaced?.access_token && shared.access_token !== rejected &&
    shared.usable_until > wallNow && (replaced === undefined || shared.expires_at > replaced.expires_at)
}

/** Is a token another instance announced worth taking, outside an attempt? Only when it outlives the one held (or none is). */
export function worthAdopting (shared: FleetToken, held: FleetToken | undefined, rejected: string | undefined, wallNow: number): boolean {
  if (shared.access_token === rejected || shared.usable_until <= wallNow) return false
  return held === undefined || (held.access_token !== shared.access_token && held.expires_at < shared.expires_at)
}

// Failures

/** Statement problems only a human can fix (Adobe's registration errors): retry at the slowest pace. */
const STATEMENT_ERRORS = new Set(['invalid_software_statement', 'unapproved_software_statement', 'invalid_request', 'invalid_redirect_uri'])

/**
 * What a failed attempt means: its code, the reason for humans, how long to
 * wait at least, and whether only a human can fix it. `canRegister`: a
 * software statement is configured.
 */
export function classifyFailure (err: unknown, canRegister: boolean): FailureNotice {
  const step = err instanceof TokenStepFailed ? err.step : 'token'
  const cause = err instanceof TokenStepFailed ? err.cause : err
  if (cause instanceof FleetAttemptFailed) return cause.notice
  if (cause instanceof CoordinationUnavailable) return { code: CODES.notRegistered, detail: cause.message, minDelayMs: 0, slow: cause.untilFixed }
  if (cause instanceof NoSoftwareStatement) return clientRejected(false)
  const dcrError = cause instanceof DcrError ? cause : undefined
  const detail = dcrError?.message ?? 'unexpected failure'
  if (dcrError?.failure === 'throttled') {
    return { code: CODES.throttled, detail, minDelayMs: Math.max(TOKEN_LIMITS.minThrottleWaitMs, dcrError.retryAfterMs ?? 0), slow: false }
  }
  if (step === 'register' && dcrError?.failure === 'oauth' && STATEMENT_ERRORS.has(dcrError.oauthError ?? '')) {
    return { code: CODES.statementRejected, detail: `Adobe rejected the software statement (${dcrError.oauthError}); replace it with a valid one from the TVE Dashboard`, minDelayMs: 0, slow: true }
  }
  if (dcrError?.oauthError === 'invalid_client') return clientRejected(canRegister)
  if (step === 'register') return { code: CODES.notRegistered, detail: `registration failed: ${detail}`, minDelayMs: 0, slow: false }
  return { code: dcrError?.failure === 'unreachable' ? CODES.tokenEndpointUnreachable : CODES.tokenEndpointError, detail, minDelayMs: 0, slow: false }
}

function clientRejected (canRegister: boolean): FailureNotice {
  const detail = canRegister
    ? 'Adobe rejected freshly registered client credentials (invalid_client)'
    : 'Adobe rejected ADOBE_CLIENT_ID/ADOBE_CLIENT_SECRET (invalid_client) and no software statement is configured to register again'
  return { code: CODES.clientRejected, detail, minDelayMs: 0, slow: true }
}

/** Adobe says the client credentials no longer work (invalid_client on a token call): drop them and register again, once, when a statement allows it. */
export function reregistersAfter (err: unknown, canRegister: boolean): boolean {
  return canRegister && err instanceof TokenStepFailed && err.step === 'token' && err.cause instanceof DcrError && err.cause.oauthError === 'invalid_client'
}

/** Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): uniform in [0, min(cap, base * 2^(n-1))), at least a tenth of the base. */
export function backoffDelay (settings: TokenPolicySettings, failedAttempts: number, random: number): number {
  const ceiling = Math.min(settings.retryMaxMs, settings.retryBaseMs * 2 ** Math.min(30, failedAttempts - 1))
  return Math.max(settings.retryBaseMs / 10, random * ceiling)
}

/**
 * The wait after the `failedAttempts`-th failure in a row: the slow pace when
 * only a human can fix it, else the back-off but never less than the failure
 * asks (a 429's Retry-After), and at most an hour.
 */
export function retryDelay (settings: TokenPolicySettings, failure: FailureNotice, failedAttempts: number, random: number): number {
  const delay = failure.slow ? settings.retryMaxMs : Math.max(failure.minDelayMs, backoffDelay(settings, failedAttempts, random))
  return clampDelay(delay, 0, TOKEN_LIMITS.maxRetryDelayMs)
}

// Pacing

/** A token bucket of token calls: `tokens` left as of instant `at`. */
export interface TokenCallBucket {
  tokens: number
  at: number
}

export const FULL_BUCKET: TokenCallBucket = { tokens: TOKEN_LIMITS.tokenCallBurst, at: -Infinity }

/**
 * One token call: how long it must wait for its turn, and the bucket once it
 * goes. The bucket refills one call per interval, up to the burst; a call that
 * waits goes at `now + waitMs`, and the next one counts from then.
 */
export function takeTokenCall (bucket: TokenCallBucket, now: number): { waitMs: number, bucket: TokenCallBucket } {
  const { tokenCallBurst: burst, tokenCallIntervalMs: interval } = TOKEN_LIMITS
  const tokens = Math.min(burst, bucket.tokens + (now - bucket.at) / interval)
  if (tokens >= 1) return { waitMs: 0, bucket: { tokens: tokens - 1, at: now } }
  const waitMs = (1 - tokens) * interval
  return { waitMs, bucket: { tokens: 0, at: now + waitMs } }
}
