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
// kernel buffers, and a client that never reads its answers holds at most the
// bound plus what one read had already brought in. Each answer that
// completes lets a held request in, and reading resumes once none is held.
// An honest pipelining client is slowed, never refused.
//
// Node resumes reading by itself after every request it parses (readStart in
// _http_common.js), so pausing once is not enough: a 'resume' listener pauses
// again, synchronously, before any data can be read, for as long as requests
// are held. Only public socket methods and events are used.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

type Handler = (request: IncomingMessage, response: ServerResponse) => void

/** One connection's requests: those being answered, and those held until one of them is. */
class Pipeline {
  #active = 0
  readonly #held: Array<[IncomingMessage, ServerResponse]> = []

  constructor (readonly socket: Socket, readonly handler: Handler, readonly max: number) {
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
    if (!this.#full) {
      this.#start(request, response)
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
    const next = this.#held.shift()
    if (next !== undefined) this.#start(...next)
    else if (!this.#full) this.socket.resume()
  }
}

/** The connections a server has, each with its pipeline; held weakly, so a closed socket takes its pipeline along. */
export class Pipelines {
  readonly #pipelines = new WeakMap<Socket, Pipeline>()

  constructor (readonly maxPending: number) {}

  /** `handler` (Fastify's) behind the bound: what the server's 'request' event calls. */
  wrap (handler: Handler): Handler {
    return (request, response) => {
      const socket = request.socket
      let pipeline = this.#pipelines.get(socket)
      if (pipeline === undefined) {
        pipeline = new Pipeline(socket, handler, this.maxPending)
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
