// STATE_ENCRYPTION_KEY: one or more 32-byte AES-256 keys, base64 (standard
// or url-safe) or hex, comma-separated. The first key seals new values; all
// of them open old ones, so a key is rotated by putting the new one first and
// dropping the old one once every value has been rewritten (or has expired).
import { createHash, createSecretKey, type KeyObject } from 'node:crypto'
import { StateKeyError } from './errors.js'

export interface StateKey {
  /** 8 bytes that name the key inside every sealed value; derived by a one-way hash, safe to show. */
  readonly id: Buffer
  /** The AES-256 key; a KeyObject so that it never prints or serialises by accident. */
  readonly key: KeyObject
}

export const KEY_BYTES = 32
export const KEY_ID_BYTES = 8

const HEX = /^[0-9a-f]{64}$/i
const BASE64 = /^[A-Za-z0-9+/_-]{43}=?$/

/**
 * Parses the variable's value. Every problem is a StateKeyError whose message
 * names `variable` and the position in the list, and never holds key material.
 */
export function parseStateEncryptionKeys (value: string, variable = 'STATE_ENCRYPTION_KEY'): StateKey[] {
  const parts = value.split(',').map((part) => part.trim())
  if (parts.length === 1 && parts[0] === '') throw new StateKeyError(variable, 'is empty; it needs a 32-byte key (e.g. openssl rand -base64 32)')
  const keys: StateKey[] = []
  parts.forEach((part, index) => {
    const where = parts.length === 1 ? 'the key' : `key ${index + 1} of ${parts.length}`
    if (part === '') throw new StateKeyError(variable, `has an empty entry (${where}) in its comma-separated list`)
    const bytes = decode(part)
    if (bytes === undefined) {
      throw new StateKeyError(variable, `must hold 32-byte keys in base64 or hex (${where} is ${describeShape(part)}); generate one with: openssl rand -base64 32`)
    }
    const key = stateKey(bytes)
    bytes.fill(0)
    if (keys.some((k) => k.id.equals(key.id))) throw new StateKeyError(variable, `lists the same key twice (${where})`)
    keys.push(key)
  })
  return keys
}

/** A key from its 32 raw bytes (tests, and callers that hold bytes already). */
export function stateKey (bytes: Buffer): StateKey {
  if (bytes.length !== KEY_BYTES) throw new RangeError(`a state encryption key has ${KEY_BYTES} bytes (got ${bytes.length})`)
  const id = createHash('sha256').update('cmu-proxy state key id\0').update(bytes).digest().subarray(0, KEY_ID_BYTES)
  return { id, key: createSecretKey(Buffer.from(bytes)) }
}

function decode (text: string): Buffer | undefined {
  // 64 hex digits would also pass as base64 (of 48 bytes): hex is tried first.
  if (HEX.test(text)) return Buffer.from(text, 'hex')
  if (!BASE64.test(text)) return undefined
  // Node's base64 decoder takes the standard and the url-safe alphabet alike.
  const bytes = Buffer.from(text, 'base64')
  return bytes.length === KEY_BYTES ? bytes : undefined
}

/** What is wrong with an entry, by its shape only (alphabet and decoded length), never its characters. */
function describeShape (text: string): string {
  if (/^[0-9a-f]+$/i.test(text)) return `${text.length} hex digits, expected 64`
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) return `base64 of ${Buffer.from(text, 'base64').length} bytes, expected 32`
  return 'neither base64 nor hex'
}
