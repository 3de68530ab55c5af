// Inbound API keys: a caller presents one as `Authorization: Bearer <key>` or
// `X-Api-Key`. Keys are compared as SHA-256 digests with timingSafeEqual, and
// every configured key is checked, so timing says nothing about which (or how
// much of one) matched. A reload replaces the list in place (ops/live-secrets.ts):
// every check reads the list of the moment.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'

export class ApiKeys {
  #digests: Buffer[]

  constructor (keys: readonly string[]) {
    this.#digests = keys.map(digest)
  }

  /** The keys from now on (a reload); a key kept keeps its id, so its rate-limit count goes on. */
  replace (keys: readonly string[]): void {
    this.#digests = keys.map(digest)
  }

  get size (): number { return this.#digests.length }

  matches (candidate: string | undefined): boolean {
    return this.identify(candidate) !== undefined
  }

  /**
   * A stable, non-secret id of the configured key `candidate` is (the first
   * 16 hex digits of its SHA-256), or undefined. Rate limits count per id, so
   * not even a digest of a whole key is kept in memory or Redis.
   */
  identify (candidate: string | undefined): string | undefined {
    if (candidate === undefined || candidate === '') return undefined
    const presented = digest(candidate)
    let matched: Buffer | undefined
    for (const known of this.#digests) if (timingSafeEqual(known, presented)) matched = known
    return matched === undefined ? undefined : keyId(matched)
  }
}

/** The id identify() gives `key` (for RATE_LIMIT_KEYS overrides). */
export function apiKeyId (key: string): string {
  return keyId(digest(key))
}

function keyId (keyDigest: Buffer): string {
  return keyDigest.subarray(0, 8).toString('hex')
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
