// The client credentials a token call uses: held in memory; else the
// pre-provisioned ADOBE_CLIENT_ID/ADOBE_CLIENT_SECRET; else the ones persisted
// for this statement; else registered with Adobe (once per fleet, through the
// coordination), stamped with their generation and persisted. Adobe: register
// once, reuse, and register again only when Adobe refuses them
// (invalid_client) or an admin asks.
import type { Tracer } from '@opentelemetry/api'
import type { Logger } from 'pino'
import { inSpan } from '../telemetry/tracing.js'
import { soloCoordination, type TokenCoordination } from './coordination.js'
import { newerThan, proveWritable, sameClient, type CredentialSource } from './credential-store.js'
import type { ClientCredentials, DcrClient } from './dcr-client.js'
import { CoordinationUnavailable, CredentialsNotWritable, NoSoftwareStatement, TokenStepFailed } from './errors.js'
import { classifyFailure } from './token-policy.js'

export interface CredentialsOptions {
  dcr: DcrClient
  logger: Logger
  /** Needed to register; absent when only pre-provisioned credentials are configured. */
  softwareStatement?: string | undefined
  /** Where registered credentials persist; absent with pre-provisioned credentials and no statement. */
  store?: CredentialSource | undefined
  /** ADOBE_CLIENT_ID / ADOBE_CLIENT_SECRET: used instead of registering. */
  staticCredentials?: ClientCredentials | undefined
  /** Who else registers (fleet mode); default: nobody. */
  coordination?: TokenCoordination | undefined
  /**
   * Fleet mode: the fleet's sealed copy is the durable store, so a
   * CREDENTIALS_FILE that cannot be written is a warning, not a reason to stop.
   */
  durableElsewhere?: boolean | undefined
  /** Generations are wall-clock instants (default Date.now). */
  wallNow?: () => number
  tracer?: Tracer | undefined
}

export interface CredentialCounts {
  registrations: number
  registrationFailures: number
}

export class Credentials {
  readonly #options: CredentialsOptions
  readonly #log: Logger
  readonly #coordination: TokenCoordination
  readonly #wallNow: () => number
  readonly #counts: CredentialCounts = { registrations: 0, registrationFailures: 0 }
  #held: ClientCredentials | undefined
  /** Credentials Adobe refused or an admin dropped, while their replacement is registered: never taken back. */
  #rejected: ClientCredentials | undefined

  constructor (options: CredentialsOptions) {
    this.#options = options
    this.#log = options.logger.child({ component: 'credentials' })
    this.#coordination = options.coordination ?? soloCoordination
    this.#wallNow = options.wallNow ?? Date.now
  }

  /** A software statement is configured: registering is possible. */
  get canRegister (): boolean {
    return this.#options.softwareStatement !== undefined
  }

  /** The credentials in use now, if any (their client id goes to the admin view, masked). */
  held (): ClientCredentials | undefined {
    return this.#held
  }

