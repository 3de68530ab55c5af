// The fast lane: plain GET/HEAD requests under the /cmu prefix are read and
// answered straight on the socket, without Node's HTTP server objects and
// Fastify's request lifecycle, which cost about a third of a proxied
// request's CPU (bench/README.md). Everything else, and every request the
// lane is not sure about, goes to Node's HTTP server and Fastify unchanged:
// the connection is handed over (with the bytes already read put back) and
// stays there. The lane owns a connection only while its requests qualify.
import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { ProxyMetrics } from '../ops/metrics.js'
import { presentedKey, type ApiKeys } from '../proxy/api-keys.js'
import type { CmuForwarder } from '../proxy/cmu-forwarder.js'
import { upstreamTarget, type UpstreamTarget } from '../proxy/target.js'
import { LaneExchange } from './lane-exchange.js'
import type { RawResponse, ResponseOwner } from './raw-response.js'
import { MAX_HEAD_BYTES, parseRequestHead, type RequestHead } from './request-head.js'

export interface FastLaneOptions {
  pathPrefix: string
  forwarder: CmuForwarder
  apiKeys: ApiKeys
  logger: Logger
  metrics: ProxyMetrics
}

const END_OF_HEAD = Buffer.from('\r\n\r\n')

export class FastLane {
  readonly #server: Server
  readonly #options: FastLaneOptions
  readonly #handToNode: (socket: Socket) => void
  readonly #connections = new Set<LaneConnection>()
  #closing = false

