// Raw sockets to the proxy, for the tests that need the wire byte for byte:
// pipelining, keep-alive, HEAD framing, slow or abandoned heads, floods.
import { connect, type Socket } from 'node:net'
import type { Test } from 'tap'
import { eventually, type RunningProxy } from './app.js'

export interface Wire { socket: Socket, received: () => string, closed: () => boolean }

export async function open (t: Test, proxy: RunningProxy): Promise<Wire> {
  const { hostname, port } = new URL(proxy.url)
  const socket = connect(Number(port), hostname)
  const chunks: string[] = []
  let closed = false
  socket.on('data', (chunk: Buffer) => { chunks.push(chunk.toString('latin1')) })
  socket.on('close', () => { closed = true })
  socket.on('error', () => {})
  await new Promise((resolve) => socket.once('connect', resolve))
  t.teardown(() => socket.destroy())
  return { socket, received: () => chunks.join(''), closed: () => closed }
}

/** Writes `bytes` and waits until `count` responses have fully arrived (by Content-Length, or the chunked terminator). */
export async function exchange (wire: Wire, bytes: string, count: number, timeoutMs = 5_000): Promise<string[]> {
  const before = wire.received().length
  wire.socket.write(bytes)
  let responses: string[] = []
  await eventually(() => {
    responses = splitResponses(wire.received().slice(before))
    return responses.length >= count || wire.closed()
  }, timeoutMs)
  return responses
}

export function splitResponses (text: string): string[] {
  const responses: string[] = []
  let at = 0
  while (text.startsWith('HTTP/1.1 ', at)) {
    const headEnd = text.indexOf('\r\n\r\n', at)
    if (headEnd === -1) break
    const head = text.slice(at, headEnd)
    const length = /\r\ncontent-length: (\d+)/i.exec(head)
    const noBody = /^HTTP\/1\.1 (204|304)/.test(head) || head.includes('\r\nx-head: 1')
    let end: number
    if (noBody) end = headEnd + 4
    else if (length !== null) end = headEnd + 4 + Number(length[1])
    else if (/\r\ntransfer-encoding: chunked/i.test(head)) end = text.indexOf('\r\n0\r\n\r\n', headEnd) + 7
    else end = headEnd + 4
    if (end < headEnd + 4 || end > text.length) break
    responses.push(text.slice(at, end))
    at = end
  }
  return responses
}

export const get = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: localhost\r\n${extra}\r\n`