  counts (): CredentialCounts {
    return { ...this.#counts }
  }

  /**
   * Before any call to Adobe: proves that CREDENTIALS_FILE can be written.
   * Rejects with CredentialsNotWritable (a lone instance stops, exit 78);
   * in fleet mode it only warns.
   */
  async proveDurable (): Promise<void> {
    const { store, durableElsewhere } = this.#options
    if (store === undefined) return
    try {
      await proveWritable(store.path)
    } catch (err) {
      if (!(err instanceof CredentialsNotWritable) || durableElsewhere !== true) throw err
      this.#log.warn({ credentialsFile: store.path, reason: err.errno }, 'CREDENTIALS_FILE cannot be written; in fleet mode the fleet\'s sealed copy is the durable store, so this instance serves on')
    }
  }

  /** The credentials to use: held, pre-provisioned, stored, or else registered now. */
  async ensure (): Promise<ClientCredentials> {
    if (this.#held !== undefined) return this.#held
    const { staticCredentials, store } = this.#options
    if (staticCredentials !== undefined) {
      this.#held = staticCredentials
      return staticCredentials
    }
    const loaded = await store?.load()
    if (loaded?.status === 'unavailable') {
      // Backend trouble is never "absent": another instance may hold them, and registering would make a second client.
      throw new TokenStepFailed('register', new CoordinationUnavailable('no client credentials are held here and the fleet\'s state store cannot be read; not registering while another instance may hold them', false, loaded.reason))
    }
    if (loaded?.status === 'found') {
      this.#log.info({ credentialsFile: store?.path }, 'using stored client credentials')
      this.#held = loaded.credentials
      return loaded.credentials
    }
    if (loaded?.status === 'other-statement') {
      this.#log.warn({ credentialsFile: store?.path }, 'stored client credentials belong to another software statement; registering')
    } else if (loaded?.status === 'unreadable') {
      this.#log.warn({ credentialsFile: store?.path, reason: loaded.reason }, 'stored client credentials are unreadable; registering')
    }
    return await this.register()
  }

  /**
   * The fleet settled on `credentials` (after instances registered apart): use
   * them, unless those held here are known to be newer, or are the ones being
   * replaced; returns the credentials they replace, if any.
   */
  adopt (credentials: ClientCredentials): ClientCredentials | undefined {
    const held = this.#held
    if (held === undefined || sameClient(held, credentials) || newerThan(held, credentials)) return undefined
    if (this.#rejected !== undefined && sameClient(this.#rejected, credentials)) return undefined
    this.#held = credentials
    return held
  }

  /** Adobe refused `credentials` (invalid_client), or an admin dropped them: forget them, and never take them back. */
  reject (credentials: ClientCredentials | undefined): void {
    this.#rejected = credentials
    this.#held = undefined
  }

  /** New credentials: registered here, or by another instance of the fleet meanwhile (never the rejected ones). */
  async register (): Promise<ClientCredentials> {
    const { softwareStatement } = this.#options
    if (softwareStatement === undefined) throw new TokenStepFailed('register', new NoSoftwareStatement())
    let outcome: { credentials: ClientCredentials, registeredHere: boolean }
    try {
      outcome = await this.#coordination.register({
        rejected: this.#rejected,
        register: async () => await this.#registerHere(softwareStatement, this.#rejected),
        describeFailure: (err) => classifyFailure(err, this.canRegister)
      })
    } catch (err) {
      throw err instanceof TokenStepFailed ? err : new TokenStepFailed('register', err)
    }
    this.#held = outcome.credentials
    this.#rejected = undefined
    if (!outcome.registeredHere) this.#log.info({ clientId: maskClientId(outcome.credentials.client_id) }, 'using client credentials another instance registered')
    return outcome.credentials
  }

  async #registerHere (softwareStatement: string, rejected: ClientCredentials | undefined): Promise<ClientCredentials> {
    const { store, dcr, tracer } = this.#options
    this.#counts.registrations++
    let credentials: ClientCredentials
    try {
      // Stamped with their generation: every copy of them carries it (dcr-client.ts). Always above the
      // rejected client's, even when that one was stamped by a host whose clock runs ahead.
      const generation = Math.max(this.#wallNow(), (rejected?.generation ?? 0) + 1)
      credentials = { ...await inSpan(tracer, 'cmu_proxy.register', {}, async () => await dcr.registerClient(softwareStatement)), generation }
    } catch (err) {
      this.#counts.registrationFailures++
      throw new TokenStepFailed('register', err)
    }
    this.#held = credentials
    this.#log.info({ clientId: maskClientId(credentials.client_id) }, 'registered client credentials')
    if (store !== undefined) {
      try {
        await store.save(credentials)
      } catch (err) {
        // Keep serving with the in-memory credentials. Alone, the next start registers again (the start-up
        // check makes that rare); in a fleet, the fleet's sealed copy keeps them.
        const fleet = this.#options.durableElsewhere === true
        this.#log[fleet ? 'warn' : 'error']({ credentialsFile: store.path, reason: (err as NodeJS.ErrnoException).code ?? 'error' }, 'could not persist client credentials')
      }
    }
    return credentials
  }
}

/** Enough of a client id to tell two apart in logs and the admin view. */
export function maskClientId (clientId: string): string {
  return clientId.length <= 8 ? '****' : `${clientId.slice(0, 4)}…${clientId.slice(-4)}`
}
