// A TCP proxy in front of a redis-server that delays Redis's replies to one
// member: after a command containing `pattern` goes through, every reply
// on that connection waits until `ms` after it (in order), as a congested
// link or a busy Redis would. The command itself reaches Redis at once.
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import type { Test } from 'tap'

export interface DelayingProxy {
  url: string
  /** The next command containing `pattern` (on any connection) holds that connection's replies for `ms`. */
  delayRepliesAfter: (pattern: string, ms: number) => void
  /** Replies held so far. */
  readonly delayed: number
}

export async function startDelayingProxy (t: Test, redisPort: number): Promise<DelayingProxy> {
  let armed: { pattern: string, ms: number } | undefined
  let delayed = 0
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = connect(redisPort, '127.0.0.1')
    sockets.add(client).add(upstream)
    let holdUntil = 0
    const queue: Buffer[] = []
    let flushing: NodeJS.Timeout | undefined
    const flush = (): void => {
      flushing = undefined
      const wait = holdUntil - performance.now()
      if (wait > 0) { flushing = setTimeout(flush, wait); return }
      for (const chunk of queue.splice(0)) client.write(chunk)
    }
    client.on('data', (chunk: Buffer) => {
      if (armed !== undefined && chunk.includes(armed.pattern)) {
        holdUntil = performance.now() + armed.ms
        armed = undefined
      }
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (queue.length === 0 && performance.now() >= holdUntil) { client.write(chunk); return }
      delayed++
      queue.push(chunk)
      flushing ??= setTimeout(flush, Math.max(0, holdUntil - performance.now()))
    })
    const close = (): void => {
      clearTimeout(flushing)
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', close).on('close', close)
    upstream.on('error', close).on('close', close)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    delayRepliesAfter: (pattern, ms) => { armed = { pattern, ms } },
    get delayed () { return delayed }
  }
}
