// Inbound API keys: a caller presents one as `Authorization: Bearer <key>` or
// `X-Api-Key`. Keys are compared as SHA-256 digests with timingSafeEqual, and
// every configured key is checked, so timing says nothing about which (or how
// much of one) matched.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'

export { parseKeyList } from '../key-list.js'

export class ApiKeys {
  readonly #digests: Buffer[]

  constructor (keys: readonly string[]) {
    this.#digests = keys.map(digest)
  }

  get size (): number { return this.#digests.length }

  matches (candidate: string | undefined): boolean {
    if (candidate === undefined || candidate === '') return false
    const presented = digest(candidate)
    let matched = false
    for (const known of this.#digests) matched = timingSafeEqual(known, presented) || matched
    return matched
  }
}

/** The key a caller presents, if any. */
export function presentedKey (headers: IncomingHttpHeaders): string | undefined {
  const apiKey = headers['x-api-key']
  if (typeof apiKey === 'string') return apiKey.trim()
  const authorization = headers.authorization
  if (authorization === undefined) return undefined
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization)
  return match?.[1]
}

function digest (key: string): Buffer {
  return createHash('sha256').update(key).digest()
}
