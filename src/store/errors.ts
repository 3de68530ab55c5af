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
