// The client credentials in fleet mode: one sealed copy in the shared store
// for every instance, and each instance's CREDENTIALS_FILE as a durable copy.
// The shared copy wins when it is there; the file fills a store that lost it
// (a flushed or restarted Redis must not cost a registration); and a store
// that cannot be read is "unavailable", never "absent", so it never makes
// anyone register while credentials may exist. Every copy carries its
// generation (when it was registered), so newer credentials are never traded
// for older ones: sealing stops reading and forging, not an old sealed value
// written back by someone with access to Redis (docs/fleet.md, "What sealing does not stop").
import type { Logger } from 'pino'
import { newerThan, sameClient, type CredentialSource, type CredentialStore, type LoadResult } from '../adobe/credential-store.js'
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
  /** The file's credentials went (back) into the fleet's copy: the others should look (token-coordination.ts tells them). */
  onPutBack?: (credentials: ClientCredentials) => void
  /** Whether this instance is known to be a member (membership.ts): only a member puts credentials back. */
  isMember?: () => boolean
}

export class SharedCredentials implements CredentialSource {
  readonly #file: CredentialStore
  readonly #store: StateStore
  readonly #key: string
  readonly #log: Logger
  readonly #onPutBack: (credentials: ClientCredentials) => void
  readonly #isMember: () => boolean

  constructor (options: SharedCredentialsOptions) {
    this.#file = options.file
    this.#store = options.store
    this.#key = options.key
    this.#log = options.logger
    this.#onPutBack = options.onPutBack ?? (() => {})
    this.#isMember = options.isMember ?? (() => true)
  }

  get path (): string { return this.#file.path }

  /** The fleet's copy; store trouble, or a copy that cannot be used here (does not open, oversized), rejects. */
  async readShared (): Promise<ClientCredentials | undefined> {
    return (await this.#readRaw())?.credentials
  }

  /** Adobe refused `rejected`: remove the shared copy, only if it is still that one. */
  async dropShared (rejected: ClientCredentials): Promise<void> {
    const shared = await this.#readRaw()
    if (shared?.credentials !== undefined && sameClient(shared.credentials, rejected)) await this.#store.deleteIf(this.#key, shared.raw)
  }

  /**
   * The fleet's copy, unless the file holds newer credentials; then the file's,
   * which also go (back) into a store that lost them or holds older ones.
   * Store trouble with no file is `unavailable`.
   */
  async load (): Promise<LoadResult> {
    let shared: SharedCopy | undefined
    let trouble: unknown
    try {
      shared = await this.#readRaw()
    } catch (err) {
      trouble = err
    }
    const local = await this.#file.load()
    if (trouble !== undefined) return local.status === 'found' ? local : { status: 'unavailable', reason: (trouble as Error).message }
    const held = local.status === 'found' ? local.credentials : undefined
    const fleet = shared?.credentials
    // The fleet's copy wins unless the file's is known to be newer (both carry generations).
    if (fleet !== undefined && held !== undefined && shared !== undefined && sameClient(fleet, held) && fleet.generation === undefined && held.generation !== undefined) {
      // The same client, written before generations were kept: give the fleet's copy the file's generation.
      await this.#store.replaceIf(this.#key, shared.raw, encode(held)).catch(() => false)
      return local
    }
    if (fleet !== undefined && (held === undefined || sameClient(fleet, held) || !newerThan(held, fleet))) {
      await this.keepLocalCopy(fleet)
      return { status: 'found', credentials: fleet }
    }
    if (held !== undefined) await this.#putBack(held, shared)
    return local
  }

  /** The file first (the durable copy), then the fleet's copy. */
  async save (credentials: ClientCredentials): Promise<void> {
    try {
      await this.#file.save(credentials)
    } finally {
      await this.#store.set(this.#key, encode(credentials)).catch((err: unknown) => {
        this.#log.warn({ reason: (err as Error).message }, 'could not share the client credentials with the fleet; instances put them back once the store answers')
      })
    }
  }

