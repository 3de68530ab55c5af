// A real redis-server for tests: its own process on a free loopback port,
// nothing persisted (--save "" --appendonly no), so a test can kill it under
// traffic, freeze it, and bring it back empty on the same port.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { connect, createServer, type AddressInfo } from 'node:net'
import { createClient, RESP_TYPES } from '@redis/client'
import type { Test } from 'tap'
import { temporaryDirectory } from './app.js'

export interface RedisServer {
  url: string
  port: number
  /** SIGKILL: connections drop at once, every value is gone. */
  kill: () => Promise<void>
  /** Start again on the same port, empty. */
  restart: () => Promise<void>
  /** SIGSTOP / SIGCONT: the port still accepts, nothing answers (a hung server). */
  pause: () => void
  resume: () => void
}

const BINARY = 'redis-server'
const START_TIMEOUT_MS = 5_000

let found = false
/** Fails with the name of the Debian package to install when there is no redis-server. */
export function requireRedisServer (): void {
  if (found) return
  const probe = spawnSync(BINARY, ['--version'], { encoding: 'utf8', timeout: 5_000 })
  if (probe.error !== undefined || probe.status !== 0) {
    throw new Error(`${BINARY} is needed by the fleet tests and was not found on PATH (${probe.error?.message ?? `exit ${String(probe.status)}`}). ` +
      'Install the Debian package redis-server: apt-get install -y redis-server (.ci/run does this when it is missing).')
  }
  found = true
}

export async function startRedisServer (t: Test): Promise<RedisServer> {
  requireRedisServer()
  const dir = temporaryDirectory(t)
  let child: ChildProcess | undefined
  let port = 0
  let paused = false

  const launch = async (): Promise<void> => {
    const proc = spawn(BINARY, [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning', '--databases', '1'
    ], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    proc.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    child = proc
    const exited = once(proc, 'exit').then(() => { throw new Error(`redis-server exited at start: ${stderr.trim()}`) })
    exited.catch(() => {})
    await Promise.race([waitForPong(port, START_TIMEOUT_MS), exited])
  }

  const stop = async (): Promise<void> => {
    const proc = child
    child = undefined
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return
    const exited = once(proc, 'exit')
    proc.kill('SIGKILL')
    await exited
  }

  // A free port can be taken between probing and binding: try a few.
  for (let attempt = 1; ; attempt++) {
    port = await freePort()
    try {
      await launch()
      break
    } catch (err) {
      await stop()
      if (attempt === 3) throw err
    }
  }
  t.teardown(stop)
  // A test process that dies early (tap's timeout) must not leave a server behind.
  const onExit = (): void => { child?.kill('SIGKILL') }
  process.once('exit', onExit)
  t.teardown(() => { process.off('exit', onExit) })

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    kill: stop,
    restart: async () => {
      await stop()
      paused = false
      await launch()
    },
    pause: () => {
      if (child !== undefined && !paused) { child.kill('SIGSTOP'); paused = true }
    },
    resume: () => {
      if (child !== undefined && paused) { child.kill('SIGCONT'); paused = false }
    }
  }
}

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** Polls with a raw PING until the server answers +PONG. */
async function waitForPong (port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await pingOnce(port)) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`redis-server did not answer PING on 127.0.0.1:${port} within ${timeoutMs} ms`)
}

async function pingOnce (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const finish = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    socket.setTimeout(500, () => { finish(false) })
    socket.once('error', () => { finish(false) })
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.once('data', (data) => { finish(data.toString().startsWith('+PONG')) })
  })
}

/** A plain node-redis client, so what the tests read from Redis does not pass through the code under test. */
export async function rawRedisClient (t: Test, redis: RedisServer) {
  const client = createClient({ url: redis.url, RESP: 2 }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => { client.destroy() })
  return client
}
