// The fleet's access token in the store: one sealed copy, with PX = what is
// left of its usable life, so the store forgets it when no instance may use
// it any more. A value there that cannot be used reads as UNUSABLE (absent,
// to be overwritten; unusable-values.ts).
import type { FleetToken } from '../adobe/coordination.js'
import type { StateStore } from '../store/state-store.js'
import { RebuildableValues, UNUSABLE } from './unusable-values.js'

/** A shared token is a few hundred bytes; anything much larger at its key is not read. */
export const MAX_TOKEN_BYTES = 16 * 1024

export class SharedToken {
  readonly #store: StateStore
  readonly #key: string
  readonly #values: RebuildableValues
  readonly #wallNow: () => number

  constructor (options: { store: StateStore, key: string, values: RebuildableValues, wallNow: () => number }) {
    this.#store = options.store
    this.#key = options.key
    this.#values = options.values
    this.#wallNow = options.wallNow
  }

  /** The shared token; UNUSABLE when a value is there that cannot be used. Store trouble rejects. */
  async read (): Promise<FleetToken | typeof UNUSABLE | undefined> {
    const raw = await this.#values.read(this.#key, MAX_TOKEN_BYTES, 'the shared access token')
    if (raw === undefined || raw === UNUSABLE) return raw
    return parseToken(parseJson(raw)) ?? UNUSABLE
  }

  /** The shared token, if there is a usable one. */
  async usable (): Promise<FleetToken | undefined> {
    const token = await this.read()
    return token === UNUSABLE ? undefined : token
  }

  /**
   * A new token, for the fleet: it replaces what is there, unless that expires
   * later (written meanwhile by an instance that took over a lock this one held
   * too long). Store trouble rejects.
   */
  async share (token: FleetToken): Promise<void> {
    const ttlMs = token.usable_until - this.#wallNow()
    const current = await this.usable()
    if (ttlMs <= 0 || (current !== undefined && current.expires_at > token.expires_at)) return
    await this.#store.set(this.#key, encode(token), ttlMs)
  }

  /** Into an empty key only (SET NX), never over a token another instance wrote meanwhile; true when put back. */
  async putBack (token: FleetToken): Promise<boolean> {
    const ttlMs = token.usable_until - this.#wallNow()
    return ttlMs > 0 && await this.#store.setIfAbsent(this.#key, encode(token), ttlMs)
  }

  /** Over a value that cannot be used (the caller holds the token lock and looked again); true when written. */
  async overwrite (token: FleetToken): Promise<boolean> {
    const ttlMs = token.usable_until - this.#wallNow()
    if (ttlMs <= 0 || await this.read() !== UNUSABLE) return false
    await this.#store.set(this.#key, encode(token), ttlMs)
    return true
  }

  /** Adobe refused `accessToken` (401): forget the shared copy if it is still that one. */
  async drop (accessToken: string): Promise<void> {
    const raw = await this.#store.get(this.#key, MAX_TOKEN_BYTES)
    if (raw !== undefined && parseToken(parseJson(raw))?.access_token === accessToken) await this.#store.deleteIf(this.#key, raw)
  }
}

function encode (token: FleetToken): Buffer {
  return Buffer.from(JSON.stringify(token))
}

function parseJson (raw: Buffer): unknown {
  try {
    return JSON.parse(raw.toString('utf8'))
  } catch {
    return undefined
  }
}

export function parseToken (value: unknown): FleetToken | undefined {
  const token = value as Partial<FleetToken> | null | undefined
  if (typeof token?.access_token !== 'string' || token.access_token === '') return undefined
  if (typeof token.obtained_at !== 'number' || typeof token.expires_at !== 'number' || typeof token.usable_until !== 'number') return undefined
  return { access_token: token.access_token, obtained_at: token.obtained_at, expires_at: token.expires_at, usable_until: token.usable_until }
}
