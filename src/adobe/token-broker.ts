// The token state machine: credentials -> access token -> proactive refresh,
// re-registering when Adobe says invalid_client. All callers share one
// in-flight attempt (single-flight); failures back off with full jitter; a
// token past (or about to pass) its expiry is never handed out. In a fleet,
// single-flight is two-level: this process's one attempt, then the fleet's
// (coordination.ts), so one instance does each step for all of them.
import type { Logger } from 'pino'
import { clampDelay, monotonicNow } from '../kernel/clock.js'
import { tokenUnavailable, TOKEN_UNAVAILABLE_CODES as CODES, type ProxyError, type TokenUnavailableCode } from '../kernel/errors.js'
import type { Tracer } from '@opentelemetry/api'
import { inSpan } from '../telemetry/tracing.js'
import { MAX_RETRY_AFTER_MS } from '../kernel/retry-after.js'
import { CoordinationUnavailable, SharedFailure, soloCoordination, type FailureNotice, type FleetToken, type TokenCoordination } from './coordination.js'
import type { CredentialSource } from './credential-store.js'
import { DcrError, type ClientCredentials, type DcrClient } from './dcr-client.js'

export interface TokenBrokerOptions {
  dcr: DcrClient
  logger: Logger
  /** Needed to register; absent when only pre-provisioned credentials are configured. */
  softwareStatement?: string | undefined
  /** Where registered credentials persist; absent with pre-provisioned credentials and no statement. */
  store?: CredentialSource | undefined
  /** Who else shares the work (fleet mode); default: nobody. */
  coordination?: TokenCoordination | undefined
  /** ADOBE_CLIENT_ID / ADOBE_CLIENT_SECRET: used instead of registering. */
  staticCredentials?: ClientCredentials | undefined
  /** Refresh no later than this long before expiry (capped at a third of the lifetime). */
  refreshMarginMs: number
  retryBaseMs: number
  retryMaxMs: number
  /** Deadline clock; defaults to monotonicNow (clock.ts). */
  now?: () => number
  /** Wall clock, for tokens shared with other instances; defaults to `now` when that is given, else Date.now. */
  wallNow?: () => number
  random?: () => number
  /** When tracing is on: refreshes and registrations as traces of their own. */
  tracer?: Tracer | undefined
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
  counts: { tokenRequests: number, tokenFailures: number, registrations: number, registrationFailures: number, tokensFromFleet: number }
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
  readonly #wallNow: () => number
  readonly #random: () => number
  readonly #coordination: TokenCoordination
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
  /** The last token Adobe refused (401): never taken back from the fleet. */
  #rejectedToken: string | undefined
  /** Credentials Adobe refused or an admin dropped, while their replacement is registered. */
  #rejectedCredentials: ClientCredentials | undefined
  readonly #counts = { tokenRequests: 0, tokenFailures: 0, registrations: 0, registrationFailures: 0, tokensFromFleet: 0 }
  readonly #tokenCalls = { tokens: TOKEN_CALL_BURST, at: -Infinity }

  constructor (options: TokenBrokerOptions) {
    this.#options = options
    this.#log = options.logger.child({ component: 'token-broker' })
    this.#now = options.now ?? monotonicNow
    this.#wallNow = options.wallNow ?? options.now ?? Date.now
    this.#random = options.random ?? Math.random
    this.#coordination = options.coordination ?? soloCoordination
  }

  /** Fetch the first token in the background so /readyz turns green without traffic. */
  start (): void {
    this.#coordination.start({ adopt: (token) => { this.#adopt(token) }, held: () => this.#fleetForm(this.#usableToken()) })
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
    this.#rejectedToken = token
    if (this.#token?.value === token) {
      this.#log.warn('access token rejected upstream; fetching a new one')
      this.#token = undefined
      this.#coordination.dropToken(token)
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
    this.#rejectedCredentials = this.#credentials
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
    this.#coordination.close()
  }

  #usableToken (): HeldToken | undefined {
    const held = this.#token
    return held !== undefined && this.#now() < held.usableUntil ? held : undefined
  }

