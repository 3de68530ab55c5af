// The token state machine: credentials -> access token -> proactive refresh,
// re-registering when Adobe says invalid_client. All callers share one
// in-flight attempt (single-flight); failures back off with full jitter; a
// token past (or about to pass) its expiry is never handed out.
import type { Logger } from 'pino'
import { clampDelay, monotonicNow } from '../clock.js'
import { tokenUnavailable, TOKEN_UNAVAILABLE_CODES as CODES, type ProxyError, type TokenUnavailableCode } from '../errors.js'
import type { CredentialStore } from './credential-store.js'
import { MAX_RETRY_AFTER_MS } from '../retry-after.js'
import { DcrError, type ClientCredentials, type DcrClient } from './dcr-client.js'

export interface TokenBrokerOptions {
  dcr: DcrClient
  logger: Logger
  /** Needed to register; absent when only pre-provisioned credentials are configured. */
  softwareStatement?: string | undefined
  /** Where registered credentials persist; absent with pre-provisioned credentials and no statement. */
  store?: CredentialStore | undefined
  /** ADOBE_CLIENT_ID / ADOBE_CLIENT_SECRET: used instead of registering. */
  staticCredentials?: ClientCredentials | undefined
  /** Refresh no later than this long before expiry (capped at a third of the lifetime). */
  refreshMarginMs: number
  retryBaseMs: number
  retryMaxMs: number
  /** Deadline clock; defaults to monotonicNow (clock.ts). */
  now?: () => number
  random?: () => number
}

interface HeldToken {
  value: string
  obtainedAt: number
  expiresAt: number
  /** Handed out only while now < usableUntil: leaves time for the request to reach Adobe. */
  usableUntil: number
}

interface Failure {
  code: TokenUnavailableCode
  detail: string
  at: number
  retryAt: number
}

export interface TokenBrokerStatus {
  ready: boolean
  /** Why not ready (a CMU_PROXY_* code), when not ready. */
  code?: TokenUnavailableCode
  detail?: string
  token?: { obtainedAt: string, expiresAt: string, refreshAt: string | undefined }
  lastError?: { code: TokenUnavailableCode, detail: string, at: string, nextAttemptAt: string }
  clientId?: string
  counts: { tokenRequests: number, tokenFailures: number, registrations: number, registrationFailures: number }
}

/** Statement problems only a human can fix: retry at the slowest pace. */
const STATEMENT_ERRORS = new Set(['invalid_software_statement', 'unapproved_software_statement', 'invalid_request', 'invalid_redirect_uri'])
/** Adobe's throttle: at least one second between calls after a 429. */
const MIN_THROTTLE_WAIT_MS = 1_000
const MAX_INJECTION_SKEW_MS = 5_000
// Every delay is clamped: these come from Adobe's answers (Retry-After,
// expires_in), and setTimeout turns anything past 2^31-1 ms into 1 ms, which
// would make the proxy hammer Adobe exactly while it throttles us.
/** The longest wait before retrying a failed call. */
const MAX_RETRY_DELAY_MS = MAX_RETRY_AFTER_MS
/** A token is refreshed after a day at most, however long Adobe says it lives (its sample: 6 h). */
const MAX_REFRESH_DELAY_MS = 24 * 3_600_000
/** Never sooner than a second after the last token: Adobe's throttle allows about one call per second. */
const MIN_REFRESH_DELAY_MS = 1_000
/** The longest lifetime believed: keeps expiresAt a real date whatever expires_in says. */
const MAX_TOKEN_LIFETIME_MS = 7 * 24 * 3_600_000
/**
 * Token calls, whatever asks for them (refresh timer, 401s, admin, short
 * lifetimes): a burst of a few, then one per second, which is Adobe's
 * throttle on /o/client/* (1 request/s, burst 10), with room to spare.
 */
const TOKEN_CALL_BURST = 5
const TOKEN_CALL_INTERVAL_MS = 1_000

class StageError extends Error {
  constructor (readonly stage: 'register' | 'token', readonly dcrError: unknown) { super('stage') }
}

