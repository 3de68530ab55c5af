// A decorator that seals every value (and every notification) with
// AES-256-GCM before it reaches the store underneath, so Redis only ever holds
// ciphertext: client secrets, tokens and cached reports alike.
//
// A sealed value: version (1 byte) | key id (8) | IV (12) | GCM tag (16) | ciphertext.
// - The key id says which key of STATE_ENCRYPTION_KEY sealed it: the first
//   key seals, every key opens (rotation).
// - The additional authenticated data is the full store key, so a value
//   copied to another key does not open there. Notifications use the channel
//   name, marked so that a notification never opens as a stored value.
// - A value that does not open is a StateSealError, never garbage and never "absent".
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { KEY_ID_BYTES, type StateKey } from './encryption-keys.js'
import { StateSealError, StateValueTooLargeError, type SealFailure } from './errors.js'
import type { StateStore, StoreLock, StoreStats } from './state-store.js'

const VERSION = 1
const IV_BYTES = 12
const TAG_BYTES = 16
const HEADER_BYTES = 1 + KEY_ID_BYTES + IV_BYTES + TAG_BYTES

export interface SealedStoreOptions {
  logger?: Pick<Logger, 'info' | 'warn'> | undefined
  /** Never re-seal what is read (`cmu-proxy check`: it may run with a key list the fleet does not use yet). */
  readOnly?: boolean | undefined
  /** Notifications that do not open: one line when they start, one when none came for this long (default a minute). */
  quietAfterMs?: number
}

/** Notifications dropped since the first of a run of them. */
interface DroppedRun { since: number, dropped: number, reasons: Set<SealFailure>, quiet: NodeJS.Timeout | undefined }

export class SealedStore implements StateStore {
  readonly #inner: StateStore
  #keys: readonly StateKey[]
  #sealingKey: StateKey
  readonly #logger: SealedStoreOptions['logger']
  readonly #reseal: boolean
  readonly #quietAfterMs: number
  #dropped: DroppedRun | undefined
  #unsealFailures = 0
  #resealed = 0

  /** `keys`: the first seals, all open. The sealed store owns `inner` and closes it. */
  constructor (inner: StateStore, keys: readonly StateKey[], options: SealedStoreOptions = {}) {
    const [first] = keys
    if (first === undefined) throw new RangeError('a sealed store needs at least one key')
    this.#inner = inner
    this.#keys = keys
    this.#sealingKey = first
    this.#logger = options.logger
    this.#reseal = options.readOnly !== true
    this.#quietAfterMs = options.quietAfterMs ?? 60_000
  }

  /**
   * Another key list, read again without a restart (STATE_ENCRYPTION_KEY): the
   * new first key seals from now on and every listed key opens, for values
   * and notifications alike. The reload accepts only a list that keeps the
   * key that sealed until now, so nothing this instance wrote stops opening.
   */
  useKeys (keys: readonly StateKey[]): void {
    const [first] = keys
    if (first === undefined) throw new RangeError('a sealed store needs at least one key')
    this.#keys = keys
    this.#sealingKey = first
  }

  /**
   * A value sealed under another listed key is re-sealed under the first one
   * as it is read (compare-and-swap, TTL kept): values that never expire, such
   * as the shared credentials, would otherwise keep the old key in use forever.
   * A value sealed with the first key is never touched, which is what makes a
   * rolling rotation safe: phase 1 (OLD,NEW) keeps sealing with OLD, so
   * instances that know only OLD read everything; phase 2 (NEW,OLD) seals with
   * NEW, which phase-1 instances open (they may re-seal it back under OLD until
   * they are gone: both lists open both); phase 3 drops OLD.
   */
  async get (key: string, maxBytes?: number): Promise<Buffer | undefined> {
    const sealed = await this.#inner.get(key, maxBytes === undefined ? undefined : maxBytes + HEADER_BYTES)
    if (sealed === undefined) return undefined
    const aad = keyAad(key)
    const value = this.#open(sealed, key, aad)
    if (this.#reseal && !sealed.subarray(1, 1 + KEY_ID_BYTES).equals(this.#sealingKey.id)) {
      this.#inner.replaceIf(key, sealed, this.#seal(value, aad)).then((replaced) => { if (replaced) this.#resealed++ }, () => {})
    }
    return value
  }

  async set (key: string, value: Buffer, ttlMs?: number): Promise<void> {
    await this.#inner.set(key, this.#seal(value, keyAad(key)), ttlMs)
  }

  async setIfAbsent (key: string, value: Buffer, ttlMs?: number): Promise<boolean> {
    return await this.#inner.setIfAbsent(key, this.#seal(value, keyAad(key)), ttlMs)
  }

  async delete (key: string): Promise<boolean> {
    return await this.#inner.delete(key)
  }

  /** Names are not sealed: the store underneath finds them. */
  async deleteByPrefix (prefix: string): Promise<number> {
    return await this.#inner.deleteByPrefix(prefix)
  }

  /** Ciphertexts differ on every write: compare the opened value, then delete only that very ciphertext. */
  async deleteIf (key: string, expected: Buffer): Promise<boolean> {
    const sealed = await this.#sealedIfEqual(key, expected)
    return sealed !== undefined && await this.#inner.deleteIf(key, sealed)
  }

