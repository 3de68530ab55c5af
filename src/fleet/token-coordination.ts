// The token broker's fleet half: one registration per fleet and one token per
// fleet. The instance that takes the lock does the call, stores the sealed
// token with PX = its usable lifetime, and notifies the others, who take it
// without polling. Store trouble degrades to what a lone instance does (its
// own token call), except registering: an instance that holds no credentials
// and cannot ask the fleet waits rather than create a second client.
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import type { CoordinatedBroker, FailureNotice, FleetToken, RegistrationRequest, TokenCoordination, TokenRequest } from '../adobe/coordination.js'
import { CoordinationUnavailable, FleetAttemptFailed } from '../adobe/errors.js'
import { newerThan, sameClient } from '../adobe/credential-store.js'
import type { ClientCredentials } from '../adobe/dcr-client.js'
import { isUnusableValue } from '../store/errors.js'
import type { StateNamespace } from '../store/namespace.js'
import type { StateStore } from '../store/state-store.js'
import { isStoreTrouble, type FleetChannel, type Notice, type Turn } from './fleet-channel.js'
import { credentialsFrom, type SharedCredentials } from './shared-credentials.js'
import { RebuildableValues, UNUSABLE } from './unusable-values.js'

export interface TokenCoordinationOptions {
  store: StateStore
  namespace: StateNamespace
  channel: FleetChannel
  /** Absent with pre-provisioned credentials: nothing to register. */
  credentials: SharedCredentials | undefined
  /** REDIS_LOCK_TTL_MS */
  lockTtlMs: number
  /** The longest a waiter waits for the lock holder before acting alone. */
  maxWaitMs: number
  /** How often to look at the shared state even without a notice (lost notices, a flushed store). */
  reconcileIntervalMs?: number
  logger: Logger
  wallNow?: () => number
}

const TOKEN = 'token'
const CREDENTIALS = 'credentials'
/** A shared token is a few hundred bytes; anything much larger at its key is not read. */
const MAX_TOKEN_BYTES = 16 * 1024
/** Writes of new credentials the registration's lock holder tries before it lets go (see #shareCredentials). */
const SHARE_ATTEMPTS = 3

export class FleetTokenCoordination implements TokenCoordination {
  readonly #options: TokenCoordinationOptions
  readonly #store: StateStore
  readonly #channel: FleetChannel
  readonly #log: Logger
  readonly #wallNow: () => number
  readonly #tokenKey: string
  readonly #tokenLockKey: string
  readonly #values: RebuildableValues
  #broker: CoordinatedBroker | undefined
  #timer: NodeJS.Timeout | undefined
  #stopOnUp: (() => void) | undefined

  constructor (options: TokenCoordinationOptions) {
    this.#options = options
    this.#store = options.store
    this.#channel = options.channel
    this.#log = options.logger
    this.#wallNow = options.wallNow ?? Date.now
    this.#tokenKey = options.namespace.key(TOKEN)
    this.#tokenLockKey = options.namespace.key('lock', TOKEN)
    this.#values = new RebuildableValues(options.store, options.logger, 'the shared access token')
  }

