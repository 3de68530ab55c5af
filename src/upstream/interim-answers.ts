// Informational (1xx) answers before Adobe's final one, such as a CDN's
// `103 Early Hints`. undici restarts its headers timer on each, so a steady
// drip of them would hold a request (its UPSTREAM_MAX_PENDING slot and an
// upstream connection) forever: past the headers deadline, counted from the
// dispatch, or past a few of them, the request ends as Adobe's failure.
import { upstreamBadResponse, upstreamTimeout, type ProxyError } from '../kernel/errors.js'

/** More than a CDN sends (one 100 or 103, at times a few): beyond it, no final answer is coming. */
export const MAX_INTERIM_ANSWERS = 8

export class InterimAnswers {
  readonly #deadline: number
  #count = 0

  /** From now (the dispatch), for `headersTimeoutMs` (UPSTREAM_HEADERS_TIMEOUT_MS). */
  constructor (headersTimeoutMs: number) {
    this.#deadline = performance.now() + headersTimeoutMs
  }

  /** Counts one interim answer; the error to end the request with when it is one too many or too late. */
  exceeded (statusCode: number): ProxyError | undefined {
    this.#count++
    if (performance.now() > this.#deadline) return upstreamTimeout('response headers, after informational answers')
    if (this.#count > MAX_INTERIM_ANSWERS) return upstreamBadResponse(statusCode, `the ${this.#count}th informational answer before a final one`)
    return undefined
  }
}