  async replaceIf (key: string, expected: Buffer, value: Buffer): Promise<boolean> {
    const sealed = await this.#sealedIfEqual(key, expected)
    return sealed !== undefined && await this.#inner.replaceIf(key, sealed, this.#seal(value, keyAad(key)))
  }

  /** Counters are plain integers under digested names (the store must add to them): not sealed. */
  async increment (key: string, windowMs: number): Promise<{ count: number, ttlMs: number }> {
    return await this.#inner.increment(key, windowMs)
  }

  /** Lock values are random and name nobody: they need no sealing. */
  lock (key: string): StoreLock {
    return this.#inner.lock(key)
  }

  async subscribe (channel: string, handler: (message: Buffer) => void, unreadable?: () => void): Promise<() => Promise<void>> {
    const aad = channelAad(channel)
    return await this.#inner.subscribe(channel, (sealed) => {
      let message: Buffer
      try {
        message = this.#open(sealed, channel, aad)
      } catch (err) {
        // Another key list, or someone else publishing on our channel: drop it, say so once per run of them.
        this.#droppedNotification(channel, (err as StateSealError).reason)
        unreadable?.()
        return
      }
      handler(message)
    })
  }

  async publish (channel: string, message: Buffer): Promise<void> {
    await this.#inner.publish(channel, this.#seal(message, channelAad(channel)))
  }

  async ping (): Promise<void> {
    await this.#inner.ping()
  }

  async waitUntilUp (timeoutMs: number): Promise<boolean> {
    return await this.#inner.waitUntilUp(timeoutMs)
  }

  onUp (listener: () => void): () => void {
    return this.#inner.onUp(listener)
  }

  stats (): StoreStats {
    return { ...this.#inner.stats(), unsealFailures: this.#unsealFailures, resealed: this.#resealed }
  }

  async close (): Promise<void> {
    clearTimeout(this.#dropped?.quiet)
    await this.#inner.close()
  }

  /** One warning when notifications start failing to open, one line with the count once they have stopped. */
  #droppedNotification (channel: string, reason: SealFailure): void {
    const run = this.#dropped ??= { since: Date.now(), dropped: 0, reasons: new Set(), quiet: undefined }
    run.dropped++
    if (!run.reasons.has(reason)) {
      run.reasons.add(reason)
      this.#logger?.warn({ channel, reason, code: 'CMU_PROXY_STATE_UNSEALABLE' }, 'dropped a state notification that does not open with STATE_ENCRYPTION_KEY (an instance with another key list?); further ones are counted, not logged')
    }
    clearTimeout(run.quiet)
    run.quiet = setTimeout(() => {
      this.#dropped = undefined
      this.#logger?.info({ dropped: run.dropped, reasons: [...run.reasons], forMs: Date.now() - run.since }, 'no more state notifications that do not open')
    }, this.#quietAfterMs)
    run.quiet.unref()
  }

  /** The ciphertext at `key` while it opens to `expected`; a longer one cannot, and is not read. */
  async #sealedIfEqual (key: string, expected: Buffer): Promise<Buffer | undefined> {
    let sealed: Buffer | undefined
    try {
      sealed = await this.#inner.get(key, expected.length + HEADER_BYTES)
    } catch (err) {
      if (err instanceof StateValueTooLargeError) return undefined
      throw err
    }
    return sealed !== undefined && this.#open(sealed, key, keyAad(key)).equals(expected) ? sealed : undefined
  }

  #seal (plaintext: Buffer, aad: Buffer): Buffer {
    const { id, key } = this.#sealingKey
    const iv = randomBytes(IV_BYTES)
    const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES })
    cipher.setAAD(aad)
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()])
    return Buffer.concat([Buffer.of(VERSION), id, iv, cipher.getAuthTag(), ciphertext])
  }

  #open (sealed: Buffer, name: string, aad: Buffer): Buffer {
    if (sealed.length < HEADER_BYTES || sealed[0] !== VERSION) {
      throw this.#failure('malformed', name, 'it is not a sealed value (written unsealed, or by another program)')
    }
    let offset = 1
    const id = sealed.subarray(offset, offset += KEY_ID_BYTES)
    const iv = sealed.subarray(offset, offset += IV_BYTES)
    const tag = sealed.subarray(offset, offset += TAG_BYTES)
    const stateKey = this.#keys.find((k) => k.id.equals(id))
    if (stateKey === undefined) {
      throw this.#failure('unknown-key', name, `it was sealed with a key that is not in STATE_ENCRYPTION_KEY (key id ${id.toString('hex')}); add that key to the list to read it`)
    }
    const decipher = createDecipheriv('aes-256-gcm', stateKey.key, iv, { authTagLength: TAG_BYTES })
    decipher.setAAD(aad)
    decipher.setAuthTag(tag)
    try {
      return Buffer.concat([decipher.update(sealed.subarray(offset)), decipher.final()])
    } catch {
      throw this.#failure('not-authentic', name, 'authentication failed (the value was altered, or copied from another key)')
    }
  }

  #failure (reason: StateSealError['reason'], name: string, detail: string): StateSealError {
    this.#unsealFailures++
    return new StateSealError(reason, name, detail)
  }
}

function keyAad (key: string): Buffer {
  return Buffer.from(key, 'utf8')
}

/** NUL never starts a store key (namespace.ts), so a notification's AAD never equals a key's. */
function channelAad (channel: string): Buffer {
  return Buffer.from(`\0channel\0${channel}`, 'utf8')
}
