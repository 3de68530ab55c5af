// The adobe area's errors, in one place: what the DCR calls, the credentials
// and the token broker fail with, and the problems the admin levers answer.
// The token policy (token-policy.ts) classifies them by type. The caller's
// 503 when no token can be had is kernel's tokenUnavailable(): the cache
// recognises it too, and the cache does not import adobe/.
import { ProxyError, type TokenUnavailableCode } from '../kernel/errors.js'

export type DcrFailure =
  | 'oauth' // 400 with an OAuth `error` code
  | 'throttled' // 429
  | 'http' // any other unexpected status
  | 'unreachable' // transport failure or timeout
  | 'protocol' // 2xx with a body we cannot trust

/** A failed DCR call (dcr-client.ts). The message never contains a secret or an upstream body. */
export class DcrError extends Error {
  readonly failure: DcrFailure
  readonly oauthError: string | undefined
  readonly status: number | undefined
  /** From Retry-After or Expires, when a 429 carries one. */
  readonly retryAfterMs: number | undefined

  constructor (failure: DcrFailure, message: string, details: { oauthError?: string, status?: number, retryAfterMs?: number, cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.name = 'DcrError'
    this.failure = failure
    this.oauthError = details.oauthError
    this.status = details.status
    this.retryAfterMs = details.retryAfterMs
  }
}

/** Why an attempt failed, as this instance records it and as other instances waiting for it are told (never a secret). */
export interface FailureNotice {
  code: TokenUnavailableCode
  detail: string
  /** Wait at least this long before trying again (a throttle's Retry-After). */
  minDelayMs: number
  /** Retry only at the slowest pace (TOKEN_RETRY_MAX_MS): a human must fix something. */
  slow: boolean
}

/** Which step of a token attempt failed: a statement Adobe refuses at registration is not a token endpoint error. */
export type TokenStep = 'register' | 'token'

/** A step of a token attempt failed; `cause` is what it failed with (a DcrError, or the coordination's error). */
export class TokenStepFailed extends Error {
  constructor (readonly step: TokenStep, cause: unknown) {
    super(`${step} failed`, { cause })
    this.name = 'TokenStepFailed'
  }
}

/** A registration was needed, but only ADOBE_CLIENT_ID/ADOBE_CLIENT_SECRET are configured: no statement to register with. */
export class NoSoftwareStatement extends Error {
  constructor () {
    super('no software statement is configured to register with')
    this.name = 'NoSoftwareStatement'
  }
}

/** Another instance of the fleet made the attempt this one waited for, and it failed: its notice, for the callers waiting here. */
export class FleetAttemptFailed extends Error {
  constructor (readonly notice: FailureNotice) {
    super(notice.detail)
    this.name = 'FleetAttemptFailed'
  }
}

/**
 * The fleet's state is unreachable and acting alone could register a second
 * client: wait and retry instead. `untilFixed`: only an operator can fix it
 * (this instance cannot open the fleet's values): retry at the slowest pace.
 * The message is a fixed sentence, since it reaches callers (the 503's detail,
 * /readyz's reason); `reason`, the store's own error text (hosts, ACL users),
 * goes to the log only.
 */
export class CoordinationUnavailable extends Error {
  readonly code = 'CMU_PROXY_STATE_UNAVAILABLE'
  constructor (detail: string, readonly untilFixed = false, readonly reason?: string) {
    super(detail)
    this.name = 'CoordinationUnavailable'
  }
}

/**
 * CREDENTIALS_FILE cannot be written (credential-store.ts, proveWritable):
 * credentials registered now would be lost, and every start would register
 * another client at Adobe, which Adobe's procedure forbids. Its message is the
 * one line a lone instance exits 78 with.
 */
export class CredentialsNotWritable extends Error {
  constructor (readonly path: string, readonly errno: string) {
    super(`CREDENTIALS_FILE ${path} cannot be written (${errno}${ERRNO_HINTS[errno] ?? ''}); registered client credentials would be lost and every start would register a new client at Adobe`)
    this.name = 'CredentialsNotWritable'
  }
}

const ERRNO_HINTS: Record<string, string> = {
  ENOTDIR: ': a part of the path is a file, not a directory',
  EACCES: ': permission denied for this user',
  EPERM: ': operation not permitted',
  EROFS: ': read-only file system',
  ENOSPC: ': no space left on the device',
  EISDIR: ': the path is a directory'
}

// Caller-facing problems of the admin levers (ops/admin.ts).

/** POST /admin/credentials/reregister without ADOBE_SOFTWARE_STATEMENT: nothing to register with. */
export function noStatementToRegister (): ProxyError {
  return new ProxyError('CMU_PROXY_NO_STATEMENT', 409, 'No software statement is configured, so the proxy cannot register.')
}

/** Each registration creates a client at Adobe: a human lever gets at most one a minute. */
export function reregisterTooSoon (retryAfterSeconds: number): ProxyError {
  return new ProxyError('CMU_PROXY_REREGISTER_TOO_SOON', 429, 'The client was re-registered less than a minute ago; each registration creates a new client at Adobe.', {
    headers: { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSeconds))) }
  })
}