  /** The attempt in flight, or a new one; `register` (only with none in flight) registers first. */
  #refresh (register = false): Promise<HeldToken> {
    // Its own trace: a refresh serves every caller, and most happen with none waiting.
    this.#inflight ??= inSpan(this.#options.tracer, 'cmu_proxy.token.refresh', { 'cmu_proxy.register': register }, async () => await this.#obtain(register), true)
      .finally(() => { this.#inflight = undefined })
    return this.#inflight
  }

  async #obtain (register: boolean): Promise<HeldToken> {
    this.#clearTimer()
    const replaced = this.#fleetForm(this.#token)
    let startedAt = this.#now()
    try {
      const { token, fetchedHere } = await this.#coordination.obtainToken({
        // A registration was asked for: only a token fetched with the new credentials will do. Otherwise a
        // shared token must outlive the one it replaces: an older one (put back, or replayed by someone with
        // access to Redis) is never taken over a newer one.
        acceptable: (shared) => !register && shared.access_token !== replaced?.access_token && shared.access_token !== this.#rejectedToken &&
          shared.usable_until > this.#wallNow() && (replaced === undefined || shared.expires_at > replaced.expires_at),
        fetch: async () => {
          startedAt = this.#now()
          const wallStart = this.#wallNow()
          const answer = await this.#requestTokenReregisteringOnce(register)
          // Count the lifetime from when we asked, not when Adobe answered: errs on the early side.
          const lifetimeMs = Math.min(answer.expires_in * 1000, MAX_TOKEN_LIFETIME_MS)
          return { access_token: answer.access_token, obtained_at: wallStart, expires_at: wallStart + lifetimeMs, usable_until: wallStart + lifetimeMs - injectionSkew(lifetimeMs) }
        },
        describeFailure: (err) => this.#classify(err)
      })
      // The notice that brought it may have been taken already.
      if (!fetchedHere && this.#token?.value === token.access_token) return this.#token
      const lifetimeMs = token.expires_at - token.obtained_at
      const held = fetchedHere
        ? { value: token.access_token, obtainedAt: startedAt, expiresAt: startedAt + lifetimeMs, usableUntil: startedAt + lifetimeMs - injectionSkew(lifetimeMs) }
        : this.#fromFleet(token)
      const refreshInMs = this.#hold(held, fetchedHere)
      if (fetchedHere) this.#log.info({ expiresInSeconds: Math.round(lifetimeMs / 1000), refreshInSeconds: Math.round(refreshInMs / 1000) }, 'access token obtained')
      return held
    } catch (err) {
      const failure = this.#recordFailure(err)
      throw this.#unavailable(failure)
    }
  }

  /** A token another instance obtained: taken when it outlives the one held (or none is). */
  #adopt (token: FleetToken): void {
    if (this.#closed || token.access_token === this.#rejectedToken || token.usable_until <= this.#wallNow()) return
    const held = this.#fromFleet(token)
    const current = this.#usableToken()
    if (current !== undefined && (current.value === held.value || current.expiresAt >= held.expiresAt)) return
    this.#hold(held, false)
  }

  /** Hold `held` and schedule its refresh; returns the delay until then. */
  #hold (held: HeldToken, fetchedHere: boolean): number {
    this.#token = held
    this.#failure = undefined
    this.#failedAttempts = 0
    if (!fetchedHere) {
      this.#counts.tokensFromFleet++
      this.#log.debug({ expiresInSeconds: Math.round((held.expiresAt - this.#now()) / 1000) }, 'access token from the fleet')
    }
    // Each instance schedules its own refresh with its own jitter; the first to fire refreshes for all.
    // A shared token was obtained earlier: its refresh is due that much sooner.
    const ageMs = fetchedHere ? 0 : this.#now() - held.obtainedAt
    const delay = clampDelay(this.#refreshDelay(held.expiresAt - held.obtainedAt) - ageMs, MIN_REFRESH_DELAY_MS, MAX_REFRESH_DELAY_MS)
    this.#schedule(delay)
    return delay
  }

  /** Wall-clock instants of a shared token, on this process's deadline clock. */
  #fromFleet (token: FleetToken): HeldToken {
    const offset = this.#now() - this.#wallNow()
    return { value: token.access_token, obtainedAt: token.obtained_at + offset, expiresAt: token.expires_at + offset, usableUntil: token.usable_until + offset }
  }

  #fleetForm (held: HeldToken | undefined): FleetToken | undefined {
    if (held === undefined) return undefined
    const offset = this.#wallNow() - this.#now()
    return { access_token: held.value, obtained_at: held.obtainedAt + offset, expires_at: held.expiresAt + offset, usable_until: held.usableUntil + offset }
  }

  async #requestTokenReregisteringOnce (register: boolean): Promise<{ access_token: string, expires_in: number }> {
    const credentials = register ? await this.#register() : await this.#ensureCredentials()
    try {
      return await this.#requestToken(credentials)
    } catch (err) {
      const invalidClient = err instanceof StageError && err.dcrError instanceof DcrError && err.dcrError.oauthError === 'invalid_client'
      if (!invalidClient || this.#options.softwareStatement === undefined) throw err
      this.#log.warn('client credentials rejected (invalid_client); registering again')
      this.#rejectedCredentials = credentials
      this.#credentials = undefined
      return await this.#requestToken(await this.#register())
    }
  }

  async #requestToken (credentials: ClientCredentials): Promise<{ access_token: string, expires_in: number }> {
    await this.#paceTokenCalls()
    this.#counts.tokenRequests++
    try {
      return await inSpan(this.#options.tracer, 'cmu_proxy.token.request', {}, async () => await this.#options.dcr.requestToken(credentials))
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
    if (loaded?.status === 'unavailable') {
      // Backend trouble is never "absent": another instance may hold them, and registering would make a second client.
      throw new StageError('register', new CoordinationUnavailable(`no client credentials are held here and the fleet's state store cannot be read (${loaded.reason}); not registering while another instance may hold them`))
    }
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
    const { softwareStatement } = this.#options
    if (softwareStatement === undefined) {
      throw new StageError('register', new DcrError('oauth', 'no software statement is configured to register with', { oauthError: 'invalid_client' }))
    }
    let outcome: { credentials: ClientCredentials, registeredHere: boolean }
    try {
      outcome = await this.#coordination.register({
        rejected: this.#rejectedCredentials,
        register: async () => await this.#registerHere(softwareStatement, this.#rejectedCredentials),
        describeFailure: (err) => this.#classify(err)
      })
    } catch (err) {
      throw err instanceof StageError ? err : new StageError('register', err)
    }
    this.#credentials = outcome.credentials
    this.#rejectedCredentials = undefined
    if (!outcome.registeredHere) this.#log.info({ clientId: maskClientId(outcome.credentials.client_id) }, 'using client credentials another instance registered')
    return outcome.credentials
  }

  async #registerHere (softwareStatement: string, rejected: ClientCredentials | undefined): Promise<ClientCredentials> {
    const { store, dcr } = this.#options
    this.#counts.registrations++
    let credentials: ClientCredentials
    try {
      // Stamped with their generation: every copy of them carries it (dcr-client.ts). Always above the
      // rejected client's, even when that one was stamped by a host whose clock runs ahead.
      const generation = Math.max(this.#wallNow(), (rejected?.generation ?? 0) + 1)
      credentials = { ...await inSpan(this.#options.tracer, 'cmu_proxy.register', {}, async () => await dcr.registerClient(softwareStatement)), generation }
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
    const { code, detail, minDelayMs, slow } = this.#classify(err)
    this.#failedAttempts++
    const delay = clampDelay(slow ? this.#options.retryMaxMs : Math.max(minDelayMs, this.#backoffDelay()), 0, MAX_RETRY_DELAY_MS)
    const now = this.#now()
    const failure: Failure = { code, detail, at: now, retryAt: now + delay }
    this.#failure = failure
    this.#schedule(delay)
    const tokenStillValid = this.#usableToken() !== undefined
    this.#log[tokenStillValid ? 'warn' : 'error']({ code, detail, retryInMs: Math.round(delay), attempt: this.#failedAttempts, tokenStillValid }, 'could not obtain an access token')
    return failure
  }

  /** What a failure means: its code, the reason for humans, and how long to wait at least. */
  #classify (err: unknown): FailureNotice {
    if (err instanceof SharedFailure) return err.notice
    const stage = err instanceof StageError ? err.stage : 'token'
    const cause = err instanceof StageError ? err.dcrError : err
    if (cause instanceof SharedFailure) return cause.notice
    if (cause instanceof CoordinationUnavailable) return { code: CODES.notRegistered, detail: cause.message, minDelayMs: 0, slow: false }
    const dcrError = cause instanceof DcrError ? cause : undefined
    const detail = dcrError?.message ?? 'unexpected failure'
    if (dcrError?.failure === 'throttled') {
      return { code: CODES.throttled, detail, minDelayMs: Math.max(MIN_THROTTLE_WAIT_MS, dcrError.retryAfterMs ?? 0), slow: false }
    }
    if (stage === 'register' && dcrError?.failure === 'oauth' && STATEMENT_ERRORS.has(dcrError.oauthError ?? '')) {
      return { code: CODES.statementRejected, detail: `Adobe rejected the software statement (${dcrError.oauthError}); replace it with a valid one from the TVE Dashboard`, minDelayMs: 0, slow: true }
    }
    if (dcrError?.oauthError === 'invalid_client') {
      const why = this.#options.softwareStatement === undefined
        ? 'Adobe rejected ADOBE_CLIENT_ID/ADOBE_CLIENT_SECRET (invalid_client) and no software statement is configured to register again'
        : 'Adobe rejected freshly registered client credentials (invalid_client)'
      return { code: CODES.clientRejected, detail: why, minDelayMs: 0, slow: true }
    }
    if (stage === 'register') return { code: CODES.notRegistered, detail: `registration failed: ${detail}`, minDelayMs: 0, slow: false }
    return { code: dcrError?.failure === 'unreachable' ? CODES.tokenEndpointUnreachable : CODES.tokenEndpointError, detail, minDelayMs: 0, slow: false }
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

/** A token is not handed out in its last seconds: the request must still reach Adobe in time. */
function injectionSkew (lifetimeMs: number): number {
  return Math.min(MAX_INJECTION_SKEW_MS, lifetimeMs / 10)
}

/** Enough of a client id to tell two apart in logs and the admin view. */
export function maskClientId (clientId: string): string {
  return clientId.length <= 8 ? '****' : `${clientId.slice(0, 4)}…${clientId.slice(-4)}`
}

function iso (ms: number): string {
  return new Date(ms).toISOString()
}
