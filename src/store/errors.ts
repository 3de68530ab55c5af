// The store layer's errors. Each has a stable code so the layers above can
// tell "the backend is in trouble" (keep what you hold, back off) from "this
// value cannot be opened with the configured keys" (an operator's mistake),
// and neither can ever be mistaken for "absent".

/** The backend did not answer in time, is disconnected, refused the command, or the store is closed. */
export class StoreUnavailableError extends Error {
  readonly code = 'CMU_PROXY_STORE_UNAVAILABLE'
  /** The operation that failed (get, set, lock.obtain, ...). */
  readonly operation: string

  constructor (operation: string, reason: string, options: { cause?: unknown } = {}) {
    super(`state store unavailable during ${operation}: ${reason}`, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'StoreUnavailableError'
    this.operation = operation
  }
}

export type SealFailure = 'unknown-key' | 'not-authentic' | 'malformed'

/**
 * A sealed value that cannot be opened: written with a key that is not in
 * STATE_ENCRYPTION_KEY (`unknown-key`), altered or moved to another key
 * (`not-authentic`), or not a sealed value at all (`malformed`).
 */
export class StateSealError extends Error {
  readonly code = 'CMU_PROXY_STATE_UNSEALABLE'
  readonly reason: SealFailure
  /** The store key (or channel) whose value failed; never the value. */
  readonly key: string

  constructor (reason: SealFailure, key: string, detail: string) {
    super(`cannot open the sealed value of ${key}: ${detail}`)
    this.name = 'StateSealError'
    this.reason = reason
    this.key = key
  }
}

/**
 * A stored value larger than its kind may be (a token, a cached report plus
 * its headers), refused before it is read: whoever can write to Redis must
 * not make every instance allocate a 64 MB value on each read.
 */
export class StateValueTooLargeError extends Error {
  readonly code = 'CMU_PROXY_STATE_VALUE_TOO_LARGE'
  /** The store key; never the value. */
  readonly key: string

  constructor (key: string, bytes: number, maxBytes: number) {
    super(`the value of ${key} is ${bytes} bytes, more than the ${maxBytes} allowed for it; not read`)
    this.name = 'StateValueTooLargeError'
    this.key = key
  }
}

/**
 * A value is there but cannot be used (it does not open, or is too large).
 * Not "Redis is down": the store answered. The token and cache treat it as
 * absent and overwrite it; the credentials treat it as unavailable, so that
 * nothing registers over credentials that may only need the right key.
 */
export function isUnusableValue (err: unknown): err is StateSealError | StateValueTooLargeError {
  return err instanceof StateSealError || err instanceof StateValueTooLargeError
}

/** STATE_ENCRYPTION_KEY (or its _FILE) is malformed. The message names the variable and never holds key material. */
export class StateKeyError extends Error {
  readonly code = 'CMU_PROXY_STATE_KEY_INVALID'
  readonly variable: string

  constructor (variable: string, problem: string) {
    super(`${variable} ${problem}`)
    this.name = 'StateKeyError'
    this.variable = variable
  }
}
