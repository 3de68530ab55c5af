// The token broker's fleet half: one registration per fleet (registration.ts)
// and one token per fleet. The member that holds the token lock makes the
// call, stores the sealed token with PX = its usable lifetime, and tells the
// others, who take it without polling (turns.ts). Store trouble degrades to
// what a lone instance does (its own token call), and the token got that way
// is still shared once the store answers. Each member also looks at the
// shared state on every reconnection and every few seconds: it takes a newer
// token, puts back what a store that lost it no longer holds, and converges
// on the fleet's client credentials after instances registered apart.
import type { Logger } from 'pino'
import type { CoordinatedBroker, FailureNotice, FleetToken, RegistrationRequest, TokenCoordination, TokenRequest } from '../adobe/coordination.js'
import { CoordinationUnavailable, FleetAttemptFailed } from '../adobe/errors.js'
import { sameClient } from '../adobe/credential-store.js'
import type { ClientCredentials } from '../adobe/dcr-client.js'
import type { StateNamespace } from '../store/namespace.js'
import type { StateStore } from '../store/state-store.js'
import type { FleetChannel } from './fleet-channel.js'
import type { Membership } from './membership.js'
import { attemptFailed, readAttemptFailure } from './notices.js'
import { FleetRegistration } from './registration.js'
import { credentialsFrom, type SharedCredentials } from './shared-credentials.js'
import { parseToken, SharedToken } from './shared-token.js'
import type { SupersededClients } from './superseded-clients.js'
import { doTheWork, type Turns } from './turns.js'
import { UNUSABLE, type RebuildableValues } from './unusable-values.js'

export interface TokenCoordinationOptions {
  store: StateStore
  namespace: StateNamespace
  channel: FleetChannel
  turns: Turns
  membership: Membership
  /** Absent with pre-provisioned credentials: nothing to register. */
  credentials: SharedCredentials | undefined
  superseded: SupersededClients
  values: RebuildableValues
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
const CREDENTIALS_TOPIC = 'credentials'
/** After this member replaced the fleet's credentials, it looks again this soon: others may have replaced them too meanwhile. */
const FOLLOW_UP_MS = 1_000

export class FleetTokenCoordination implements TokenCoordination {
  readonly #options: TokenCoordinationOptions
  readonly #store: StateStore
  readonly #log: Logger
  readonly #token: SharedToken
  readonly #tokenLockKey: string
  readonly #registration: FleetRegistration | undefined
  #broker: CoordinatedBroker | undefined
  #timer: NodeJS.Timeout | undefined
  #followUp: NodeJS.Timeout | undefined
  #stopOnUp: (() => void) | undefined

  constructor (options: TokenCoordinationOptions) {
    this.#options = options
    this.#store = options.store
    this.#log = options.logger
    this.#token = new SharedToken({ store: options.store, key: options.namespace.key(TOKEN), values: options.values, wallNow: options.wallNow ?? Date.now })
    this.#tokenLockKey = options.namespace.key('lock', TOKEN)
    this.#registration = options.credentials === undefined
      ? undefined
      : new FleetRegistration({ shared: options.credentials, turns: options.turns, lockKey: options.namespace.key('lock', 'register'), topic: CREDENTIALS_TOPIC, lockTtlMs: options.lockTtlMs, maxWaitMs: options.maxWaitMs, logger: options.logger })
  }

  start (broker: CoordinatedBroker): void {
    this.#broker = broker
    const { channel } = this.#options
    channel.listen(TOKEN, (notice) => {
      const token = parseToken(notice.token)
      if (token !== undefined) broker.adopt(token)
    })
    // New credentials in the fleet's copy (registered, or put back newer): every member looks.
    channel.listen(CREDENTIALS_TOPIC, (notice) => { if (credentialsFrom(notice.credentials) !== undefined) void this.reconcile() })
    // After a reconnection: notices sent meanwhile are lost, and the store may have come back empty.
    this.#stopOnUp = this.#store.onUp(() => { void this.reconcile() })
    const interval = this.#options.reconcileIntervalMs ?? 10_000
    this.#timer = setInterval(() => { void this.reconcile() }, interval)
    this.#timer.unref()
    void this.reconcile()
  }

