// The node-redis client behind the store, for each topology the settings
// name: one node (a client for commands and one for subscriptions, since a
// subscribed RESP2 connection takes no other commands), Sentinel
// (redis-sentinel-connection.ts) or a Cluster (redis-cluster-connection.ts).
// Each presents the same few operations and reports to the store's health
// (redis-health.ts): ready, lost, or not what the settings say.
import { createClient, RESP_TYPES, type RedisClientOptions, type RedisClientType } from '@redis/client'
import type { RedisNodeAddress, RedisSettings } from '../config/settings.js'
import type { RedisHealth } from './redis-health.js'
import { describeProblem, errorReplyCode } from './redis-problems.js'

export type Message = (message: Buffer, channel: Buffer) => void

export interface RedisConnection {
  /** One command; `key` routes it in a Cluster (undefined: any node). */
  send: (key: string | undefined, args: Array<string | Buffer>) => Promise<unknown>
  subscribe: (channel: string, listener: Message) => Promise<void>
  unsubscribe: (channel: string, listener: Message) => Promise<void>
  /** `listener` runs whenever subscriptions need making again (a subscriber connection came back). */
  onSubscriberReady: (listener: () => void) => void
  /** Drop the sockets and connect anew: a hung peer never answers on the old ones. */
  reconnect: () => void
  /** Graceful close, then destroy; `bounded` keeps a hung server from holding it up. */
  close: (bounded: (closing: Promise<unknown>) => Promise<boolean>) => Promise<void>
}

export interface ConnectionOptions {
  settings: Pick<RedisSettings, 'topology' | 'username' | 'password' | 'tls' | 'commandTimeoutMs' | 'target'>
  health: RedisHealth
  connectTimeoutMs: number
  reconnectBaseMs: number
  reconnectMaxMs: number
  maxPendingCommands: number
  random: () => number
}

/** RESP2: understood by every Redis and Valkey version the proxy may meet. */
export type Client = RedisClientType<{}, {}, {}, 2, {}>

/** Replies as Buffers: values are opaque bytes. */
export const BUFFERS = { typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } }

/** Half to all of base * 2^n, capped, so a fleet does not reconnect in step. Never gives up. */
export function backoff (options: ConnectionOptions): (retries: number) => number {
  const { reconnectBaseMs, reconnectMaxMs, random } = options
  return (retries) => Math.ceil(Math.min(reconnectMaxMs, reconnectBaseMs * 2 ** Math.min(retries, 20)) * (0.5 + random() / 2))
}

/**
 * No node-redis timeout (0: off; its default is 5 s): it only times the wait
 * for the write, on a timer that fires after a stalled loop before the write
 * gets its turn. redis-deadline.ts times the whole command, on Redis's time.
 */
export const COMMAND_OPTIONS = { timeout: 0 }

/** What every connection to a data node shares: no offline queue, a bounded queue, credentials, TLS. */
export function nodeClientOptions (options: ConnectionOptions, node?: RedisNodeAddress): RedisClientOptions<{}, {}, {}, 2, {}> {
  const { settings } = options
  const tls = settings.tls === undefined ? { tls: false as const } : { tls: true as const, ...definedOnly(settings.tls) }
  return {
    name: 'cmu-proxy',
    // Refused at once while disconnected: no caller waits on a Redis that is not there.
    disableOfflineQueue: true,
    commandsQueueMaxLength: options.maxPendingCommands,
    ...(settings.username === undefined ? {} : { username: settings.username }),
    ...(settings.password === undefined ? {} : { password: settings.password }),
    socket: {
      ...(node === undefined ? {} : { host: node.host, port: node.port }),
      connectTimeout: options.connectTimeoutMs,
      reconnectStrategy: backoff(options),
      ...tls
    }
  }
}

function definedOnly<T extends object> (value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>
}

/** One Redis node, or a managed endpoint in front of one. */
export class StandaloneConnection implements RedisConnection {
  readonly #options: ConnectionOptions
  readonly #node: RedisNodeAddress
  readonly #database: number
  readonly #client: Client
  #subscriber: Client | undefined
  readonly #subscriberReady = new Set<() => void>()

  constructor (options: ConnectionOptions, node: RedisNodeAddress, database: number) {
    this.#options = options
    this.#node = node
    this.#database = database
    const { health } = options
    this.#client = this.#newClient()
    this.#client.on('error', (err: unknown) => { health.lost(describeProblem(err, options.settings.commandTimeoutMs)) })
    this.#client.on('ready', () => { this.#checkNotACluster() })
    connect(this.#client)
  }

  async send (_key: string | undefined, args: Array<string | Buffer>): Promise<unknown> {
    return await this.#client.sendCommand(args, BUFFERS).catch((err: unknown) => {
      // A Cluster node answers MOVED for keys another node serves: without REDIS_CLUSTER this never works.
      const code = errorReplyCode(err)
      if (code === 'MOVED' || code === 'ASK') this.#options.health.misconfigured(describeProblem(err, 0))
      throw err
    })
  }

  async subscribe (channel: string, listener: Message): Promise<void> {
    await this.#subscriberClient().subscribe(channel, listener, true)
  }

  async unsubscribe (channel: string, listener: Message): Promise<void> {
    await this.#subscriber?.unsubscribe(channel, listener, true)
  }

  onSubscriberReady (listener: () => void): void {
    this.#subscriberReady.add(listener)
  }

  reconnect (): void {
    for (const client of [this.#client, this.#subscriber]) {
      if (client === undefined) continue
      client.destroy()
      connect(client)
    }
  }

  async close (bounded: (closing: Promise<unknown>) => Promise<boolean>): Promise<void> {
    await Promise.all([this.#client, this.#subscriber].map(async (client) => {
      if (client === undefined) return
      if (client.isOpen) await bounded(client.close())
      client.destroy()
    }))
  }

  #newClient (): Client {
    const options = { ...nodeClientOptions(this.#options, this.#node), RESP: 2 as const, commandOptions: COMMAND_OPTIONS }
    return createClient(this.#database === 0 ? options : { ...options, database: this.#database })
  }

  /** A Cluster node under plain REDIS_URL: refused at once, with the setting to change, instead of MOVED on every other key. */
  #checkNotACluster (): void {
    const { health } = this.#options
    this.#client.sendCommand(['INFO', 'cluster']).then((info) => {
      if (/^cluster_enabled:1\b/m.test(String(info))) {
        health.misconfigured({ reason: 'REDIS_URL is a node of a Redis Cluster (INFO says cluster_enabled:1): set REDIS_CLUSTER=true', configuration: true })
      } else health.connected()
    }, (err: unknown) => {
      // An ACL user without INFO: MOVED replies still tell.
      if (errorReplyCode(err) !== undefined) health.connected()
    })
  }

  #subscriberClient (): Client {
    if (this.#subscriber !== undefined) return this.#subscriber
    const subscriber = this.#subscriber = this.#newClient()
    // Its failures show on the main connection too; one outage, one log line.
    subscriber.on('error', () => {})
    subscriber.on('ready', () => { for (const listener of this.#subscriberReady) listener() })
    connect(subscriber)
    return subscriber
  }
}

/** Settles when connected or closed; until then commands are refused at once. */
export function connect (client: { connect: () => Promise<unknown> }): void {
  client.connect().catch(() => {})
}
