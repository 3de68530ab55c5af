// One registration per fleet, as a turn (turns.ts): the member that holds the
// registration lock registers and saves (its file, then the fleet's copy)
// before it lets go; the others take the credentials from its notice or from
// the store. Acting alone could create a second client, so a member that
// cannot ask the fleet, or hears nothing in time, does not register, with one
// exception: when Adobe refused the credentials it holds (invalid_client)
// and the store cannot be asked, it registers its own rather than stop
// serving. The fleet converges on one client once the store answers
// (token-coordination.ts), and lists the others (superseded-clients.ts).
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import type { FailureNotice, RegistrationRequest } from '../adobe/coordination.js'
import { newerThan, sameClient } from '../adobe/credential-store.js'
import type { ClientCredentials } from '../adobe/dcr-client.js'
import { CoordinationUnavailable, FleetAttemptFailed } from '../adobe/errors.js'
import { isUnusableValue } from '../store/errors.js'
import { isStoreTrouble } from './fleet-channel.js'
import { attemptFailed, readAttemptFailure } from './notices.js'
import { credentialsFrom, type SharedCredentials } from './shared-credentials.js'
import { doTheWork, type Turn, type Turns } from './turns.js'

export interface RegistrationOptions {
  shared: SharedCredentials
  turns: Turns
  lockKey: string
  topic: string
  lockTtlMs: number
  maxWaitMs: number
  logger: Logger
}

/** Writes of new credentials the registration's lock holder tries before it lets go (see #share). */
const SHARE_ATTEMPTS = 3
/** Clients registered apart from the fleet that this process remembers (a few per outage at most). */
const MAX_APART = 16

export class FleetRegistration {
  readonly #options: RegistrationOptions
  readonly #shared: SharedCredentials
  readonly #log: Logger
  readonly #apart = new Set<string>()

  constructor (options: RegistrationOptions) {
    this.#options = options
    this.#shared = options.shared
    this.#log = options.logger
  }

  /** Did this process register `credentials` while the fleet's store could not be asked? */
  registeredApart (credentials: ClientCredentials): boolean {
    return this.#apart.has(credentials.client_id)
  }

  async register (request: RegistrationRequest): Promise<{ credentials: ClientCredentials, registeredHere: boolean }> {
    const { rejected } = request
    // Not the rejected client, and, when the rejected one has a generation, registered after it: older
    // credentials another instance put back meanwhile (or an old notice replayed) are not taken.
    const acceptable = (c: ClientCredentials | undefined): c is ClientCredentials =>
      c !== undefined && (rejected === undefined || (!sameClient(c, rejected) && (rejected.generation === undefined || newerThan(c, rejected))))
    let turn: Turn<ClientCredentials, FailureNotice>
    try {
      if (rejected !== undefined) await this.#shared.dropShared(rejected).catch((err: unknown) => { if (!isStoreTrouble(err)) throw err })
      turn = await this.#options.turns.take<ClientCredentials, FailureNotice>({
        topic: this.#options.topic,
        lockKey: this.#options.lockKey,
        lockTtlMs: this.#options.lockTtlMs,
        maxWaitMs: this.#options.maxWaitMs,
        look: async () => {
          const found = await this.#shared.readShared()
          return acceptable(found) ? { kind: 'found', value: found } : undefined
        },
        read: (notice) => {
          const failure = readAttemptFailure(notice)
          if (failure !== undefined) return { kind: 'failed', failure }
          const credentials = credentialsFrom(notice.credentials)
          return acceptable(credentials) ? { kind: 'found', value: credentials } : { kind: 'look' }
        },
        tell: (found) => found.kind === 'found' ? { credentials: found.value } : attemptFailed(found.failure)
      })
    } catch (err) {
      // There but unusable here (another key list, altered, oversized): perhaps only the key is wrong, so never register over them.
      if (isUnusableValue(err)) throw new CoordinationUnavailable('the fleet\'s client credentials cannot be used here; not registering over them', false, err.message)
      throw err
    }
    if (turn.kind === 'found') return await this.#fromFleet(turn.value)
    if (turn.kind === 'failed') throw new FleetAttemptFailed(turn.failure)
    const failureNotice = (err: unknown): Record<string, unknown> => attemptFailed(request.describeFailure(err))
    if (turn.kind === 'lead') {
      // Registers and saves (the file and the fleet's copy) before the lock is released.
      const credentials = await doTheWork(turn, request.register, failureNotice, async (credentials) => {
        await this.#share(credentials)
        return { credentials }
      })
      return { credentials, registeredHere: true }
    }
    if (turn.why === 'store-trouble' && rejected !== undefined) {
      // Credentials Adobe refused are dead: with no fleet to ask, each instance replaces its own.
      this.#log.warn('the fleet\'s store cannot be asked: registering here, since Adobe refused the credentials held')
      const credentials = await doTheWork(turn, request.register, failureNotice, async (credentials) => ({ credentials }))
      if (this.#apart.size >= MAX_APART) this.#apart.clear()
      this.#apart.add(credentials.client_id)
      return { credentials, registeredHere: true }
    }
    throw new CoordinationUnavailable(turn.why === 'store-trouble'
      ? 'no client credentials are held here and the fleet\'s state store cannot be read; not registering while another instance may hold them'
      : 'another instance holds the fleet\'s registration lock and has not finished; not registering a second client')
  }

  /**
   * Before the registration lock is released: make sure the fleet's copy holds
   * the new credentials. A store that blinked during the save would otherwise
   * let the next lock holder find nothing and register a second client. A few
   * tries within the lock's lifetime; the notice carries them either way.
   */
  async #share (credentials: ClientCredentials): Promise<void> {
    const pauseMs = Math.max(1, Math.floor(this.#options.lockTtlMs / 8))
    for (let attempt = 1; attempt <= SHARE_ATTEMPTS; attempt++) {
      if (await this.#shared.share(credentials)) return
      if (attempt < SHARE_ATTEMPTS) await sleep(pauseMs, undefined, { ref: false })
    }
    this.#log.warn('could not write the new client credentials to the fleet\'s store: the others take them from the notice or from this instance\'s put-back')
  }

  async #fromFleet (credentials: ClientCredentials): Promise<{ credentials: ClientCredentials, registeredHere: boolean }> {
    await this.#shared.keepLocalCopy(credentials)
    return { credentials, registeredHere: false }
  }
}
