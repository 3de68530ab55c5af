// Store keys and channels: REDIS_KEY_PREFIX, then a fingerprint of the
// application (its software statement, or its client id when only
// pre-provisioned credentials are configured), then the name. Two
// applications sharing one Redis never see each other's state, and a key
// names its application without revealing anything about it.
import { createHash } from 'node:crypto'

export const DEFAULT_KEY_PREFIX = 'cmu-proxy:'

export type StateIdentity = { softwareStatement: string } | { clientId: string }

export interface StateNamespace {
  /** Everything this application's keys start with, e.g. `cmu-proxy:s-3f2a9c0b11de4a77:`. */
  readonly base: string
  /** `base` + the parts joined by ':'. Parts are short names: hash anything long or caller-supplied with digest(). */
  key: (...parts: string[]) => string
  /** A pub/sub channel, namespaced like the keys. */
  channel: (name: string) => string
}

const PART = /^[A-Za-z0-9._-]{1,128}$/

export interface NamespaceOptions {
  /**
   * Redis Cluster: the fingerprint in braces, a hash tag, so that every key and
   * channel of the application maps to one hash slot, as on a single Redis.
   * https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags
   */
  hashTag?: boolean
}

export function stateNamespace (prefix: string, identity: StateIdentity, options: NamespaceOptions = {}): StateNamespace {
  if (/[\0\s]/.test(prefix)) throw new RangeError('the key prefix must not contain whitespace or NUL')
  // The statement's SHA-256 is its fingerprint in the credentials file and /admin/status too.
  const fingerprint = 'softwareStatement' in identity
    ? `s-${sha256Hex(identity.softwareStatement).slice(0, 16)}`
    : `c-${sha256Hex(identity.clientId).slice(0, 16)}`
  const base = options.hashTag === true ? `${prefix}{${fingerprint}}:` : `${prefix}${fingerprint}:`
  const key = (...parts: string[]): string => {
    if (parts.length === 0) throw new RangeError('a state key needs at least one part')
    for (const part of parts) if (!PART.test(part)) throw new RangeError(`a state key part must match ${String(PART)}: hash it with digest()`)
    return base + parts.join(':')
  }
  return { base, key, channel: (name) => key('channel', name) }
}

/** A short, stable digest (132 bits, base64url) for key parts that are long or caller-supplied (cache keys, API keys). */
export function digest (text: string): string {
  return createHash('sha256').update(text).digest('base64url').slice(0, 22)
}

function sha256Hex (text: string): string {
  return createHash('sha256').update(text).digest('hex')
}