  /**
   * True once the fleet's copy holds `credentials` (or newer ones): written now
   * if it does not. False while the store cannot be read or written: the
   * registration's lock holder retries before it lets the others look.
   */
  async share (credentials: ClientCredentials): Promise<boolean> {
    try {
      const fleet = (await this.#readRaw())?.credentials
      // Just registered: newer than anything without a generation, or with an older one.
      if (fleet === undefined || (!sameClient(fleet, credentials) && (fleet.generation === undefined || newerThan(credentials, fleet)))) {
        await this.#store.set(this.#key, encode(credentials))
      }
      return true
    } catch {
      return false
    }
  }

  /**
   * Keep the file in step with the fleet's credentials (a restarted pod's empty
   * file, or after another instance re-registered), but never replace newer
   * credentials in the file with older ones from the fleet.
   */
  async keepLocalCopy (credentials: ClientCredentials): Promise<void> {
    const local = await this.#file.load()
    if (local.status === 'found') {
      const held = local.credentials
      // The same client: rewritten only to give a file from before generations the fleet's generation.
      if (sameClient(held, credentials) && (held.generation !== undefined || credentials.generation === undefined)) return
      if (newerThan(held, credentials)) return
    }
    await this.#file.save(credentials).catch((err: unknown) => {
      this.#log.warn({ credentialsFile: this.#file.path, reason: (err as NodeJS.ErrnoException).code }, 'could not keep a local copy of the fleet\'s client credentials')
    })
  }

  /** The fleet's copy with the bytes it opened to (compare-and-swap needs them); store trouble or an unusable copy rejects. */
  async #readRaw (): Promise<SharedCopy | undefined> {
    try {
      const raw = await this.#store.get(this.#key, MAX_CREDENTIALS_BYTES)
      return raw === undefined ? undefined : { raw, credentials: parseCredentials(raw) }
    } catch (err) {
      if (err instanceof StateSealError) {
        this.#log.error({ key: err.key, reason: err.reason, detail: err.message }, 'the shared client credentials do not open with STATE_ENCRYPTION_KEY: every instance of a fleet needs the same key list')
      } else if (isUnusableValue(err)) {
        this.#log.error({ key: err.key, detail: err.message }, 'the shared client credentials cannot be used: not registering over them')
      }
      throw err
    }
  }

  /**
   * The file's credentials into a store that lost them (SET NX: never over a copy
   * another instance wrote meanwhile) or that holds older ones (compare-and-swap:
   * only those very bytes are replaced).
   */
  async #putBack (credentials: ClientCredentials, older: SharedCopy | undefined): Promise<void> {
    // Another key list's credentials, sealed under it, would lock the fleet's members out of their own state.
    if (!this.#isMember()) return
    try {
      if (older === undefined) {
        if (!await this.#store.setIfAbsent(this.#key, encode(credentials))) return
        this.#log.info('the fleet\'s store had no client credentials: put back the ones from CREDENTIALS_FILE')
      } else {
        if (!await this.#store.replaceIf(this.#key, older.raw, encode(credentials))) return
        this.#log.warn('the fleet\'s store held older client credentials than CREDENTIALS_FILE (rolled back, an old value written back, or registered by another instance while apart): replaced them with the newer ones')
      }
      this.#onPutBack(credentials)
    } catch (err) {
      this.#log.warn({ reason: (err as Error).message }, 'could not share the client credentials with the fleet; instances put them back once the store answers')
    }
  }
}

interface SharedCopy {
  raw: Buffer
  /** Undefined when the bytes opened but hold no credentials. */
  credentials: ClientCredentials | undefined
}

function encode (credentials: ClientCredentials): Buffer {
  return Buffer.from(JSON.stringify(credentials))
}

function parseCredentials (raw: Buffer): ClientCredentials | undefined {
  try {
    return credentialsFrom(JSON.parse(raw.toString('utf8')))
  } catch {
    return undefined
  }
}

/** Client credentials from a parsed value (the fleet's copy, or a registration notice), generation included. */
export function credentialsFrom (value: unknown): ClientCredentials | undefined {
  const c = value as Partial<ClientCredentials> | null | undefined
  if (typeof c?.client_id !== 'string' || typeof c.client_secret !== 'string' || c.client_id === '' || c.client_secret === '') return undefined
  return {
    client_id: c.client_id,
    client_secret: c.client_secret,
    ...(typeof c.client_id_issued_at === 'number' ? { client_id_issued_at: c.client_id_issued_at } : {}),
    ...(typeof c.generation === 'number' && Number.isFinite(c.generation) ? { generation: c.generation } : {})
  }
}
