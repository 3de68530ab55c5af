// Values the fleet can rebuild (the shared token, cached reports) that are
// there but cannot be used: sealed with a key this instance does not hold,
// altered, or larger than their kind may be. Such a value is read as absent,
// so whoever takes the lock next overwrites it. Treating it as "Redis is
// down" instead would make this instance act alone for good and never write
// the shared state back. The credentials are the exception (shared-credentials.ts):
// there an unusable value is "unavailable", since they may only need the right key.
import type { Logger } from 'pino'
import { isUnusableValue } from '../store/errors.js'
import type { StateStore } from '../store/state-store.js'

export const UNUSABLE = Symbol('unusable')

export class RebuildableValues {
  readonly #store: StateStore
  readonly #log: Logger
  readonly #what: string
  #warned = false

  /** `what` names the kind in the one warning logged (e.g. 'the shared access token'). */
  constructor (store: StateStore, logger: Logger, what: string) {
    this.#store = store
    this.#log = logger
    this.#what = what
  }

  /** The value at `key`, undefined when absent, UNUSABLE when there but unusable; store trouble rejects. */
  async read (key: string, maxBytes: number): Promise<Buffer | undefined | typeof UNUSABLE> {
    try {
      return await this.#store.get(key, maxBytes)
    } catch (err) {
      if (!isUnusableValue(err)) throw err
      this.unusable(err)
      return UNUSABLE
    }
  }

  /** Says once per process, at warn, which key and why (the key id it was sealed with); never the value. */
  unusable (err: Error & { key: string }): void {
    if (this.#warned) return
    this.#warned = true
    this.#log.warn({ key: err.key, reason: err.message }, `${this.#what} in the fleet's store cannot be used here: treated as absent, and overwritten by the next instance that rebuilds it`)
  }
}
