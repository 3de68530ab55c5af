// Identical concurrent misses share one upstream request. Each participant
// brings a signal that fires when its caller goes away; the shared work is
// aborted only when every participant has gone before it finished, and then
// forgotten at once, so a caller arriving later starts afresh instead of
// joining work that was cancelled for others.
interface InFlight<T> {
  promise: Promise<T>
  participants: number
  abort: AbortController
}

export class Coalescer<T> {
  readonly #inflight = new Map<string, InFlight<T>>()

  /** Whether a run for `key` is in flight: a run() now would join it rather than start the work. */
  has (key: string): boolean {
    return this.#inflight.has(key)
  }

  run (key: string, work: (signal: AbortSignal) => Promise<T>, callerGone: AbortSignal): Promise<T> {
    let entry = this.#inflight.get(key)
    if (entry === undefined) {
      const abort = new AbortController()
      const started: InFlight<T> = { promise: work(abort.signal), participants: 0, abort }
      const forget = (): void => { if (this.#inflight.get(key) === started) this.#inflight.delete(key) }
      started.promise.then(forget, forget)
      this.#inflight.set(key, started)
      entry = started
    }
    const shared = entry
    shared.participants++
    const leave = (): void => {
      if (--shared.participants > 0) return
      if (this.#inflight.get(key) === shared) this.#inflight.delete(key)
      shared.abort.abort()
    }
    if (callerGone.aborted) leave()
    else callerGone.addEventListener('abort', leave, { once: true })
    const stopListening = (): void => { callerGone.removeEventListener('abort', leave) }
    shared.promise.then(stopListening, stopListening)
    return shared.promise
  }
}
