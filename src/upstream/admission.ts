// UPSTREAM_MAX_PENDING: how many requests may wait for Adobe at once (sent or
// queued, no response headers yet). undici's own queue has no bound, so
// Upstream admits each request here first and sheds the rest with a 503.
import { overloaded } from '../kernel/errors.js'

/** Counts requests waiting for Adobe and refuses new ones past the bound. */
export class Admission {
  waiting = 0
  shed = 0
  constructor (readonly maxPending: number) {}

  /** Throws CMU_PROXY_OVERLOADED when maxPending requests already wait. */
  admit (): void {
    if (this.waiting >= this.maxPending) {
      this.shed++
      throw overloaded()
    }
    this.waiting++
  }

  release (): void {
    this.waiting--
  }

  /** A retry of a request already admitted: it waits for Adobe again, whatever the count (the retry budget bounds these). */
  readmit (): void {
    this.waiting++
  }
}
