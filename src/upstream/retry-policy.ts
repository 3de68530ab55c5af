// When a call to Adobe may be sent once more (issue #14). Only a connection
// that failed before any response header arrived qualifies: reset or closed
// by the other side (often a keep-alive connection that Adobe or a load
// balancer closed just as we reused it) or refused. A timeout, an HTTP status
// or a failure after the headers never does. Retries of report calls come out
// of a budget, as in Envoy's retry budgets, so that an Adobe that is really
// down never sees twice the load.

/** Metric label of a retry: which transport failure it hid. */
export type RetryReason = 'reset' | 'closed' | 'refused'

/** undici / Node error codes (undici lib/core/errors.js) that mean the request never got an answer started. */
const RETRYABLE = new Map<string, RetryReason>([
  ['ECONNRESET', 'reset'],
  ['EPIPE', 'reset'],
  ['UND_ERR_SOCKET', 'closed'], // "other side closed", or any socket error before the answer began
  ['ECONNREFUSED', 'refused']
])

export interface RetryPolicyOptions {
  /** Share of the report requests in the window that may be retries (Envoy: budget_percent). */
  budgetRatio?: number
  /** Retries always allowed per window, however quiet it was (Envoy: min_retry_concurrency). */
  budgetFloor?: number
  windowMs?: number
  /** Upper bound of the jittered pause before a retry. */
  maxPauseMs?: number
  random?: () => number
}

export class RetryPolicy {
  /** Retries made, by reason (report and token calls), read at scrape time. */
  readonly retries: Record<RetryReason, number> = { reset: 0, closed: 0, refused: 0 }
  /** Report calls that qualified for a retry but found the budget spent. */
  budgetExhausted = 0
  readonly #budget: RetryBudget
  readonly #maxPauseMs: number
  readonly #random: () => number

  constructor (options: RetryPolicyOptions = {}) {
    this.#budget = new RetryBudget(options.budgetRatio ?? 0.1, options.budgetFloor ?? 3, options.windowMs ?? 10_000)
    this.#maxPauseMs = options.maxPauseMs ?? 100
    this.#random = options.random ?? Math.random
  }

  /** A report request is being sent (not its retry); `now` is performance.now(). */
  record (now: number): void {
    this.#budget.record(now)
  }

  /** Whether the report call that failed with `error` is retried: it must qualify and fit the budget. */
  retryReport (error: unknown, now: number): boolean {
    const reason = retryReason(error)
    if (reason === undefined) return false
    if (!this.#budget.spend(now)) {
      this.budgetExhausted++
      return false
    }
    this.retries[reason]++
    return true
  }

  /**
   * Whether the token call that failed with `error` is retried. Outside the
   * budget: the broker makes one token call at a time and backs off after a
   * failed one, so these retries are few by construction.
   */
  retryToken (error: unknown): boolean {
    const reason = retryReason(error)
    if (reason === undefined) return false
    this.retries[reason]++
    return true
  }

  /** Full jitter below maxPauseMs, so connections dropped together are not retried in lock-step. */
  async pause (): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, this.#random() * this.#maxPauseMs))
  }
}

function retryReason (error: unknown): RetryReason | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? RETRYABLE.get(code) : undefined
}

/**
 * Retries may not exceed `ratio` of the requests of the last `windowMs`, or
 * `floor`, whichever is more. The window slides in ten slots: the current
 * one, counted in two plain numbers (recording a request is a comparison and
 * an increment), and the nine before it.
 */
export class RetryBudget {
  static readonly SLOTS = 10
  readonly #pastRequests = new Float64Array(RetryBudget.SLOTS - 1)
  readonly #pastRetries = new Float64Array(RetryBudget.SLOTS - 1)
  readonly #slotMs: number
  #requests = 0
  #retries = 0
  /** Where the slot that ended last is kept in the past arrays. */
  #last = 0
  /** When the current slot ends (same clock as `now`). */
  #slotEnd = -Infinity

  constructor (readonly ratio: number, readonly floor: number, windowMs: number) {
    this.#slotMs = windowMs / RetryBudget.SLOTS
  }

  record (now: number): void {
    if (now >= this.#slotEnd) this.#advance(now)
    this.#requests++
  }

  /** Takes one retry from the budget, if there is one left. */
  spend (now: number): boolean {
    if (now >= this.#slotEnd) this.#advance(now)
    let requests = this.#requests
    let retries = this.#retries
    for (const n of this.#pastRequests) requests += n
    for (const n of this.#pastRetries) retries += n
    if (retries >= Math.max(this.floor, this.ratio * requests)) return false
    this.#retries++
    return true
  }

  /** Moves to the slot holding `now`: the current slot becomes past, slots passed over are empty. */
  #advance (now: number): void {
    const past = RetryBudget.SLOTS - 1
    const crossed = Math.floor((now - this.#slotEnd) / this.#slotMs) + 1
    // After a quiet spell longer than the window, the current slot has left it too.
    const keep = crossed <= past
    for (let i = 0; i < Math.min(past, crossed); i++) {
      this.#last = (this.#last + 1) % past
      this.#pastRequests[this.#last] = i === 0 && keep ? this.#requests : 0
      this.#pastRetries[this.#last] = i === 0 && keep ? this.#retries : 0
    }
    this.#requests = 0
    this.#retries = 0
    this.#slotEnd = (Math.floor(now / this.#slotMs) + 1) * this.#slotMs
  }
}