  /**
   * Takes over the server's 'connection' event. Node's HTTP server registers
   * exactly one listener there (its HTTP parser); the lane keeps it to hand
   * connections over. Returns undefined (and changes nothing) if that is not
   * what it finds.
   */
  static install (server: Server, options: FastLaneOptions): FastLane | undefined {
    const listeners = server.listeners('connection')
    const nodeListener = listeners[0]
    if (listeners.length !== 1 || nodeListener === undefined) {
      options.logger.warn({ listeners: listeners.length }, 'fast lane disabled: unexpected connection listeners on the HTTP server')
      return undefined
    }
    server.removeListener('connection', nodeListener as (socket: Socket) => void)
    const lane = new FastLane(server, options, (socket) => { (nodeListener as (socket: Socket) => void).call(server, socket) })
    server.on('connection', (socket: Socket) => { lane.#accept(socket) })
    return lane
  }

  private constructor (server: Server, options: FastLaneOptions, handToNode: (socket: Socket) => void) {
    this.#server = server
    this.#options = options
    this.#handToNode = handToNode
  }

  get options (): FastLaneOptions { return this.#options }
  get closing (): boolean { return this.#closing }
  /** Node's (and so Fastify's) keep-alive timeout, used for the lane's connections too. */
  get keepAliveTimeoutMs (): number { return this.#server.keepAliveTimeout }
  get headersTimeoutMs (): number { return this.#server.headersTimeout }

  /** Shutdown: idle connections close now, busy ones after their current response. */
  close (): void {
    this.#closing = true
    for (const connection of this.#connections) connection.closeWhenIdle()
  }

  /** The target when the lane takes this request; undefined sends it (and its connection) to Fastify. */
  targetFor (head: RequestHead): UpstreamTarget | undefined {
    if (this.#closing) return undefined
    const { pathPrefix, apiKeys } = this.#options
    const pathEnd = head.url.indexOf('?')
    const path = pathEnd === -1 ? head.url : head.url.slice(0, pathEnd)
    if (path !== pathPrefix && !path.startsWith(`${pathPrefix}/`)) return undefined
    // Refusals (missing key, bad path) are Fastify's to answer: one place for every error page.
    if (apiKeys.size > 0 && !apiKeys.matches(presentedKey(head.headers))) return undefined
    try {
      return upstreamTarget(head.url, pathPrefix)
    } catch {
      return undefined
    }
  }

  handOver (connection: LaneConnection, socket: Socket): void {
    this.#connections.delete(connection)
    this.#handToNode(socket)
  }

  forget (connection: LaneConnection): void {
    this.#connections.delete(connection)
  }

  #accept (socket: Socket): void {
    const connection = new LaneConnection(this, socket)
    this.#connections.add(connection)
    if (this.#closing) connection.closeWhenIdle()
  }
}

/** One caller connection while the lane owns it: reads heads, serves one request at a time. */
class LaneConnection implements ResponseOwner {
  readonly socket: Socket
  readonly remoteAddress: string
  readonly #lane: FastLane
  /** Bytes read but not yet parsed (a partial head, or pipelined requests). */
  #pending: Buffer | undefined
  #headStartedAt = 0
  /** The socket timeout is the headers timeout while a partial head waits, else the keep-alive timeout. */
  #waitingForHead = false
  #current: RawResponse | undefined
  #closeAfterResponse = false

  constructor (lane: FastLane, socket: Socket) {
    this.#lane = lane
    this.socket = socket
    this.remoteAddress = socket.remoteAddress ?? ''
    socket.setNoDelay(true)
    socket.setTimeout(lane.keepAliveTimeoutMs)
    for (const [event, listener] of this.#listeners) socket.on(event, listener)
  }

  connectionHeader (): string {
    return this.#closeAfterResponse || this.#lane.closing
      ? 'connection: close'
      : `connection: keep-alive\r\nkeep-alive: timeout=${Math.floor(this.#lane.keepAliveTimeoutMs / 1000)}`
  }

  responseDone (response: RawResponse): void {
    if (response !== this.#current) return
    this.#current = undefined
    if (this.socket.destroyed) return
    if (this.#closeAfterResponse || this.#lane.closing) {
      this.socket.end()
      return
    }
    this.socket.resume()
    if (this.#pending !== undefined) this.#next()
  }

  /** Shutdown: as Node's closeIdleConnections() does, an idle connection is destroyed now, a busy one after its response. */
  closeWhenIdle (): void {
    this.#closeAfterResponse = true
    if (this.#current === undefined) this.socket.destroy()
  }

  #onData = (chunk: Buffer): void => {
    if (this.#pending === undefined) {
      this.#pending = chunk
      this.#headStartedAt = performance.now()
    } else {
      this.#pending = Buffer.concat([this.#pending, chunk])
    }
    if (this.#current === undefined) this.#next()
    // Pipelined requests wait for the current answer; past a head's worth, stop reading.
    else if (this.#pending.length > MAX_HEAD_BYTES) this.socket.pause()
  }

  /** Serves the next complete request in #pending, or hands the connection to Node. */
  #next (): void {
    const pending = this.#pending as Buffer
    const end = pending.indexOf(END_OF_HEAD)
    if (end === -1) {
      if (pending.length > MAX_HEAD_BYTES) this.#handOver()
      else if (performance.now() - this.#headStartedAt > this.#lane.headersTimeoutMs) this.socket.destroy()
      else this.#awaitRestOfHead(true)
      return
    }
    this.#awaitRestOfHead(false)
    if (end > MAX_HEAD_BYTES) {
      this.#handOver()
      return
    }
    const head = parseRequestHead(pending.toString('latin1', 0, end))
    const target = head === undefined ? undefined : this.#lane.targetFor(head)
    if (head === undefined || target === undefined) {
      this.#handOver()
      return
    }
    const rest = end + END_OF_HEAD.length
    this.#pending = rest === pending.length ? undefined : pending.subarray(rest)
    this.#headStartedAt = performance.now()
    const exchange = new LaneExchange(this.#lane.options, this, head, target)
    this.#current = exchange.response
    exchange.run()
  }

  /** Node gives a head headersTimeout in all; a trickle is caught in #next, silence by this socket timeout. */
  #awaitRestOfHead (waiting: boolean): void {
    if (waiting === this.#waitingForHead) return
    this.#waitingForHead = waiting
    this.socket.setTimeout(waiting ? this.#lane.headersTimeoutMs : this.#lane.keepAliveTimeoutMs)
  }

  #handOver (): void {
    const socket = this.socket
    socket.pause()
    for (const [event, listener] of this.#listeners) socket.off(event, listener)
    socket.setTimeout(0)
    if (this.#pending !== undefined) socket.unshift(this.#pending)
    this.#pending = undefined
    this.#lane.handOver(this, socket)
    socket.resume()
  }

  /** The caller closed its side: as Node's server does (httpAllowHalfOpen off), drop what is in progress and close. */
  #onEnd = (): void => {
    this.#closeAfterResponse = true
    if (this.#current === undefined) this.socket.end()
    else this.#current.connectionLost()
  }

  #onClose = (): void => {
    this.#lane.forget(this)
    this.#current?.connectionLost()
  }

  // Reset by the peer and the like: 'close' follows and does the cleanup.
  #onError = (): void => {}

  #onTimeout = (): void => {
    // Only idle connections time out; a slow report is bounded by the upstream timeouts.
    if (this.#current === undefined) this.socket.destroy()
  }

  #onDrain = (): void => {
    this.#current?.emit('drain')
  }

  /** Everything the lane listens to on a socket it owns; all of it comes off at the hand-over. (After the handlers: fields initialise in order.) */
  readonly #listeners: ReadonlyArray<[string, (...args: any[]) => void]> = [
    ['data', this.#onData], ['end', this.#onEnd], ['close', this.#onClose],
    ['error', this.#onError], ['timeout', this.#onTimeout], ['drain', this.#onDrain]
  ]
}
