// The token broker in use, switched when a reload brings another software
// statement (config/reload.ts). The new statement's broker starts beside the
// old one: it uses the credentials stored for that statement or registers
// once (in a fleet, once for the whole fleet: its state lives under the new
// statement's namespace, where an instance started with it looks too), and
// takes over only once it holds a token. Until then, and for good when the new
// statement cannot be used, the old broker keeps serving. One switch at a
// time, and the latest one asked for wins: a newer statement replaces one
// still starting, and every step that awaited (closing a broker is a Redis
// round trip in a fleet) looks again whether a newer switch came meanwhile.
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import type { TokenLevers, TokenStatus } from '../adobe/token-status.js'
import type { RequestWarnings, TokenSource } from '../upstream/authorized-fetch.js'

/** What a broker is to the switch (adobe/token-broker.ts: TokenBroker). */
export interface ManagedBroker extends TokenSource, TokenLevers {
  start: () => Promise<void>
  close: () => void
}

/** One statement's broker, and what it needs beside it (in a fleet: the notices of its namespace). */
export interface BrokerGeneration {
  readonly statement: string | undefined
  readonly broker: ManagedBroker
  /** Before the broker starts. */
  start?: (() => Promise<void>) | undefined
  /** After the broker closed. */
  close?: (() => Promise<void>) | undefined
}

export interface SwitchableBrokerOptions {
  initial: BrokerGeneration
  /** A broker for another statement, built as the first one was (app.ts). */
  build: (statement: string) => BrokerGeneration
  logger: Logger
  /** How often a new statement's broker is looked at after its first attempt failed (it retries on its own back-off). */
  readyPollMs?: number
}

type Counts = TokenStatus['counts']

/** `asked`: the number of the latest switchTo() that wants this generation. */
interface Pending { generation: BrokerGeneration, asked: number, cancelled: boolean, done: Promise<void> }

export class SwitchableBroker implements TokenSource, TokenLevers {
  readonly #options: SwitchableBrokerOptions
  readonly #log: Logger
  #current: BrokerGeneration
  #pending: Pending | undefined
  /** How many switches were asked for: the latest one wins. */
  #asked = 0
  /** Counts of the brokers closed so far: the metrics' counters never go back. */
  #retired: Counts = zero()
  readonly #closedGenerations = new WeakSet<BrokerGeneration>()
  #closed = false

  constructor (options: SwitchableBrokerOptions) {
    this.#options = options
    this.#log = options.logger.child({ component: 'statement-switch' })
    this.#current = options.initial
  }

  /** The statement of the broker in use. */
  get statement (): string | undefined { return this.#current.statement }

  currentToken (): string | undefined { return this.#current.broker.currentToken() }
  async getToken (): Promise<string> { return await this.#current.broker.getToken() }
  // The caller's request logger, so the broker's warning carries its reqId and trace_id.
  invalidate (token: string, log?: RequestWarnings): void { this.#current.broker.invalidate(token, log) }
  async refreshNow (): Promise<void> { await this.#current.broker.refreshNow() }
  async reregister (): Promise<void> { await this.#current.broker.reregister() }

  status (): TokenStatus {
    const status = this.#current.broker.status()
    const counts = [this.#retired, status.counts, this.#pending?.generation.broker.status().counts].reduce<Counts>((sum, more) => more === undefined ? sum : add(sum, more), zero())
    return { ...status, counts }
  }

  async start (): Promise<void> {
    await this.#current.start?.()
    await this.#current.broker.start()
  }

  async close (): Promise<void> {
    this.#closed = true
    const pending = this.#pending
    this.#pending = undefined
    if (pending !== undefined) pending.cancelled = true
    await Promise.all([pending?.generation, this.#current].map(async (generation) => { if (generation !== undefined) await this.#closeGeneration(generation) }))
  }

  /**
   * Use `statement` from now on: resolves once its broker took over, or the
   * switch was given up (the statement cannot be used, a newer switch, shutdown).
   * Never rejects: what happened is logged.
   */
  async switchTo (statement: string): Promise<void> {
    const asked = ++this.#asked
    const pending = this.#pending
    if (pending?.generation.statement === statement) {
      pending.asked = asked
      return await pending.done
    }
    if (pending !== undefined) await this.#cancel(pending, 'a newer statement came')
    // While that broker closed, a newer switch may have come (and built its own): it wins.
    if (this.#closed || asked !== this.#asked || statement === this.#current.statement) return
    const generation = this.#options.build(statement)
    const next: Pending = { generation, asked, cancelled: false, done: Promise.resolve() }
    this.#pending = next
    next.done = this.#bringUp(next)
    await next.done
  }

  /** A newer switch was asked for (or shutdown came) since `pending` was. */
  #superseded (pending: Pending): boolean {
    return pending.cancelled || this.#closed || pending.asked !== this.#asked
  }

  async #bringUp (pending: Pending): Promise<void> {
    const { broker } = pending.generation
    try {
      await pending.generation.start?.()
      await broker.start()
    } catch (err) {
      if (this.#superseded(pending)) return await this.#cancel(pending)
      this.#log.error({ reason: (err as Error).message }, 'the new software statement cannot be used here; the one in use keeps serving')
      await this.#cancel(pending)
      return
    }
    if (this.#superseded(pending)) return await this.#cancel(pending)
    this.#log.info('software statement changed: obtaining credentials and a token for the new one while the current one keeps serving')
    await broker.refreshNow().catch((err: unknown) => {
      this.#log.warn({ code: (err as { code?: string }).code }, 'no token yet for the new software statement; the one in use keeps serving while it retries')
    })
    while (!this.#superseded(pending) && !broker.status().ready) await sleep(this.#options.readyPollMs ?? 1_000, undefined, { ref: false })
    if (this.#superseded(pending)) return await this.#cancel(pending)
    const old = this.#current
    this.#current = pending.generation
    this.#pending = undefined
    this.#log.info({ clientChanged: old.broker.status().clientId !== broker.status().clientId }, 'now using the new software statement')
    await this.#closeGeneration(old)
  }

  async #cancel (pending: Pending, why?: string): Promise<void> {
    pending.cancelled = true
    if (this.#pending === pending) this.#pending = undefined
    if (why !== undefined) this.#log.info({ why }, 'gave up switching to a software statement')
    await this.#closeGeneration(pending.generation)
  }

  async #closeGeneration (generation: BrokerGeneration): Promise<void> {
    if (this.#closedGenerations.has(generation)) return
    this.#closedGenerations.add(generation)
    this.#retired = add(this.#retired, generation.broker.status().counts)
    generation.broker.close()
    await generation.close?.()
  }
}

function zero (): Counts {
  return { tokenRequests: 0, tokenFailures: 0, registrations: 0, registrationFailures: 0, tokensFromFleet: 0 }
}

function add (a: Counts, b: Counts): Counts {
  return {
    tokenRequests: a.tokenRequests + b.tokenRequests,
    tokenFailures: a.tokenFailures + b.tokenFailures,
    registrations: a.registrations + b.registrations,
    registrationFailures: a.registrationFailures + b.registrationFailures,
    tokensFromFleet: a.tokensFromFleet + b.tokensFromFleet
  }
}
