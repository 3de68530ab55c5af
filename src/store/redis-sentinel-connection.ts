// Redis behind Sentinel, through node-redis's Sentinel client: it asks the
// sentinels which node is the master, follows a failover (a +switch-master
// notice, or a READONLY reply or lost connection that makes it ask again),
// and moves the subscriptions to the new master. What it does not do, and
// this does: keep trying when no sentinel answers at start (its connect()
// gives up after `maxCommandRediscovers` attempts), refuse commands while it
// is reconnecting instead of queueing them, and report to the store's health.
// https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/
import { createSentinel, type RedisSentinelType } from '@redis/client'
import type { RedisNodeAddress } from '../config/settings.js'
import { backoff, BUFFERS, COMMAND_OPTIONS, nodeClientOptions, type ConnectionOptions, type Message, type RedisConnection } from './redis-connection.js'
import { describeProblem } from './redis-problems.js'

type Sentinel = RedisSentinelType<{}, {}, {}, 2, {}>

/** A safety net under the sentinels' own notices (pub/sub is at most once): look again this often. */
const TOPOLOGY_SCAN_MS = 10_000
/** node-redis asks the sentinels again after READONLY or a lost master at most this often per command (and at start). */
const REDISCOVERIES = 3

/** What node-redis's Sentinel client says when a command is sent while it is (re)discovering. */
export class SentinelNotReadyError extends Error {
  constructor () {
    super('the Sentinel client is looking for the master')
    this.name = 'SentinelNotReadyError'
  }
}

export class SentinelConnection implements RedisConnection {
  readonly #options: ConnectionOptions
  readonly #sentinels: RedisNodeAddress[]
  readonly #masterName: string
  readonly #subscriberReady = new Set<() => void>()
  #sentinel: Sentinel
  #attempts = 0
  #retry: NodeJS.Timeout | undefined
  #closed = false

  constructor (options: ConnectionOptions, sentinels: RedisNodeAddress[], masterName: string) {
    this.#options = options
    this.#sentinels = sentinels
    this.#masterName = masterName
    this.#sentinel = this.#start()
  }

  async send (_key: string | undefined, args: Array<string | Buffer>): Promise<unknown> {
    // While it looks for the master, node-redis would hold the command until it finds one.
    if (!this.#sentinel.isReady) throw new SentinelNotReadyError()
    return await this.#sentinel.sendCommand(false, args, BUFFERS)
  }

  async subscribe (channel: string, listener: Message): Promise<void> {
    await this.#sentinel.subscribe(channel, listener, true)
  }

  async unsubscribe (channel: string, listener: Message): Promise<void> {
    // Typed for either reply mode; in buffer mode (true) the listener gets Buffers.
    await this.#sentinel.unsubscribe(channel, listener as Parameters<Sentinel['unsubscribe']>[1], true)
  }

  onSubscriberReady (listener: () => void): void {
    this.#subscriberReady.add(listener)
  }

  /** A master that stopped answering: start over from the sentinels (they may have failed over meanwhile). */
  reconnect (): void {
    const old = this.#sentinel
    this.#sentinel = this.#start()
    old.destroy().catch(() => {})
  }

  async close (bounded: (closing: Promise<unknown>) => Promise<boolean>): Promise<void> {
    this.#closed = true
    clearTimeout(this.#retry)
    if (this.#sentinel.isOpen) await bounded(this.#sentinel.close())
    await this.#sentinel.destroy().catch(() => {})
  }

  #start (): Sentinel {
    const { settings, health } = this.#options
    const client = nodeClientOptions(this.#options)
    const sentinel: Sentinel = createSentinel({
      name: this.#masterName,
      sentinelRootNodes: this.#sentinels,
      RESP: 2,
      nodeClientOptions: client,
      // The sentinels: the same TLS (a deployment that encrypts one encrypts both), no data-node credentials.
      sentinelClientOptions: { socket: client.socket ?? {} },
      maxCommandRediscovers: REDISCOVERIES,
      scanInterval: TOPOLOGY_SCAN_MS,
      commandOptions: COMMAND_OPTIONS
    })
    const describe = (err: unknown): ReturnType<typeof describeProblem> => describeProblem(err, settings.commandTimeoutMs)
    sentinel.on('error', (err: unknown) => { if (sentinel === this.#sentinel) health.failed(describe(err)) })
    // The master's connection failed or dropped (a failover, a restart, a wrong password).
    sentinel.on('client-error', (event: { type?: string, error?: unknown }) => {
      if (sentinel === this.#sentinel && event.type === 'MASTER') health.lost(describe(event.error))
    })
    sentinel.on('ready', () => {
      if (sentinel !== this.#sentinel) return
      this.#attempts = 0
      health.connected()
      for (const listener of this.#subscriberReady) listener()
    })
    sentinel.connect().catch((err: unknown) => {
      if (this.#closed || sentinel !== this.#sentinel) return
      health.lost(describe(err))
      // node-redis gave up (and destroyed it): a new one, after a pause.
      this.#retry = setTimeout(() => { this.#sentinel = this.#start() }, backoff(this.#options)(this.#attempts++))
      this.#retry.unref()
    })
    return sentinel
  }
}
