// One token attempt at a time, shared by every caller (single-flight), with
// re-registration as the slot's own rule rather than a convention of its
// caller: an attempt that registers never runs beside one that still uses the
// old credentials, and when it has to wait for one, it takes the slot in the
// very callback that frees it, before any caller of the finished attempt
// resumes, so no other attempt can start in between. What an attempt does is
// the broker's business (token-broker.ts).

interface Flight<T> {
  promise: Promise<T>
  registers: boolean
}

interface Queued<T> {
  promise: Promise<T>
  resolve: (attempt: Promise<T>) => void
}

export class AttemptSlot<T> {
  readonly #run: (registers: boolean) => Promise<T>
  #current: Flight<T> | undefined
  /** A registration asked for while another attempt ran: it starts when that one settles. */
  #queued: Queued<T> | undefined

  /** `run(registers)`: one attempt; `registers` asks it to register new credentials first. */
  constructor (run: (registers: boolean) => Promise<T>) {
    this.#run = run
  }

  get busy (): boolean {
    return this.#current !== undefined
  }

  /** The attempt in flight, whatever it does, or a new one that uses the credentials held. */
  join (): Promise<T> {
    this.#current ??= this.#start(false)
    return this.#current.promise
  }

  /** An attempt that registers first: the one in flight if it does, else the next one (shared by every caller until it starts). */
  register (): Promise<T> {
    this.#current ??= this.#start(true)
    if (this.#current.registers) return this.#current.promise
    this.#queued ??= queued()
    return this.#queued.promise
  }

  #start (registers: boolean): Flight<T> {
    return { registers, promise: this.#run(registers).finally(() => { this.#settled() }) }
  }

  /** Runs as the attempt settles, before its callers resume: a queued registration takes the slot first. */
  #settled (): void {
    const next = this.#queued
    this.#queued = undefined
    this.#current = next === undefined ? undefined : this.#start(true)
    if (next !== undefined && this.#current !== undefined) next.resolve(this.#current.promise)
  }
}

function queued<T> (): Queued<T> {
  let resolve: (attempt: Promise<T>) => void = () => {}
  const promise = new Promise<T>((resolvePromise) => { resolve = resolvePromise })
  return { promise, resolve }
}