export class TokenBroker {
  readonly #options: TokenBrokerOptions
  readonly #log: Logger
  readonly #now: () => number
  readonly #random: () => number
  #credentials: ClientCredentials | undefined
  #token: HeldToken | undefined
  #inflight: Promise<HeldToken> | undefined
  #failure: Failure | undefined
  #failedAttempts = 0
  #timer: NodeJS.Timeout | undefined
  #timerAt: number | undefined
  #closed = false
  /** The admin's re-registration, shared by concurrent calls. */
  #reregistration: Promise<void> | undefined
  readonly #counts = { tokenRequests: 0, tokenFailures: 0, registrations: 0, registrationFailures: 0 }
  readonly #tokenCalls = { tokens: TOKEN_CALL_BURST, at: -Infinity }

  constructor (options: TokenBrokerOptions) {
    this.#options = options
    this.#log = options.logger.child({ component: 'token-broker' })
    this.#now = options.now ?? monotonicNow
    this.#random = options.random ?? Math.random
  }

  /** Fetch the first token in the background so /readyz turns green without traffic. */
  start (): void {
    this.#refresh().catch(() => {})
  }

  /** A token that is valid now; waits for a refresh when there is none. */
  async getToken (): Promise<string> {
    const held = this.#usableToken()
    if (held !== undefined) return held.value
    if (this.#inflight === undefined && this.#failure !== undefined && this.#failure.retryAt > this.#now()) {
      // Backing off: answer at once instead of sending Adobe another call per caller.
      throw this.#unavailable(this.#failure)
    }
    return (await this.#refresh()).value
  }

  /** The token that would be handed out now without waiting, if any. */
  currentToken (): string | undefined {
    return this.#usableToken()?.value
  }

  /** Adobe rejected `token` (401): forget it, unless a newer one already replaced it. */
  invalidate (token: string): void {
    if (this.#token?.value === token) {
      this.#log.warn('access token rejected upstream; fetching a new one')
      this.#token = undefined
    }
  }

  /** Refresh now (admin), sharing any attempt already in flight. */
  async refreshNow (): Promise<void> {
    await this.#refresh()
  }

  /** Drop the client credentials and register again (admin); concurrent calls share one registration. */
  reregister (): Promise<void> {
    this.#reregistration ??= this.#registerAfresh().finally(() => { this.#reregistration = undefined })
    return this.#reregistration
  }

  async #registerAfresh (): Promise<void> {
    // An attempt in flight uses the old credentials, and so does one that starts
    // while we wait for it: wait until none runs, then start ours with no await
    // in between, so that no other attempt can take its place.
    while (this.#inflight !== undefined) await this.#inflight.catch(() => {})
    this.#credentials = undefined
    await this.#refresh(true)
  }

  status (): TokenBrokerStatus {
    const held = this.#usableToken()
    const status: TokenBrokerStatus = { ready: held !== undefined, counts: { ...this.#counts } }
    if (held !== undefined) {
      status.token = { obtainedAt: iso(held.obtainedAt), expiresAt: iso(held.expiresAt), refreshAt: this.#timerAt === undefined ? undefined : iso(this.#timerAt) }
    } else {
      status.code = this.#failure?.code ?? CODES.starting
      status.detail = this.#failure?.detail ?? (this.#inflight === undefined ? 'no token has been requested yet' : 'the first token is being requested')
    }
    if (this.#failure !== undefined) {
      status.lastError = { code: this.#failure.code, detail: this.#failure.detail, at: iso(this.#failure.at), nextAttemptAt: iso(this.#failure.retryAt) }
    }
    if (this.#credentials !== undefined) status.clientId = this.#credentials.client_id
    return status
  }

  /** Expiry (ms epoch) of the token being handed out, if any. */
  tokenExpiresAt (): number | undefined {
    return this.#usableToken()?.expiresAt
  }

  close (): void {
    this.#closed = true
    this.#clearTimer()
  }

  #usableToken (): HeldToken | undefined {
    const held = this.#token
    return held !== undefined && this.#now() < held.usableUntil ? held : undefined
  }

  /** The attempt in flight, or a new one; `register` (only with none in flight) registers first. */
  #refresh (register = false): Promise<HeldToken> {
    this.#inflight ??= this.#obtain(register).finally(() => { this.#inflight = undefined })
    return this.#inflight
  }

  async #obtain (register: boolean): Promise<HeldToken> {
    this.#clearTimer()
    const startedAt = this.#now()
    try {
      const token = await this.#requestTokenReregisteringOnce(register)
      // Count the lifetime from when we asked, not when Adobe answered: errs on the early side.
      const lifetimeMs = Math.min(token.expires_in * 1000, MAX_TOKEN_LIFETIME_MS)
      const held: HeldToken = {
        value: token.access_token,
        obtainedAt: startedAt,
        expiresAt: startedAt + lifetimeMs,
        usableUntil: startedAt + lifetimeMs - Math.min(MAX_INJECTION_SKEW_MS, lifetimeMs / 10)
      }
      this.#token = held
      this.#failure = undefined
      this.#failedAttempts = 0
      const refreshInMs = this.#refreshDelay(lifetimeMs)
      this.#schedule(refreshInMs)
      this.#log.info({ expiresInSeconds: token.expires_in, refreshInSeconds: Math.round(refreshInMs / 1000) }, 'access token obtained')
      return held
    } catch (err) {
      const failure = this.#recordFailure(err)
      throw this.#unavailable(failure)
    }
  }

  async #requestTokenReregisteringOnce (register: boolean): Promise<{ access_token: string, expires_in: number }> {
    const credentials = register ? await this.#register() : await this.#ensureCredentials()
    try {
      return await this.#requestToken(credentials)
    } catch (err) {
      const invalidClient = err instanceof StageError && err.dcrError instanceof DcrError && err.dcrError.oauthError === 'invalid_client'
      if (!invalidClient || this.#options.softwareStatement === undefined) throw err
      this.#log.warn('client credentials rejected (invalid_client); registering again')
      this.#credentials = undefined
      return await this.#requestToken(await this.#register())
    }
  }

  async #requestToken (credentials: ClientCredentials): Promise<{ access_token: string, expires_in: number }> {
    await this.#paceTokenCalls()
    this.#counts.tokenRequests++
    try {
      return await this.#options.dcr.requestToken(credentials)
    } catch (err) {
      this.#counts.tokenFailures++
      throw new StageError('token', err)
    }
  }

  /** Waits, when the burst is spent, until the next token call is due. */
  async #paceTokenCalls (): Promise<void> {
    const now = this.#now()
    const bucket = this.#tokenCalls
    bucket.tokens = Math.min(TOKEN_CALL_BURST, bucket.tokens + (now - bucket.at) / TOKEN_CALL_INTERVAL_MS)
    bucket.at = now
    if (bucket.tokens < 1) {
      const waitMs = (1 - bucket.tokens) * TOKEN_CALL_INTERVAL_MS
      this.#log.warn({ waitMs: Math.round(waitMs) }, 'token calls are coming fast; pacing them to one per second')
      await new Promise((resolve) => setTimeout(resolve, waitMs))
      bucket.tokens = 1
    }
    bucket.tokens--
  }

  async #ensureCredentials (): Promise<ClientCredentials> {
    if (this.#credentials !== undefined) return this.#credentials
    const { staticCredentials, store } = this.#options
    if (staticCredentials !== undefined) {
      this.#credentials = staticCredentials
      return staticCredentials
    }
    const loaded = await store?.load()
    if (loaded?.status === 'found') {
      this.#log.info({ credentialsFile: store?.path }, 'using stored client credentials')
      this.#credentials = loaded.credentials
      return loaded.credentials
    }
    if (loaded?.status === 'other-statement') {
      this.#log.warn({ credentialsFile: store?.path }, 'stored client credentials belong to another software statement; registering')
    } else if (loaded?.status === 'unreadable') {
      this.#log.warn({ credentialsFile: store?.path, reason: loaded.reason }, 'stored client credentials are unreadable; registering')
    }
    return await this.#register()
  }

  async #register (): Promise<ClientCredentials> {
    const { softwareStatement, store, dcr } = this.#options
    if (softwareStatement === undefined) {
      throw new StageError('register', new DcrError('oauth', 'no software statement is configured to register with', { oauthError: 'invalid_client' }))
    }
    this.#counts.registrations++
    let credentials: ClientCredentials
    try {
      credentials = await dcr.registerClient(softwareStatement)
    } catch (err) {
      this.#counts.registrationFailures++
      throw new StageError('register', err)
    }
    this.#credentials = credentials
    this.#log.info({ clientId: maskClientId(credentials.client_id) }, 'registered client credentials')
    if (store !== undefined) {
      try {
        await store.save(credentials)
      } catch (err) {
        // Keep serving with the in-memory credentials; the next start registers again.
        this.#log.error({ credentialsFile: store.path, reason: (err as NodeJS.ErrnoException).code }, 'could not persist client credentials')
      }
    }
    return credentials
  }