  /**
   * This member put its file's credentials into the fleet's copy (a store that
   * lost them, or held older ones: instances that registered apart). The others
   * are told; and since notices sent while subscriptions come back after an
   * outage are lost, and several members may replace the copy in turn, it
   * looks again shortly, and converges on the newest.
   */
  credentialsPutBack (credentials: ClientCredentials): void {
    void this.#options.turns.tell(CREDENTIALS_TOPIC, { credentials })
    clearTimeout(this.#followUp)
    this.#followUp = setTimeout(() => { void this.reconcile() }, FOLLOW_UP_MS)
    this.#followUp.unref()
  }

  close (): void {
    clearTimeout(this.#followUp)
    clearInterval(this.#timer)
    this.#stopOnUp?.()
    this.#broker = undefined
  }

  /**
   * Members only: converge on the fleet's credentials; take a newer shared
   * token; put back what this instance holds into a store that lost it (or
   * holds one that cannot be used).
   */
  async reconcile (): Promise<void> {
    const broker = this.#broker
    if (broker === undefined || await this.#options.membership.check() !== 'member') return
    try {
      await this.#converge(broker)
      await this.#options.superseded.refresh()
      const shared = await this.#token.read()
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
    const turn = await this.#options.turns.take<FleetToken, FailureNotice>({
      topic: TOKEN,
      lockKey: this.#tokenLockKey,
      lockTtlMs: this.#options.lockTtlMs,
      maxWaitMs: this.#options.maxWaitMs,
      look: async () => {
        const shared = await this.#token.usable()
        return shared !== undefined && request.acceptable(shared) ? { kind: 'found', value: shared } : undefined
      },
      read: (notice) => {
        const failure = readAttemptFailure(notice)
        if (failure !== undefined) return { kind: 'failed', failure }
        const token = parseToken(notice.token)
        return token !== undefined && request.acceptable(token) ? { kind: 'found', value: token } : { kind: 'look' }
      },
      tell: (found) => found.kind === 'found' ? { token: found.value } : attemptFailed(found.failure)
    })
    if (turn.kind === 'found') return { token: turn.value, fetchedHere: false }
    if (turn.kind === 'failed') throw new FleetAttemptFailed(turn.failure)
    if (turn.kind === 'alone' && turn.why === 'not-member') throw notAMember(this.#options.membership)
    if (turn.kind === 'alone' && turn.why === 'no-word') this.#log.warn({ waitedMs: this.#options.maxWaitMs }, 'no word from the instance fetching the fleet\'s token: fetching one here')
    const token = await doTheWork(turn, request.fetch, (err) => attemptFailed(request.describeFailure(err)), async (token) => {
      await this.#token.share(token).catch(() => { this.#options.turns.counts.skipped++ })
      return { token }
    })
    return { token, fetchedHere: true }
  }

  async register (request: RegistrationRequest): Promise<{ credentials: ClientCredentials, registeredHere: boolean }> {
    if (this.#registration === undefined) return { credentials: await request.register(), registeredHere: true }
    if (await this.#options.membership.ensure() === 'not-member') throw notAMember(this.#options.membership)
    return await this.#registration.register(request)
  }

  dropToken (token: string): void {
    if (this.#options.membership.state !== 'member') return
    this.#token.drop(token).catch(() => {})
  }

  /** The fleet's credentials, unless those held here are newer (then shared-credentials.ts put them back). */
  async #converge (broker: CoordinatedBroker): Promise<void> {
    const loaded = await this.#options.credentials?.load()
    if (loaded?.status !== 'found') return
    const replaced = broker.adoptCredentials(loaded.credentials)
    if (replaced === undefined) return
    if (this.#registration?.registeredApart(replaced) === true) {
      await this.#options.superseded.record(replaced, loaded.credentials)
    } else if (!sameClient(replaced, loaded.credentials)) {
      this.#log.info('using the fleet\'s newer client credentials')
    }
  }

  /**
   * The token held here, into a store that lost it: only into an empty key
   * (SET NX), never over a token another instance wrote meanwhile. A value that
   * cannot be used is overwritten only by the holder of the token lock, after
   * a second look. True when put back.
   */
  async #putBack (token: FleetToken, overUnusable: boolean): Promise<boolean> {
    if (!overUnusable) return await this.#token.putBack(token)
    return await this.#options.turns.underLock(this.#tokenLockKey, this.#options.lockTtlMs, async () => await this.#token.overwrite(token)) === true
  }
}

function notAMember (membership: Membership): CoordinationUnavailable {
  return new CoordinationUnavailable(`this instance cannot open the fleet's sealed values (${membership.mismatch ?? 'another STATE_ENCRYPTION_KEY list'}): not a member of the fleet`, true)
}
