// A real redis-server for tests: its own process on a free loopback port,
// nothing persisted (--save "" --appendonly no), so a test can kill it under
// traffic, freeze it, and bring it back empty on the same port.
import { spawnSync } from 'node:child_process'
import { connect, createServer, type AddressInfo } from 'node:net'
import { createClient, RESP_TYPES } from '@redis/client'
import type { Test } from 'tap'
import type { RedisStoreOptions } from '../../src/store/redis-store.js'
import { temporaryDirectory } from './app.js'
import { startChild, STARTUP_DEADLINE_MS, type ProcessGroup } from './processes.js'

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

/** The Debian package that has each binary (.ci/run installs them). */
const PACKAGES: Record<string, string> = { 'redis-server': 'redis-server', 'redis-sentinel': 'redis-sentinel', 'redis-cli': 'redis-tools' }

const found = new Set<string>()
/** Fails with the name of the Debian package to install when `binary` is not on PATH. */
export function requireRedisBinary (binary = 'redis-server'): void {
  if (found.has(binary)) return
  const probe = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: STARTUP_DEADLINE_MS })
  if (probe.error !== undefined || probe.status !== 0) {
    const pkg = PACKAGES[binary] ?? 'redis-server'
    throw new Error(`${binary} is needed by the fleet tests and was not found on PATH (${probe.error?.message ?? `exit ${String(probe.status)}`}). ` +
      `Install the Debian package ${pkg}: apt-get install -y ${pkg} (.ci/run does this when it is missing).`)
  }
  found.add(binary)
}

export function requireRedisServer (): void {
  requireRedisBinary('redis-server')
}

export interface RedisProcessOptions {
  /** redis-server (default), redis-sentinel, ... */
  binary?: string
  /** Its arguments, for the port it gets and a directory of its own (removed after the test). */
  args: (port: number, dir: string) => string[]
}

/** A real redis-server on a free loopback port, nothing persisted; `extra` arguments follow the defaults. */
export async function startRedisServer (t: Test, extra: (port: number, dir: string) => string[] = () => []): Promise<RedisServer> {
  return await startRedisProcess(t, {
    args: (port, dir) => [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning', '--databases', '1', ...extra(port, dir)
    ]
  })
}

/**
 * Any Redis binary on a free loopback port, in its own process group (killed
 * as a group when `t` ends), ready once it answers PING.
 */
export async function startRedisProcess (t: Test, options: RedisProcessOptions): Promise<RedisServer> {
  const binary = options.binary ?? 'redis-server'
  requireRedisBinary(binary)
  const dir = temporaryDirectory(t)
  let child: ProcessGroup | undefined
  let port = 0
  let paused = false

  const launch = async (): Promise<void> => {
    const proc = startChild(t, binary, options.args(port, dir), { stdout: 'ignore', name: `${binary} :${port}` })
    child = proc
    await waitForPong(proc, port)
  }

  const stop = async (): Promise<void> => {
    const proc = child
    child = undefined
    await proc?.stop('SIGKILL')
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
      if (child !== undefined && !paused) { child.signal('SIGSTOP'); paused = true }
    },
    resume: () => {
      if (child !== undefined && paused) { child.signal('SIGCONT'); paused = false }
    }
  }
}

export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** Polls with a raw PING until the server answers +PONG (it prints nothing on stdout at loglevel warning). */
async function waitForPong (proc: ProcessGroup, port: number): Promise<void> {
  let polling = true
  const poll = async (): Promise<true> => {
    while (polling) {
      if (await pingOnce(port)) return true
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    return true
  }
  try {
    await proc.waitUntil(poll(), `answered PING on 127.0.0.1:${port}`)
  } finally {
    polling = false
  }
}

async function pingOnce (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const finish = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    socket.setTimeout(5_000, () => { finish(false) })
    socket.once('error', () => { finish(false) })
    socket.once('connect', () => socket.write('PING\r\n'))
    socket.once('data', (data) => { finish(data.toString().startsWith('+PONG')) })
  })
}

/** A store's view of `redis`: one node, no credentials (config/redis-settings.ts builds the same from REDIS_URL). */
export function standalone (redis: Pick<RedisServer, 'port'>, extra: Partial<RedisStoreOptions['redis']> = {}): RedisStoreOptions['redis'] {
  return { topology: { kind: 'standalone', node: { host: '127.0.0.1', port: redis.port }, database: 0 }, target: `redis://127.0.0.1:${redis.port}`, ...extra }
}

/** A plain node-redis client, so what the tests read from Redis does not pass through the code under test. */
export async function rawRedisClient (t: Test, redis: RedisServer) {
  const client = createClient({ url: redis.url, RESP: 2 }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => { client.destroy() })
  return client
}
