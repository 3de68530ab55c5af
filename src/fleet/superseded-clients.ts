// Clients the fleet stopped using. When Redis cannot be asked and Adobe
// refuses the credentials (invalid_client), each instance registers its own
// client rather than stop serving; once Redis answers, they converge on one
// (the newest generation, shared-credentials.ts) and the others are left
// alive at Adobe, which has no call to delete a client. Each instance that
// registered one of them says so once, and adds it to a short list in the
// fleet's store, so `/admin/status` on any instance shows what an operator
// may revoke at Adobe (masked client ids, like everywhere else).
import type { Logger } from 'pino'
import { maskClientId } from '../adobe/credentials.js'
import type { ClientCredentials } from '../adobe/dcr-client.js'
import type { StateStore } from '../store/state-store.js'

export interface SupersededClient {
  /** Masked, as in the rest of the admin view. */
  clientId: string
  /** When it was registered (its generation), and when the fleet stopped using it (ISO 8601). */
  registeredAt: string | null
  supersededAt: string
  /** The masked client the fleet uses instead. */
  replacedBy: string
}

/** The list is for people: a few entries are enough, and bound what is read. */
const MAX_ENTRIES = 20
const MAX_BYTES = 16 * 1024
const WRITE_ATTEMPTS = 3

export class SupersededClients {
  readonly #store: StateStore
  readonly #key: string
  readonly #log: Logger
  readonly #wallNow: () => number
  #known: SupersededClient[] = []

  constructor (options: { store: StateStore, key: string, logger: Logger, wallNow: () => number }) {
    this.#store = options.store
    this.#key = options.key
    this.#log = options.logger
    this.#wallNow = options.wallNow
  }

  /** What the fleet's list held when last read (or written) here. */
  list (): SupersededClient[] {
    return this.#known
  }

  /** Reads the fleet's list (store trouble and unusable values leave the last one known). */
  async refresh (): Promise<void> {
    this.#known = await this.#read().then((found) => found?.entries ?? this.#known, () => this.#known)
  }

  /** This instance registered `client` while apart from the fleet, which now uses `fleets`: say so once, and list it. */
  async record (client: ClientCredentials, fleets: ClientCredentials): Promise<void> {
    const entry: SupersededClient = {
      clientId: maskClientId(client.client_id),
      registeredAt: client.generation === undefined ? null : new Date(client.generation).toISOString(),
      supersededAt: new Date(this.#wallNow()).toISOString(),
      replacedBy: maskClientId(fleets.client_id)
    }
    this.#log.warn({ clientId: entry.clientId, replacedBy: entry.replacedBy }, 'this instance registered a client while the fleet\'s store could not be asked; the fleet now uses another (the newest): revoke the one listed in /admin/status at Adobe')
    for (let attempt = 0; attempt < WRITE_ATTEMPTS; attempt++) {
      try {
        const found = await this.#read()
        const entries = [...(found?.entries ?? []).filter((e) => e.clientId !== entry.clientId), entry].slice(-MAX_ENTRIES)
        const value = Buffer.from(JSON.stringify(entries))
        const written = found === undefined ? await this.#store.setIfAbsent(this.#key, value) : await this.#store.replaceIf(this.#key, found.raw, value)
        if (written) {
          this.#known = entries
          return
        }
      } catch {
        break
      }
    }
    // The store could not take it: listed here at least.
    this.#known = [...this.#known.filter((e) => e.clientId !== entry.clientId), entry].slice(-MAX_ENTRIES)
  }

  async #read (): Promise<{ raw: Buffer, entries: SupersededClient[] } | undefined> {
    const raw = await this.#store.get(this.#key, MAX_BYTES)
    return raw === undefined ? undefined : { raw, entries: parse(raw) }
  }
}

/** The list's well-formed entries, with only their known fields (they reach /admin/status). */
function parse (raw: Buffer): SupersededClient[] {
  let value: unknown
  try {
    value = JSON.parse(raw.toString('utf8'))
  } catch {
    return []
  }
  if (!Array.isArray(value)) return []
  return value.slice(-MAX_ENTRIES).flatMap((item: unknown) => {
    const e = item as Partial<Record<keyof SupersededClient, unknown>> | null
    if (typeof e?.clientId !== 'string' || typeof e.supersededAt !== 'string' || typeof e.replacedBy !== 'string') return []
    return [{ clientId: e.clientId, registeredAt: typeof e.registeredAt === 'string' ? e.registeredAt : null, supersededAt: e.supersededAt, replacedBy: e.replacedBy }]
  })
}
