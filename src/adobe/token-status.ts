// What the broker shows the outside besides tokens: one typed snapshot for
// /readyz, /metrics and the admin view (ops/), which read it rather than the
// broker's internals, and the admin's two levers. The proxy sees only
// TokenSource (upstream/authorized-fetch.ts).
import type { TokenUnavailableCode } from '../kernel/errors.js'

/** One snapshot of the broker for /readyz, /metrics and the admin view. Instants are ms since the epoch. */
export interface TokenStatus {
  ready: boolean
  /** Why not ready (a CMU_PROXY_* code), when not ready. */
  code?: TokenUnavailableCode
  detail?: string
  token?: { obtainedAt: number, expiresAt: number, refreshAt: number | undefined }
  lastError?: { code: TokenUnavailableCode, detail: string, at: number, nextAttemptAt: number }
  /** The client id in use (the admin view masks it). */
  clientId?: string
  counts: { tokenRequests: number, tokenFailures: number, registrations: number, registrationFailures: number, tokensFromFleet: number }
}

/** What /readyz and /metrics read. */
export interface TokenStatusSource {
  status: () => TokenStatus
}

/** What the admin view reads, and its two levers. */
export interface TokenLevers extends TokenStatusSource {
  /** Refresh now, sharing any attempt already in flight. */
  refreshNow: () => Promise<void>
  /** Drop the client credentials and register again; concurrent calls share one registration. */
  reregister: () => Promise<void>
}
