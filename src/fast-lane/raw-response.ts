// One HTTP/1.1 response written straight to the caller's socket: the subset of
// http.ServerResponse that upstream.streamTo() and the fast lane use. The
// status line and headers go out with the first body bytes in one write.
import { EventEmitter } from 'node:events'
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { ResponseSink } from '../proxy/upstream.js'

export type HeaderValues = Record<string, string | string[]>

export interface ResponseOwner {
  readonly socket: Socket
  /** "keep-alive" or "close", with the Keep-Alive header when kept alive. */
  connectionHeader: () => string
  /** Called once, when the response is complete or the connection died under it. */
  responseDone: (response: RawResponse) => void
}

export class RawResponse extends EventEmitter implements ResponseSink {
  statusCode = 200
  headersSent = false
  writableFinished = false
  destroyed = false
  readonly #owner: ResponseOwner
  readonly #socket: Socket
  readonly #headOnly: boolean
  #pendingHead = ''
  #chunked = false
  #noBody = false

  constructor (owner: ResponseOwner, headOnly: boolean) {
    super()
    this.#owner = owner
    this.#socket = owner.socket
    this.#headOnly = headOnly
  }

  writeHead (statusCode: number, headers: HeaderValues): this {
    this.statusCode = statusCode
    this.headersSent = true
    // No body for HEAD, 204 and 304 (RFC 9110 §6.4.1); otherwise chunked when Adobe gave no length.
    this.#noBody = this.#headOnly || statusCode === 204 || statusCode === 304
    let head = `HTTP/1.1 ${statusCode} ${STATUS_CODES[statusCode] ?? 'Unknown'}\r\n`
    for (const name in headers) {
      const value = headers[name] as string | string[]
      if (typeof value === 'string') head += `${name}: ${value}\r\n`
      else for (const one of value) head += `${name}: ${one}\r\n`
    }
    if (!this.#noBody && headers['content-length'] === undefined) {
      this.#chunked = true
      head += 'transfer-encoding: chunked\r\n'
    }
    this.#pendingHead = `${head}date: ${httpDate()}\r\n${this.#owner.connectionHeader()}\r\n\r\n`
    return this
  }

  write (chunk: Buffer): boolean {
    if (this.destroyed || this.writableFinished) return false
    if (this.#noBody || chunk.length === 0) return this.#flushHead()
    const socket = this.#socket
    socket.cork()
    if (this.#pendingHead !== '') this.#flushHead()
    if (this.#chunked) socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1')
    let ready = socket.write(chunk)
    if (this.#chunked) ready = socket.write('\r\n', 'latin1')
    socket.uncork()
    return ready
  }

  end (chunk?: Buffer): this {
    if (this.destroyed || this.writableFinished) return this
    if (!this.headersSent) this.writeHead(this.statusCode, {})
    const socket = this.#socket
    socket.cork()
    if (chunk !== undefined) this.write(chunk)
    else this.#flushHead()
    if (this.#chunked) socket.write('0\r\n\r\n', 'latin1')
    socket.uncork()
    this.writableFinished = true
    this.#owner.responseDone(this)
    this.emit('close')
    return this
  }

  /** Cuts the connection: the only way to tell a caller its body is incomplete. */
  destroy (error?: Error): this {
    if (this.destroyed) return this
    this.#socket.destroy(error)
    this.connectionLost()
    return this
  }

  /** The caller's connection closed (or was cut) before this response was complete. */
  connectionLost (): void {
    if (this.destroyed || this.writableFinished) return
    this.destroyed = true
    this.#owner.responseDone(this)
    this.emit('close')
  }

  #flushHead (): boolean {
    if (this.#pendingHead === '') return true
    const head = this.#pendingHead
    this.#pendingHead = ''
    return this.#socket.write(head, 'latin1')
  }
}

let dateSecond = 0
let dateText = ''

/** The Date header, formatted once per second as Node's own server does. */
function httpDate (): string {
  const now = Date.now()
  const second = Math.floor(now / 1000)
  if (second !== dateSecond) {
    dateSecond = second
    dateText = new Date(now).toUTCString()
  }
  return dateText
}
