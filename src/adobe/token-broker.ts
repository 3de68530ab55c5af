// The token broker: keeps a valid access token for the proxy. It composes
// the credentials (credentials.ts), paced token calls (token-calls.ts), one
// attempt at a time (attempt-slot.ts) and the pure rules of token-policy.ts:
// refresh ahead in the background, back off with jitter, never hand out a
// token past its usable life, register again on invalid_client. In a fleet,
// single-flight is two-level: this process's one attempt, then the fleet's
// (coordination.ts), so one instance does each step for all of them.
import type { Logger } from 'pino'
import { monotonicNow } from '../kernel/clock.js'
import { tokenUnavailable, TOKEN_UNAVAILABLE_CODES as CODES, type ProxyError, type TokenUnavailableCode } from '../kernel/errors.js'
import { inSpan } from '../telemetry/tracing.js'
import type { TokenSource } from '../upstream/authorized-fetch.js'
import { AttemptSlot } from './attempt-slot.js'
import { soloCoordination, type FleetToken, type TokenCoordination } from './coordination.js'
import { Credentials, type CredentialsOptions } from './credentials.js'
import type { AccessToken } from './dcr-client.js'
import { fromFleetToken, toFleetToken, type HeldToken } from './held-token.js'
import { CoordinationUnavailable, TokenStepFailed } from './errors.js'
import { TokenCalls } from './token-calls.js'
import type { TokenLevers, TokenStatus } from './token-status.js'
import {
  acceptableFromFleet, believedLifetimeMs, classifyFailure, isUsable, refreshDelay, reregistersAfter, retryDelay, tokenWindow, worthAdopting,
  type TokenPolicySettings
} from './token-policy.js'

/** The credentials' options (credentials.ts) and the token policy's settings (token-policy.ts), and the clocks. */
export interface TokenBrokerOptions extends CredentialsOptions, TokenPolicySettings {
  /** Deadline clock; defaults to monotonicNow (kernel/clock.ts). */
  now?: () => number
  /** Wall clock, for tokens shared with other instances and credential generations; defaults to `now` when that is given, else Date.now. */
  wallNow?: () => number
  random?: () => number
}

interface Failure {
  code: TokenUnavailableCode
  detail: string
  at: number
  retryAt: number
}

export class TokenBroker implements TokenSource, TokenLevers {
  readonly #options: TokenBrokerOptions
  readonly #log: Logger
  readonly #now: () => number
  readonly #wallNow: () => number
  readonly #random: () => number
  readonly #coordination: TokenCoordination
  readonly #credentials: Credentials
  readonly #calls: TokenCalls
  readonly #attempts = new AttemptSlot<HeldToken>((registers) => this.#attempt(registers))
  #token: HeldToken | undefined
  #failure: Failure | undefined
  #failedAttempts = 0
  #timer: NodeJS.Timeout | undefined
  #timerAt: number | undefined
  #closed = false
  /** The last token Adobe refused (401): never taken back from the fleet. */
  #rejectedToken: string | undefined
  #tokensFromFleet = 0

  constructor (options: TokenBrokerOptions) {
    this.#options = options
    this.#log = options.logger.child({ component: 'token-broker' })
    this.#now = options.now ?? monotonicNow
    this.#wallNow = options.wallNow ?? options.now ?? Date.now
    this.#random = options.random ?? Math.random
    this.#coordination = options.coordination ?? soloCoordination
    this.#credentials = new Credentials({ ...options, wallNow: this.#wallNow })
    this.#calls = new TokenCalls(options.dcr, this.#now, this.#log, options.tracer)
  }

