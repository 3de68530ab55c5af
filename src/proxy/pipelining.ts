// INBOUND_MAX_PIPELINED_REQUESTS: how many requests one connection may have
// waiting for their answers. Node's HTTP server hands every request it parses
// to the app at once, and a client may pipeline thousands before reading a
// single answer: each would become a Fastify request, an upstream call and a
// queued response (issue 19: 50 connections, 1 million requests, gigabytes).
// Node stops reading a connection only when its answers pile up unsent, which
// a fast cache or a 503 reaches too late.
//
// So past the bound, requests are held here (before Fastify sees them) and
// the socket stops being read: the client's further requests wait in its own
// kernel buffers. Each answer that completes lets a held request in (on the
// next turn of the event loop), and reading resumes once none is held. An
// honest pipelining client is slowed, not refused.
//
// Node parses a whole read at once (64 KiB: some 1,500 short requests), so
// pausing cannot stop what one read brought in. At most MAX_HELD of those
// wait; a burst past that closes the connection unanswered, as RFC 9112
// §9.3.2 lets a server do (the client retries what was not answered). Without
// that cap, 50 such connections held 70,000 parsed requests (about 110 MiB).
//
// Node resumes reading by itself after every request it parses (readStart in
// _http_common.js), so pausing once is not enough: a 'resume' listener pauses
// again, synchronously, before any data can be read, for as long as requests
// are held. Only public socket methods and events are used.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

type Handler = (request: IncomingMessage, response: ServerResponse) => void

/** Requests read past the bound that may wait for their turn; one more closes the connection. */
export const MAX_HELD = 64

/** One connection's requests: those being answered, and those held until one of them is. */
class Pipeline {
  #active = 0
  readonly #held: Array<[IncomingMessage, ServerResponse]> = []
  /** Held requests are let in on the next turn of the event loop (see #answered). */
  #scheduled = false
  /** Closed for a burst past MAX_HELD: what the parser still hands over is dropped. */
  #cut = false

  constructor (readonly socket: Socket, readonly handler: Handler, readonly max: number, readonly onBurst: () => void) {
    socket.on('resume', () => { if (this.#full) socket.pause() })
    // The caller left: what it queued will never be answered.
    socket.once('close', () => { this.#held.length = 0 })
  }

  /** Answers are pending on this connection (or requests are held): writing anything else on it would cut into them. */
  get busy (): boolean {
    return this.#active > 0 || this.#held.length > 0
  }

  get #full (): boolean {
    return this.#active >= this.max || this.#held.length > 0
  }

  arrived (request: IncomingMessage, response: ServerResponse): void {
    if (this.#cut) return
    if (!this.#full) {
      this.#start(request, response)
      return
    }
    if (this.#held.length >= MAX_HELD) {
      this.#cut = true
      this.#held.length = 0
      this.onBurst()
      this.socket.destroy()
      return
    }
    this.#held.push([request, response])
    this.socket.pause()
  }

  #start (request: IncomingMessage, response: ServerResponse): void {
    this.#active++
    // 'close' follows 'finish', and also comes when the connection fails mid-answer.
    response.once('close', this.#answered)
    this.handler(request, response)
  }

  readonly #answered = (): void => {
    this.#active--
    if (this.#held.length === 0) {
      if (!this.#full) this.socket.resume()
      return
    }
    // Not at once: an answer that completes at once (a cache hit into an empty socket buffer)
    // would let the next in, and the next, in one chain of ticks that starves every other
    // connection's I/O (a non-reading flood kept /healthz waiting for seconds this way).
    if (this.#scheduled) return
    this.#scheduled = true
    setImmediate(this.#startHeld)
  }

  readonly #startHeld = (): void => {
    this.#scheduled = false
    while (this.#active < this.max) {
      const next = this.#held.shift()
      if (next === undefined) break
      this.#start(...next)
    }
    if (!this.#full) this.socket.resume()
  }
}

/** The connections a server has, each with its pipeline; held weakly, so a closed socket takes its pipeline along. */
export class Pipelines {
  readonly #pipelines = new WeakMap<Socket, Pipeline>()

  /** `onBurst`: a connection was closed for pipelining past MAX_HELD in one burst. */
  constructor (readonly maxPending: number, readonly onBurst: () => void) {}

  /** `handler` (Fastify's) behind the bound: what the server's 'request' event calls. */
  wrap (handler: Handler): Handler {
    return (request, response) => {
      const socket = request.socket
      let pipeline = this.#pipelines.get(socket)
      if (pipeline === undefined) {
        pipeline = new Pipeline(socket, handler, this.maxPending, this.onBurst)
        this.#pipelines.set(socket, pipeline)
      }
      pipeline.arrived(request, response)
    }
  }

  /** Whether answers are pending on `socket`. */
  busy (socket: Socket): boolean {
    return this.#pipelines.get(socket)?.busy ?? false
  }
}
