// The client credentials in fleet mode: one sealed copy in the shared store
// for every instance, and each instance's CREDENTIALS_FILE as a durable copy.
// The shared copy wins when it is there; the file fills a store that lost it
// (a flushed or restarted Redis must not cost a registration); and a store
// that cannot be read is "unavailable", never "absent", so it never makes
// anyone register while credentials may exist.
import type { Logger } from 'pino'
import type { CredentialSource, CredentialStore, LoadResult } from '../adobe/credential-store.js'
import type { ClientCredentials } from '../adobe/dcr-client.js'
import { isUnusableValue, StateSealError } from '../store/errors.js'
import type { StateStore } from '../store/state-store.js'

/** Client credentials are a few hundred bytes; anything much larger at their key is not read. */
const MAX_CREDENTIALS_BYTES = 16 * 1024

export interface SharedCredentialsOptions {
  file: CredentialStore
  store: StateStore
  /** The store key (namespaced by the statement's fingerprint). */
  key: string
  logger: Logger
}

export class SharedCredentials implements CredentialSource {
  readonly #file: CredentialStore
  readonly #store: StateStore
  readonly #key: string
  readonly #log: Logger

  constructor (options: SharedCredentialsOptions) {
    this.#file = options.file
    this.#store = options.store
    this.#key = options.key
    this.#log = options.logger
  }

  get path (): string { return this.#file.path }

  /** The fleet's copy; store trouble, or a copy that cannot be used here (does not open, oversized), rejects. */
  async readShared (): Promise<ClientCredentials | undefined> {
    try {
      const raw = await this.#store.get(this.#key, MAX_CREDENTIALS_BYTES)
      return raw === undefined ? undefined : parseCredentials(raw)
    } catch (err) {
      if (err instanceof StateSealError) {
        this.#log.error({ key: err.key, reason: err.reason, detail: err.message }, 'the shared client credentials do not open with STATE_ENCRYPTION_KEY: every instance of a fleet needs the same key list')
      } else if (isUnusableValue(err)) {
        this.#log.error({ key: err.key, detail: err.message }, 'the shared client credentials cannot be used: not registering over them')
      }
      throw err
    }
  }

  /** Adobe refused `rejected`: remove the shared copy, only if it is still that one. */
  async dropShared (rejected: ClientCredentials): Promise<void> {
    const raw = await this.#store.get(this.#key, MAX_CREDENTIALS_BYTES)
    const current = raw === undefined ? undefined : parseCredentials(raw)
    if (raw !== undefined && current?.client_id === rejected.client_id && current.client_secret === rejected.client_secret) {
      await this.#store.deleteIf(this.#key, raw)
    }
  }

  /** Shared first; else the file, which then fills the store; store trouble with no file is `unavailable`. */
  async load (): Promise<LoadResult> {
    let trouble: unknown
    try {
      const shared = await this.readShared()
      if (shared !== undefined) {
        await this.keepLocalCopy(shared)
        return { status: 'found', credentials: shared }
      }
    } catch (err) {
      trouble = err
    }
    const local = await this.#file.load()
    if (trouble === undefined) {
      if (local.status === 'found') {
        await this.#writeShared(local.credentials)
        this.#log.info('the fleet\'s store had no client credentials: put back the ones from CREDENTIALS_FILE')
      }
      return local
    }
    if (local.status === 'found') return local
    return { status: 'unavailable', reason: (trouble as Error).message }
  }

  /** The file first (the durable copy), then the fleet's copy. */
  async save (credentials: ClientCredentials): Promise<void> {
    try {
      await this.#file.save(credentials)
    } finally {
      await this.#writeShared(credentials)
    }
  }

  /** Keep the file in step with the fleet's credentials (a restarted pod's empty file, or after another instance re-registered). */
  async keepLocalCopy (credentials: ClientCredentials): Promise<void> {
    const local = await this.#file.load()
    if (local.status === 'found' && local.credentials.client_id === credentials.client_id && local.credentials.client_secret === credentials.client_secret) return
    await this.#file.save(credentials).catch((err: unknown) => {
      this.#log.warn({ credentialsFile: this.#file.path, reason: (err as NodeJS.ErrnoException).code }, 'could not keep a local copy of the fleet\'s client credentials')
    })
  }

  async #writeShared (credentials: ClientCredentials): Promise<void> {
    await this.#store.set(this.#key, Buffer.from(JSON.stringify(credentials))).catch((err: unknown) => {
      this.#log.warn({ reason: (err as Error).message }, 'could not share the client credentials with the fleet; instances put them back once the store answers')
    })
  }
}

function parseCredentials (raw: Buffer): ClientCredentials | undefined {
  try {
    const value = JSON.parse(raw.toString('utf8')) as Partial<ClientCredentials>
    if (typeof value.client_id !== 'string' || typeof value.client_secret !== 'string' || value.client_id === '' || value.client_secret === '') return undefined
    return { client_id: value.client_id, client_secret: value.client_secret, ...(typeof value.client_id_issued_at === 'number' ? { client_id_issued_at: value.client_id_issued_at } : {}) }
  } catch {
    return undefined
  }
}