  /**
   * Proves the credentials can be persisted (rejects with CredentialsNotWritable
   * when they cannot, before any call to Adobe), then fetches the first token
   * in the background so /readyz turns green without traffic.
   */
  async start (): Promise<void> {
    await this.#credentials.proveDurable()
    if (this.#closed) return
    this.#coordination.start({ adopt: (token) => { this.#adopt(token) }, held: () => this.#fleetForm(this.#usableToken()), adoptCredentials: (credentials) => this.#credentials.adopt(credentials) })
    this.#attempts.join().catch(() => {})
  }

  close (): void {
    this.#closed = true
    this.#clearTimer()
    this.#coordination.close()
  }

  currentToken (): string | undefined {
    return this.#usableToken()?.value
  }

  async getToken (): Promise<string> {
    const held = this.#usableToken()
    if (held !== undefined) return held.value
    if (!this.#attempts.busy && this.#failure !== undefined && this.#failure.retryAt > this.#now()) {
      // Backing off: answer at once instead of sending Adobe another call per caller.
      throw this.#unavailable(this.#failure)
    }
    const obtained = await this.#attempts.join()
    // The attempt may end with a token already past its usable life (Adobe took longer than its lifetime to answer, or an old one from the fleet): never handed out.
    if (isUsable(obtained, this.#now())) return obtained.value
    if (this.#failure !== undefined) throw this.#unavailable(this.#failure)
    const refreshInMs = Math.max(0, (this.#timerAt ?? this.#now()) - this.#now())
    throw tokenUnavailable(CODES.tokenEndpointError, 'the token obtained was already past its usable life; a new one is being requested', refreshInMs / 1000)
  }

  /** `log`: the request's logger, so that the warning carries its reqId (and trace_id when traced). */
  invalidate (token: string, log?: Pick<Logger, 'warn'>): void {
    this.#rejectedToken = token
    if (this.#token?.value === token) {
      if (log === undefined) this.#log.warn('access token rejected upstream; fetching a new one')
      else log.warn({ component: 'token-broker' }, 'access token rejected upstream; fetching a new one')
      this.#token = undefined
      this.#coordination.dropToken(token)
    }
  }

  async refreshNow (): Promise<void> {
    await this.#attempts.join()
  }

  async reregister (): Promise<void> {
    await this.#attempts.register()
  }

  status (): TokenStatus {
    const held = this.#usableToken()
    const failure = this.#failure
    const clientId = this.#credentials.held()?.client_id
    const status: TokenStatus = { ready: held !== undefined, counts: { ...this.#calls.counts(), ...this.#credentials.counts(), tokensFromFleet: this.#tokensFromFleet } }
    if (held !== undefined) {
      status.token = { obtainedAt: held.obtainedAt, expiresAt: held.expiresAt, refreshAt: this.#timerAt }
    } else {
      status.code = failure?.code ?? CODES.starting
      status.detail = failure?.detail ?? (this.#attempts.busy ? 'the first token is being requested' : 'no token has been requested yet')
    }
    if (failure !== undefined) status.lastError = { code: failure.code, detail: failure.detail, at: failure.at, nextAttemptAt: failure.retryAt }
    if (clientId !== undefined) status.clientId = clientId
    return status
  }

  #usableToken (): HeldToken | undefined {
    return isUsable(this.#token, this.#now()) ? this.#token : undefined
  }

  /** One attempt (the slot runs one at a time); its own trace: a refresh serves every caller, and most happen with none waiting. */
  async #attempt (registers: boolean): Promise<HeldToken> {
    return await inSpan(this.#options.tracer, 'cmu_proxy.token.refresh', { 'cmu_proxy.register': registers }, async () => await this.#obtain(registers), true)
  }

  async #obtain (registers: boolean): Promise<HeldToken> {
    this.#clearTimer()
    if (registers) this.#credentials.reject(this.#credentials.held())
    const replaced = this.#fleetForm(this.#token)
    let startedAt = this.#now()
    try {
      const { token, fetchedHere } = await this.#coordination.obtainToken({
        acceptable: (shared) => acceptableFromFleet(shared, { registering: registers, replaced, rejected: this.#rejectedToken, wallNow: this.#wallNow() }),
        fetch: async () => {
          startedAt = this.#now()
          const wallStart = this.#wallNow()
          const answer = await this.#tokenCall(registers)
          return toFleetToken({ value: answer.access_token, ...tokenWindow(wallStart, believedLifetimeMs(answer.expires_in)) }, 0)
        },
        describeFailure: (err) => classifyFailure(err, this.#credentials.canRegister)
      })
      // The notice that brought it may have been taken already.
      if (!fetchedHere && this.#token?.value === token.access_token) return this.#token
      const lifetimeMs = token.expires_at - token.obtained_at
      const held = fetchedHere ? { value: token.access_token, ...tokenWindow(startedAt, lifetimeMs) } : this.#fromFleet(token)
      const refreshInMs = this.#hold(held, fetchedHere)
      if (fetchedHere) this.#log.info({ expiresInSeconds: Math.round(lifetimeMs / 1000), refreshInSeconds: Math.round(refreshInMs / 1000) }, 'access token obtained')
      return held
    } catch (err) {
      throw this.#unavailable(this.#recordFailure(err))
    }
  }

  /** A token call with the credentials in use (new ones when `registers`); on invalid_client, registers again once and retries. */
  async #tokenCall (registers: boolean): Promise<AccessToken> {
    const credentials = registers ? await this.#credentials.register() : await this.#credentials.ensure()
    try {
      return await this.#calls.request(credentials)
    } catch (err) {
      if (!reregistersAfter(err, this.#credentials.canRegister)) throw err
      this.#log.warn('client credentials rejected (invalid_client); registering again')
      this.#credentials.reject(credentials)
      return await this.#calls.request(await this.#credentials.register())
    }
  }

  /** A token another instance obtained: taken when it outlives the one held (or none is). */
  #adopt (token: FleetToken): void {
    if (this.#closed || !worthAdopting(token, this.#fleetForm(this.#usableToken()), this.#rejectedToken, this.#wallNow())) return
    this.#hold(this.#fromFleet(token), false)
  }

  /** Hold `held` and schedule its refresh; returns the delay until then. */
  #hold (held: HeldToken, fetchedHere: boolean): number {
    this.#token = held
    this.#failure = undefined
    this.#failedAttempts = 0
    if (!fetchedHere) {
      this.#tokensFromFleet++
      this.#log.debug({ expiresInSeconds: Math.round((held.expiresAt - this.#now()) / 1000) }, 'access token from the fleet')
    }
    // Each instance schedules its own refresh with its own jitter; the first to fire refreshes for all.
    const ageMs = fetchedHere ? 0 : this.#now() - held.obtainedAt
    const delay = refreshDelay(this.#options, held.expiresAt - held.obtainedAt, ageMs, this.#random())
    this.#schedule(delay)
    return delay
  }

  #recordFailure (err: unknown): Failure {
    const notice = classifyFailure(err, this.#credentials.canRegister)
    const { code, detail } = notice
    this.#failedAttempts++
    const delay = retryDelay(this.#options, notice, this.#failedAttempts, this.#random())
    const now = this.#now()
    const failure: Failure = { code, detail, at: now, retryAt: now + delay }
    this.#failure = failure
    this.#schedule(delay)
    const tokenStillValid = this.#usableToken() !== undefined
    // The store's own error text is for operators: the log has it, callers and /readyz get `detail` only.
    const cause = err instanceof TokenStepFailed ? err.cause : err
    const reason = cause instanceof CoordinationUnavailable ? cause.reason : undefined
    this.#log[tokenStillValid ? 'warn' : 'error']({ code, detail, ...(reason === undefined ? {} : { reason }), retryInMs: Math.round(delay), attempt: this.#failedAttempts, tokenStillValid }, 'could not obtain an access token')
    return failure
  }

  /** The shared form of `held` (wall-clock instants). */
  #fleetForm (held: HeldToken | undefined): FleetToken | undefined {
    return held === undefined ? undefined : toFleetToken(held, this.#wallNow() - this.#now())
  }

  /** A shared token's instants on this process's deadline clock. */
  #fromFleet (token: FleetToken): HeldToken {
    return fromFleetToken(token, this.#wallNow() - this.#now())
  }

  #schedule (delayMs: number): void {
    this.#clearTimer()
    if (this.#closed) return
    this.#timerAt = this.#now() + delayMs
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#timerAt = undefined
      this.#attempts.join().catch(() => {})
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
