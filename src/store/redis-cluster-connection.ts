// A Redis Cluster, through node-redis's cluster client: it learns which node
// serves which hash slot, follows MOVED and ASK, and finds the slots' new
// masters after a failover. The proxy's keys share one hash slot (a {hash
// tag} in every key, namespace.ts), so each of its scripts and locks touches
// one node, as on a single Redis; pub/sub notices (PUBLISH) reach every node's
// subscribers through the cluster bus.
// https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/
import { createCluster, type RedisClusterType } from '@redis/client'
import type { RedisNodeAddress } from '../config/settings.js'
import { backoff, BUFFERS, COMMAND_OPTIONS, nodeClientOptions, type ConnectionOptions, type Message, type RedisConnection } from './redis-connection.js'
import { describeProblem, errorReplyCode } from './redis-problems.js'

type Cluster = RedisClusterType<{}, {}, {}, 2, {}>

/** The cluster client has not learnt the slots yet (or lost them): commands are refused, not queued. */
export class ClusterNotReadyError extends Error {
  constructor () {
    super('the cluster client has not learnt the cluster\'s slots yet')
    this.name = 'ClusterNotReadyError'
  }
}

export class ClusterConnection implements RedisConnection {
  readonly #options: ConnectionOptions
  readonly #seeds: RedisNodeAddress[]
  readonly #subscriberReady = new Set<() => void>()
  #cluster: Cluster
  #attempts = 0
  #everReady = false
  #retry: NodeJS.Timeout | undefined
  #closed = false

  constructor (options: ConnectionOptions, seeds: RedisNodeAddress[]) {
    this.#options = options
    this.#seeds = seeds
    this.#cluster = this.#start()
  }

  async send (key: string | undefined, args: Array<string | Buffer>): Promise<unknown> {
    if (!this.#cluster.isReady) throw new ClusterNotReadyError()
    return await this.#cluster.sendCommand(key, false, args, BUFFERS)
  }

  async subscribe (channel: string, listener: Message): Promise<void> {
    await this.#cluster.subscribe(channel, listener, true)
  }

  async unsubscribe (channel: string, listener: Message): Promise<void> {
    // Typed for either reply mode; in buffer mode (true) the listener gets Buffers.
    await this.#cluster.unsubscribe(channel, listener as Parameters<Cluster['unsubscribe']>[1], true)
  }

  onSubscriberReady (listener: () => void): void {
    this.#subscriberReady.add(listener)
  }

  reconnect (): void {
    const old = this.#cluster
    this.#cluster = this.#start()
    old.destroy()
  }

  async close (bounded: (closing: Promise<unknown>) => Promise<boolean>): Promise<void> {
    this.#closed = true
    clearTimeout(this.#retry)
    if (this.#cluster.isOpen) await bounded(this.#cluster.close())
    this.#cluster.destroy()
  }

  #start (): Cluster {
    const { settings, health } = this.#options
    const defaults = nodeClientOptions(this.#options)
    const cluster: Cluster = createCluster({
      rootNodes: this.#seeds.map((node) => ({ socket: { ...defaults.socket, host: node.host, port: node.port } })),
      defaults,
      RESP: 2,
      // Connections only to the nodes the proxy uses: its keys share one slot.
      minimizeConnections: true,
      commandOptions: COMMAND_OPTIONS
    })
    const describe = (err: unknown): ReturnType<typeof describeProblem> => describeProblem(err, settings.commandTimeoutMs)
    cluster.on('error', (err: unknown) => {
      if (cluster !== this.#cluster) return
      // Discovery (CLUSTER SHARDS) refused with a plain ERR: settings to fix, not a moment to wait out.
      if (!this.#everReady && errorReplyCode(err) === 'ERR') health.misconfigured({ reason: 'REDIS_CLUSTER=true, but REDIS_URL is not a node of a Redis Cluster (it refused the CLUSTER commands): unset REDIS_CLUSTER', configuration: true })
      else health.failed(describe(err))
    })
    cluster.on('node-error', (err: unknown) => { if (cluster === this.#cluster) health.failed(describe(err)) })
    cluster.connect().then(() => {
      if (cluster !== this.#cluster) return
      this.#everReady = true
      this.#attempts = 0
      health.connected()
      for (const listener of this.#subscriberReady) listener()
    }, (err: unknown) => {
      if (this.#closed || cluster !== this.#cluster || health.needsOperator) return
      health.lost(describe(err))
      this.#retry = setTimeout(() => { this.#cluster = this.#start() }, backoff(this.#options)(this.#attempts++))
      this.#retry.unref()
    })
    return cluster
  }
}