  start (broker: CoordinatedBroker): void {
    this.#broker = broker
    this.#channel.listen(TOKEN, (notice) => {
      const token = parseToken(notice.token)
      if (token !== undefined) broker.adopt(token)
    })
    // After a reconnection: notices sent meanwhile are lost, and the store may have come back empty.
    this.#stopOnUp = this.#store.onUp(() => { void this.reconcile() })
    const interval = this.#options.reconcileIntervalMs ?? 10_000
    this.#timer = setInterval(() => { void this.reconcile() }, interval)
    this.#timer.unref()
    void this.reconcile()
  }

  close (): void {
    clearInterval(this.#timer)
    this.#stopOnUp?.()
    this.#broker = undefined
  }

  /** Take a newer shared token; put back what this instance holds into a store that lost it (or holds one that cannot be used). */
  async reconcile (): Promise<void> {
    const broker = this.#broker
    if (broker === undefined) return
    try {
      await this.#options.credentials?.load()
      const shared = await this.#readToken()
      if (shared !== undefined && shared !== UNUSABLE) {
        broker.adopt(shared)
        return
      }
      const held = broker.held()
      if (held !== undefined && await this.#putBack(held, shared === UNUSABLE)) {
        this.#log.info('the fleet\'s store had no usable token: put back the one held here')
      }
    } catch (err) {
      this.#log.debug({ reason: (err as Error).message }, 'could not reconcile with the fleet\'s store')
    }
  }

  async obtainToken (request: TokenRequest): Promise<{ token: FleetToken, fetchedHere: boolean }> {
    const { lockTtlMs, maxWaitMs } = this.#options
    const deadline = performance.now() + maxWaitMs
    let lead: Extract<Turn, { kind: 'lead' }> | undefined
    try {
      for (;;) {
        const shared = await this.#sharedToken()
        if (shared !== undefined && request.acceptable(shared)) return { token: shared, fetchedHere: false }
        const left = deadline - performance.now()
        if (left <= 0) break
        const turn = await this.#channel.turn(TOKEN, this.#store.lock(this.#tokenLockKey), lockTtlMs, Math.min(lockTtlMs, left))
        if (turn.kind === 'lead') {
          lead = turn
          break
        }
        if (turn.kind === 'notice') {
          const failure = parseFailure(turn.notice)
          if (failure !== undefined) throw new FleetAttemptFailed(failure)
          const token = parseToken(turn.notice.token)
          if (token !== undefined && request.acceptable(token)) return { token, fetchedHere: false }
        }
      }
    } catch (err) {
      if (!isStoreTrouble(err)) throw err
      this.#log.warn({ reason: (err as Error).message }, 'the fleet\'s store is unavailable: fetching an access token here')
      return { token: await request.fetch(), fetchedHere: true }
    }
    if (lead === undefined) {
      this.#log.warn({ waitedMs: maxWaitMs }, 'no word from the instance fetching the fleet\'s token: fetching one here')
      return { token: await request.fetch(), fetchedHere: true }
    }
    return await this.#leadToken(lead, request)
  }

  async #leadToken (lead: Extract<Turn, { kind: 'lead' }>, request: TokenRequest): Promise<{ token: FleetToken, fetchedHere: boolean }> {
    // Someone may have finished between our look and our lock.
    const again = await this.#sharedToken().catch(() => undefined)
    if (again !== undefined && request.acceptable(again)) {
      await lead.finish()
      return { token: again, fetchedHere: false }
    }
    const token = await asLeader(lead, request.fetch, request.describeFailure, async (token) => {
      await this.#share(token)
      return { token }
    })
    return { token, fetchedHere: true }
  }

  async register (request: RegistrationRequest): Promise<{ credentials: ClientCredentials, registeredHere: boolean }> {
    const shared = this.#options.credentials
    if (shared === undefined) return { credentials: await request.register(), registeredHere: true }
    const { rejected } = request
    // Not the rejected client, and, when the rejected one has a generation, registered after it: older
    // credentials another instance put back meanwhile (or an old notice replayed) are not taken.
    const acceptable = (c: ClientCredentials | undefined): c is ClientCredentials =>
      c !== undefined && (rejected === undefined || (!sameClient(c, rejected) && (rejected.generation === undefined || newerThan(c, rejected))))
    const { lockTtlMs, maxWaitMs } = this.#options
    const deadline = performance.now() + maxWaitMs
    let lead: Extract<Turn, { kind: 'lead' }> | undefined
    try {
      if (rejected !== undefined) await shared.dropShared(rejected)
      while (lead === undefined) {
        const found = await shared.readShared()
        if (acceptable(found)) return await this.#fromFleet(found)
        const left = deadline - performance.now()
        if (left <= 0) throw new CoordinationUnavailable('another instance holds the fleet\'s registration lock and has not finished; not registering a second client')
        const turn = await this.#channel.turn(CREDENTIALS, this.#store.lock(this.#options.namespace.key('lock', 'register')), lockTtlMs, Math.min(lockTtlMs, left))
        if (turn.kind === 'lead') lead = turn
        if (turn.kind === 'notice') {
          const failure = parseFailure(turn.notice)
          if (failure !== undefined) throw new FleetAttemptFailed(failure)
          const credentials = credentialsFrom(turn.notice.credentials)
          if (acceptable(credentials)) return await this.#fromFleet(credentials)
        }
      }
    } catch (err) {
      // There but unusable here (another key list, altered, oversized): perhaps only the key is wrong, so never register over them.
      if (isUnusableValue(err)) throw new CoordinationUnavailable(`the fleet's client credentials cannot be used here (${err.message}); not registering over them`)
      if (!isStoreTrouble(err)) throw err
      // Credentials Adobe refused are dead: with no fleet to ask, each instance replaces its own.
      if (rejected !== undefined) {
        this.#log.warn({ reason: (err as Error).message }, 'the fleet\'s store is unavailable: registering here, since Adobe refused the credentials held')
        return { credentials: await request.register(), registeredHere: true }
      }
      throw new CoordinationUnavailable(`no client credentials are held here and the fleet's state store cannot be read (${(err as Error).message}); not registering while another instance may hold them`)
    }
    const again = await shared.readShared().catch(() => undefined)
    if (acceptable(again)) {
      await lead.finish()
      return await this.#fromFleet(again)
    }
    // Registers and saves (the file and the fleet's copy) before the lock is released.
    const credentials = await asLeader(lead, request.register, request.describeFailure, async (credentials) => {
      await this.#shareCredentials(shared, credentials)
      return { credentials }
    })
    return { credentials, registeredHere: true }
  }

  /**
   * Before the registration lock is released: make sure the fleet's copy holds
   * the new credentials. A store that blinked during the save would otherwise
   * let the next lock holder find nothing and register a second client. A few
   * tries within the lock's lifetime; the notice carries them either way.
   */
  async #shareCredentials (shared: SharedCredentials, credentials: ClientCredentials): Promise<void> {
    const pauseMs = Math.max(1, Math.floor(this.#options.lockTtlMs / 8))
    for (let attempt = 1; attempt <= SHARE_ATTEMPTS; attempt++) {
      if (await shared.share(credentials)) return
      if (attempt < SHARE_ATTEMPTS) await sleep(pauseMs, undefined, { ref: false })
    }
    this.#log.warn('could not write the new client credentials to the fleet\'s store: the others take them from the notice or from this instance\'s put-back')
  }

  dropToken (token: string): void {
    void (async () => {
      const raw = await this.#store.get(this.#tokenKey, MAX_TOKEN_BYTES)
      if (raw !== undefined && parseToken(parseJson(raw))?.access_token === token) await this.#store.deleteIf(this.#tokenKey, raw)
    })().catch(() => {})
  }

  async #fromFleet (credentials: ClientCredentials): Promise<{ credentials: ClientCredentials, registeredHere: boolean }> {
    await this.#options.credentials?.keepLocalCopy(credentials)
    return { credentials, registeredHere: false }
  }

  /** The shared token; UNUSABLE when a value is there that cannot be used (see unusable-values.ts). */
  async #readToken (): Promise<FleetToken | typeof UNUSABLE | undefined> {
    const raw = await this.#values.read(this.#tokenKey, MAX_TOKEN_BYTES)
    if (raw === undefined || raw === UNUSABLE) return raw
    return parseToken(parseJson(raw)) ?? UNUSABLE
  }

  /** The shared token, if there is a usable one. */
  async #sharedToken (): Promise<FleetToken | undefined> {
    const token = await this.#readToken()
    return token === UNUSABLE ? undefined : token
  }

  /**
   * The lock holder's new token, for the fleet: it replaces what is there,
   * unless that expires later (written meanwhile by an instance that took over
   * a lock this one held too long). Sealed, with PX = what is left of its
   * usable life: the store forgets it when no instance may use it any more.
   */
  async #share (token: FleetToken): Promise<void> {
    try {
      const ttlMs = token.usable_until - this.#wallNow()
      const current = await this.#sharedToken()
      if (ttlMs <= 0 || (current !== undefined && current.expires_at > token.expires_at)) return
      await this.#store.set(this.#tokenKey, Buffer.from(JSON.stringify(token)), ttlMs)
    } catch (err) {
      this.#log.warn({ reason: (err as Error).message }, 'could not share the access token with the fleet')
    }
  }

  /**
   * The token held here, into a store that lost it: only into an empty key
   * (SET NX), never over a token another instance wrote meanwhile. A value that
   * cannot be used is overwritten only by the holder of the token lock, after
   * a second look. True when put back.
   */
  async #putBack (token: FleetToken, overUnusable: boolean): Promise<boolean> {
    const ttlMs = token.usable_until - this.#wallNow()
    if (ttlMs <= 0) return false
    const value = Buffer.from(JSON.stringify(token))
    if (!overUnusable) return await this.#store.setIfAbsent(this.#tokenKey, value, ttlMs)
    const lock = this.#store.lock(this.#tokenLockKey)
    if (!await lock.obtain(this.#options.lockTtlMs)) return false
    try {
      if (await this.#readToken() !== UNUSABLE) return false
      await this.#store.set(this.#tokenKey, value, ttlMs)
      return true
    } finally {
      await lock.release().catch(() => {})
    }
  }
}

/** The lock holder's work: its failure is told to the waiters; its result is shared, then announced. */
async function asLeader<T> (lead: Extract<Turn, { kind: 'lead' }>, work: () => Promise<T>, describeFailure: (err: unknown) => FailureNotice, share: (value: T) => Promise<Notice>): Promise<T> {
  let value: T
  try {
    value = await work()
  } catch (err) {
    await lead.finish({ failure: describeFailure(err) })
    throw err
  }
  await lead.finish(await share(value))
  return value
}

function parseJson (raw: Buffer): unknown {
  try {
    return JSON.parse(raw.toString('utf8'))
  } catch {
    return undefined
  }
}

function parseToken (value: unknown): FleetToken | undefined {
  const token = value as Partial<FleetToken> | undefined
  if (typeof token?.access_token !== 'string' || token.access_token === '') return undefined
  if (typeof token.obtained_at !== 'number' || typeof token.expires_at !== 'number' || typeof token.usable_until !== 'number') return undefined
  return { access_token: token.access_token, obtained_at: token.obtained_at, expires_at: token.expires_at, usable_until: token.usable_until }
}

function parseFailure (notice: Notice): FailureNotice | undefined {
  const failure = notice.failure as Partial<FailureNotice> | undefined
  if (typeof failure?.code !== 'string' || typeof failure.detail !== 'string') return undefined
  return { code: failure.code as FailureNotice['code'], detail: failure.detail, minDelayMs: Number(failure.minDelayMs) || 0, slow: failure.slow === true }
}
