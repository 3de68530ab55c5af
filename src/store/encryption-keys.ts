// STATE_ENCRYPTION_KEY: one or more 32-byte AES-256 keys (decoded at start by
// config/, which hands them over as secret KeyObjects). The first key seals
// new values; all of them open old ones. A key is rotated in three rollouts,
// so that instances of two neighbouring phases always open each other's
// values: OLD,NEW (NEW opens), then NEW,OLD (NEW seals), then NEW alone once
// every value has been rewritten (or has expired); sealed-store.ts says why.
import { createHash, createSecretKey, KeyObject } from 'node:crypto'

export interface StateKey {
  /** 8 bytes that name the key inside every sealed value; derived by a one-way hash, safe to show. */
  readonly id: Buffer
  /** The AES-256 key; a KeyObject so that it never prints or serialises by accident. */
  readonly key: KeyObject
}

export const KEY_BYTES = 32
export const KEY_ID_BYTES = 8

/** A key from its 32 raw bytes (tests) or from a secret KeyObject (the settings). */
export function stateKey (material: Buffer | KeyObject): StateKey {
  const key = material instanceof KeyObject ? material : createSecretKey(Buffer.from(material))
  if (key.type !== 'secret' || key.symmetricKeySize !== KEY_BYTES) throw new RangeError(`a state encryption key has ${KEY_BYTES} bytes (got ${key.symmetricKeySize ?? 0})`)
  const bytes = key.export()
  const id = createHash('sha256').update('cmu-proxy state key id\0').update(bytes).digest().subarray(0, KEY_ID_BYTES)
  bytes.fill(0)
  return { id, key }
}