  #recordFailure (err: unknown): Failure {
    const stage = err instanceof StageError ? err.stage : 'token'
    const cause = err instanceof StageError ? err.dcrError : err
    const dcrError = cause instanceof DcrError ? cause : undefined
    this.#failedAttempts++
    const backoff = this.#backoffDelay()
    let code: TokenUnavailableCode
    let delay = backoff
    let detail = dcrError?.message ?? 'unexpected failure'
    if (dcrError?.failure === 'throttled') {
      code = CODES.throttled
      delay = Math.max(MIN_THROTTLE_WAIT_MS, dcrError.retryAfterMs ?? 0, backoff)
    } else if (stage === 'register' && dcrError?.failure === 'oauth' && STATEMENT_ERRORS.has(dcrError.oauthError ?? '')) {
      code = CODES.statementRejected
      detail = `Adobe rejected the software statement (${dcrError.oauthError}); replace it with a valid one from the TVE Dashboard`
      delay = this.#options.retryMaxMs
    } else if (dcrError?.oauthError === 'invalid_client') {
      code = CODES.clientRejected
      detail = this.#options.softwareStatement === undefined
        ? 'Adobe rejected ADOBE_CLIENT_ID/ADOBE_CLIENT_SECRET (invalid_client) and no software statement is configured to register again'
        : 'Adobe rejected freshly registered client credentials (invalid_client)'
      delay = this.#options.retryMaxMs
    } else if (stage === 'register') {
      code = CODES.notRegistered
      detail = `registration failed: ${detail}`
    } else {
      code = dcrError?.failure === 'unreachable' ? CODES.tokenEndpointUnreachable : CODES.tokenEndpointError
    }
    delay = clampDelay(delay, 0, MAX_RETRY_DELAY_MS)
    const now = this.#now()
    const failure: Failure = { code, detail, at: now, retryAt: now + delay }
    this.#failure = failure
    this.#schedule(delay)
    const tokenStillValid = this.#usableToken() !== undefined
    this.#log[tokenStillValid ? 'warn' : 'error']({ code, detail, retryInMs: Math.round(delay), attempt: this.#failedAttempts, tokenStillValid }, 'could not obtain an access token')
    return failure
  }

  /** Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): uniform in [0, min(cap, base * 2^n)). */
  #backoffDelay (): number {
    const { retryBaseMs, retryMaxMs } = this.#options
    const ceiling = Math.min(retryMaxMs, retryBaseMs * 2 ** Math.min(30, this.#failedAttempts - 1))
    return Math.max(retryBaseMs / 10, this.#random() * ceiling)
  }

  /** About 2/3 of the lifetime minus up to 10% jitter (replicas spread out), at least the margin before expiry, within [1 s, 24 h]. */
  #refreshDelay (lifetimeMs: number): number {
    const margin = Math.min(this.#options.refreshMarginMs, lifetimeMs / 3)
    const jittered = lifetimeMs * (2 / 3) * (1 - 0.1 * this.#random())
    return clampDelay(Math.min(jittered, lifetimeMs - margin), MIN_REFRESH_DELAY_MS, MAX_REFRESH_DELAY_MS)
  }

  #schedule (delayMs: number): void {
    this.#clearTimer()
    if (this.#closed) return
    this.#timerAt = this.#now() + delayMs
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#timerAt = undefined
      this.#refresh().catch(() => {})
    }, delayMs)
    this.#timer.unref()
  }

  #clearTimer (): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#timerAt = undefined
  }

  #unavailable (failure: Failure): ProxyError {
    return tokenUnavailable(failure.code, failure.detail, Math.max(0, failure.retryAt - this.#now()) / 1000)
  }
}

/** Enough of a client id to tell two apart in logs and the admin view. */
export function maskClientId (clientId: string): string {
  return clientId.length <= 8 ? '****' : `${clientId.slice(0, 4)}…${clientId.slice(-4)}`
}

function iso (ms: number): string {
  return new Date(ms).toISOString()
}
