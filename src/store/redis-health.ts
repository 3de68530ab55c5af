// Is Redis there? One small state machine, fed by the connection's events
// and by what happens to commands, so that "down" means what it says:
// - the connection is lost (an error, a reconnect), or
// - commands have been timing out, with no answer at all, for a span of
//   wall-clock time (`downAfterMs`): one slow reply, or a burst of timeouts
//   at one instant, is not an outage; three sequential timeouts are.
// While down that way (hung: the socket open, nothing answering) the store
// refuses commands at once and probes; after `reconnectAfterMs` without an
// answer the socket is made anew (a failed-over peer never answers on the
// old one), and again after as long.
// Each outage is logged twice, when it starts and when it ends, with what
// was refused or failed meanwhile (not one line per failed write).
import type { Logger } from 'pino'
import type { StoreProblem } from './state-store.js'

export interface RedisHealthOptions {
  /** Where to, for log lines (no credentials). */
  target: string
  commandTimeoutMs: number
  downAfterMs?: number
  reconnectAfterMs?: number
  logger?: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'> | undefined
  now?: () => number
}

interface Outage { since: number, refused: number, failed: number, reconnects: number }

export class RedisHealth {
  readonly #target: string
  readonly #downAfterMs: number
  readonly #reconnectAfterMs: number
  readonly #logger: RedisHealthOptions['logger']
  readonly #now: () => number
  readonly #upListeners = new Set<() => void>()
  #connected = false
  #lastAnswerAt: number
  /** Start of the current span without answers, once a command timed out in it. */
  #troubleSince: number | undefined
  #hung = false
  #lastReconnectAt = 0
  #misconfigured: StoreProblem | undefined
  #closed = false
  #up = false
  #everUp = false
  #outage: Outage | undefined
  outages = 0
  refused = 0
  returns = 0
  lastProblem: StoreProblem | undefined

  constructor (options: RedisHealthOptions) {
    this.#target = options.target
    this.#downAfterMs = options.downAfterMs ?? 3 * options.commandTimeoutMs
    this.#reconnectAfterMs = options.reconnectAfterMs ?? 10 * options.commandTimeoutMs
    this.#logger = options.logger
    this.#now = options.now ?? (() => performance.now())
    this.#lastAnswerAt = this.#now()
  }

