// The token broker's fleet half: one registration per fleet and one token per
// fleet. The instance that takes the lock does the call, stores the sealed
// token with PX = its usable lifetime, and notifies the others, who take it
// without polling. Store trouble degrades to what a lone instance does (its
// own token call), except registering: an instance that holds no credentials
// and cannot ask the fleet waits rather than create a second client.
import type { Logger } from 'pino'
import { CoordinationUnavailable, SharedFailure, type CoordinatedBroker, type FailureNotice, type FleetToken, type RegistrationRequest, type TokenCoordination, type TokenRequest } from '../adobe/coordination.js'
import type { ClientCredentials } from '../adobe/dcr-client.js'
import type { StateNamespace } from '../store/namespace.js'
import type { StateStore } from '../store/state-store.js'
import { isStoreTrouble, type FleetChannel, type Notice, type Turn } from './fleet-channel.js'
import type { SharedCredentials } from './shared-credentials.js'

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

export class FleetTokenCoordination implements TokenCoordination {
  readonly #options: TokenCoordinationOptions
  readonly #store: StateStore
  readonly #channel: FleetChannel
  readonly #log: Logger
  readonly #wallNow: () => number
  readonly #tokenKey: string
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

  /** Take a newer shared token; put back what this instance holds into a store that lost it. */
  async reconcile (): Promise<void> {
    const broker = this.#broker
    if (broker === undefined) return
    try {
      await this.#options.credentials?.load()
      const shared = await this.#readToken()
      if (shared !== undefined) {
        broker.adopt(shared)
        return
      }
      const held = broker.held()
      if (held !== undefined) {
        await this.#writeToken(held)
        this.#log.info('the fleet\'s store had no token: put back the one held here')
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
        const shared = await this.#readToken()
        if (shared !== undefined && request.acceptable(shared)) return { token: shared, fetchedHere: false }
        const left = deadline - performance.now()
        if (left <= 0) break
        const turn = await this.#channel.turn(TOKEN, this.#store.lock(this.#options.namespace.key('lock', TOKEN)), lockTtlMs, Math.min(lockTtlMs, left))
        if (turn.kind === 'lead') {
          lead = turn
          break
        }
        if (turn.kind === 'notice') {
          const failure = parseFailure(turn.notice)
          if (failure !== undefined) throw new SharedFailure(failure)
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
    const again = await this.#readToken().catch(() => undefined)
    if (again !== undefined && request.acceptable(again)) {
      await lead.finish()
      return { token: again, fetchedHere: false }
    }
    const token = await asLeader(lead, request.fetch, request.describeFailure, async (token) => {
      await this.#writeToken(token)
      return { token }
    })
    return { token, fetchedHere: true }
  }

  async register (request: RegistrationRequest): Promise<{ credentials: ClientCredentials, registeredHere: boolean }> {
    const shared = this.#options.credentials
    if (shared === undefined) return { credentials: await request.register(), registeredHere: true }
    const { rejected } = request
    const acceptable = (c: ClientCredentials | undefined): c is ClientCredentials =>
      c !== undefined && (rejected === undefined || c.client_id !== rejected.client_id || c.client_secret !== rejected.client_secret)
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
          if (failure !== undefined) throw new SharedFailure(failure)
          const credentials = parseCredentials(turn.notice.credentials)
          if (acceptable(credentials)) return await this.#fromFleet(credentials)
        }
      }
    } catch (err) {
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
    const credentials = await asLeader(lead, request.register, request.describeFailure, async (credentials) => ({ credentials }))
    return { credentials, registeredHere: true }
  }

  dropToken (token: string): void {
    void (async () => {
      const raw = await this.#store.get(this.#tokenKey)
      if (raw !== undefined && parseToken(parseJson(raw))?.access_token === token) await this.#store.deleteIf(this.#tokenKey, raw)
    })().catch(() => {})
  }

  async #fromFleet (credentials: ClientCredentials): Promise<{ credentials: ClientCredentials, registeredHere: boolean }> {
    await this.#options.credentials?.keepLocalCopy(credentials)
    return { credentials, registeredHere: false }
  }

  async #readToken (): Promise<FleetToken | undefined> {
    const raw = await this.#store.get(this.#tokenKey)
    return raw === undefined ? undefined : parseToken(parseJson(raw))
  }

  /** Sealed, with PX = what is left of its usable life: the store forgets it when no instance may use it any more. */
  async #writeToken (token: FleetToken): Promise<void> {
    const ttlMs = token.usable_until - this.#wallNow()
    if (ttlMs <= 0) return
    await this.#store.set(this.#tokenKey, Buffer.from(JSON.stringify(token)), ttlMs).catch((err: unknown) => {
      this.#log.warn({ reason: (err as Error).message }, 'could not share the access token with the fleet')
    })
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

function parseCredentials (value: unknown): ClientCredentials | undefined {
  const credentials = value as Partial<ClientCredentials> | undefined
  if (typeof credentials?.client_id !== 'string' || typeof credentials.client_secret !== 'string') return undefined
  return { client_id: credentials.client_id, client_secret: credentials.client_secret }
}

function parseFailure (notice: Notice): FailureNotice | undefined {
  const failure = notice.failure as Partial<FailureNotice> | undefined
  if (typeof failure?.code !== 'string' || typeof failure.detail !== 'string') return undefined
  return { code: failure.code as FailureNotice['code'], detail: failure.detail, minDelayMs: Number(failure.minDelayMs) || 0, slow: failure.slow === true }
}
