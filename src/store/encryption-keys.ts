// STATE_ENCRYPTION_KEY: one or more 32-byte AES-256 keys, base64 (standard
// or url-safe) or hex, comma-separated (state-key-list.ts reads that format,
// below config.ts). The first key seals new values; all
// of them open old ones. A key is rotated in three rollouts, so that
// instances of two neighbouring phases always open each other's values:
// OLD,NEW (NEW opens), then NEW,OLD (NEW seals), then NEW alone once every
// value has been rewritten (or has expired); sealed-store.ts says why.
import { createHash, createSecretKey, type KeyObject } from 'node:crypto'
import { decodeStateKeys, STATE_KEY_BYTES } from '../config/state-key-list.js'
import { StateKeyError } from './errors.js'

export interface StateKey {
  /** 8 bytes that name the key inside every sealed value; derived by a one-way hash, safe to show. */
  readonly id: Buffer
  /** The AES-256 key; a KeyObject so that it never prints or serialises by accident. */
  readonly key: KeyObject
}

export const KEY_BYTES = STATE_KEY_BYTES
export const KEY_ID_BYTES = 8

/**
 * Parses the variable's value (its format: state-key-list.ts). Every problem is
 * a StateKeyError whose message names `variable` and the position in the
 * list, and never holds key material.
 */
export function parseStateEncryptionKeys (value: string, variable = 'STATE_ENCRYPTION_KEY'): StateKey[] {
  const decoded = decodeStateKeys(value)
  if ('problem' in decoded) throw new StateKeyError(variable, decoded.problem)
  return decoded.keys.map((bytes) => {
    const key = stateKey(bytes)
    bytes.fill(0)
    return key
  })
}

/** A key from its 32 raw bytes (tests, and callers that hold bytes already). */
export function stateKey (bytes: Buffer): StateKey {
  if (bytes.length !== KEY_BYTES) throw new RangeError(`a state encryption key has ${KEY_BYTES} bytes (got ${bytes.length})`)
  const id = createHash('sha256').update('cmu-proxy state key id\0').update(bytes).digest().subarray(0, KEY_ID_BYTES)
  return { id, key: createSecretKey(Buffer.from(bytes)) }
}