  /** Connected and answering. */
  get up (): boolean { return this.#up }
  /** Down by span (the socket open, nothing answering): refuse at once and probe. */
  get hung (): boolean { return this.#hung }
  get lastAnswerAt (): number { return this.#lastAnswerAt }
  /** A problem no retry fixes (wrong password, a Cluster node without REDIS_CLUSTER): waiting is pointless. */
  get needsOperator (): boolean { return this.#misconfigured !== undefined || this.lastProblem?.configuration === true }

  /** Why a command must be refused without being sent, or undefined to send it. */
  refusal (): string | undefined {
    if (this.#closed) return 'the store is closed'
    if (this.#misconfigured !== undefined) return this.#misconfigured.reason
    if (this.#hung) return `not answering for ${Math.round(this.#now() - (this.#troubleSince ?? this.#lastAnswerAt))} ms; probing in the background`
    return undefined
  }

  /** `listener` runs on every return to "up", the first connection included. */
  onUp (listener: () => void): () => void {
    this.#upListeners.add(listener)
    return () => { this.#upListeners.delete(listener) }
  }

  /** The connection is ready: its handshake was answered. */
  connected (): void {
    this.#connected = true
    this.answered()
  }

  /** The connection dropped, or could not be made. */
  lost (problem: StoreProblem): void {
    this.lastProblem = problem
    this.#connected = false
    this.#update(problem.reason)
  }

  /** Any reply, error replies included: Redis is there. */
  answered (): void {
    // An answer travelled over a connection: it is there (Sentinel and Cluster clients say "ready" only after a topology change).
    this.#connected = true
    this.#lastAnswerAt = this.#now()
    this.#troubleSince = undefined
    this.#hung = false
    this.#update()
  }

  /** A command sent at `startedAt` got no answer within its deadline. */
  timedOut (startedAt: number, problem: StoreProblem): void {
    this.lastProblem = problem
    this.#troubleSince ??= Math.max(startedAt, this.#lastAnswerAt)
    if (!this.#hung && this.#now() - this.#troubleSince >= this.#downAfterMs) this.#hung = true
    this.#update(`${problem.reason}, and none for ${Math.round(this.#now() - this.#troubleSince)} ms`)
    // Counted once the outage is known, so the timeout that revealed it is one of its failures.
    this.#countFailure()
  }

  /** A command failed without an answer (offline, the connection dropped under it). */
  failed (problem: StoreProblem): void {
    this.lastProblem = problem
    this.#countFailure()
  }

  /** A command was refused at once, without being sent (hung, or the client offline: `problem` says which). */
  refusedOne (problem: StoreProblem | undefined): void {
    if (problem !== undefined) this.lastProblem = problem
    this.refused++
    if (this.#outage !== undefined) this.#outage.refused++
  }

  /** True once per `reconnectAfterMs` of a hang: time to drop the socket and make a new one. */
  reconnectDue (): boolean {
    if (!this.#hung || this.#troubleSince === undefined) return false
    const now = this.#now()
    if (now - Math.max(this.#troubleSince, this.#lastReconnectAt) < this.#reconnectAfterMs) return false
    this.#lastReconnectAt = now
    if (this.#outage !== undefined) this.#outage.reconnects++
    this.#logger?.debug({ redis: this.#target, unansweredMs: Math.round(now - this.#troubleSince) }, 'redis is not answering on this connection: connecting again')
    return true
  }

  /** Redis is not what the settings say (a Cluster node without REDIS_CLUSTER): down until the settings change. */
  misconfigured (problem: StoreProblem): void {
    if (this.#misconfigured !== undefined) return
    this.#misconfigured = problem
    this.lastProblem = problem
    this.#logger?.error({ redis: this.#target, reason: problem.reason }, 'redis is not usable with these settings: serving from local state until they are fixed')
    this.#update()
  }

  close (): void {
    this.#closed = true
    this.#up = false
  }

  #countFailure (): void {
    if (this.#outage !== undefined) this.#outage.failed++
  }

  #update (reason?: string): void {
    if (this.#closed) return
    const up = this.#connected && !this.#hung && this.#misconfigured === undefined
    if (up === this.#up) {
      // Never connected yet: the first failure starts the outage (and its one line).
      if (!up && this.#outage === undefined && reason !== undefined) this.#down(reason)
      return
    }
    this.#up = up
    if (!up) {
      if (this.#outage === undefined && reason !== undefined) this.#down(reason)
      return
    }
    const outage = this.#outage
    this.#outage = undefined
    if (!this.#everUp) {
      this.#everUp = true
      this.#logger?.info({ redis: this.#target, ...(outage === undefined ? {} : this.#summary(outage)) }, 'redis connected')
    } else {
      this.returns++
      this.#logger?.info({ redis: this.#target, ...(outage === undefined ? {} : this.#summary(outage)) }, 'redis available again')
    }
    for (const listener of [...this.#upListeners]) listener()
  }

  #down (reason: string): void {
    if (this.#misconfigured !== undefined) return
    this.outages++
    this.#outage = { since: this.#now(), refused: 0, failed: 0, reconnects: 0 }
    this.#logger?.warn({ redis: this.#target, reason }, 'redis unavailable; serving from local state and retrying')
  }

  /** What the outage cost: how long, commands refused unsent, commands sent that failed, sockets made anew. */
  #summary (outage: Outage): { unavailableMs: number, refused: number, failed: number, reconnects: number } {
    return { unavailableMs: Math.round(this.#now() - outage.since), refused: outage.refused, failed: outage.failed, reconnects: outage.reconnects }
  }
}
