// Redis beyond one node, for tests, from real processes: a master with a
// replica watched by redis-sentinel (Debian package redis-sentinel), a
// Cluster of --cluster-enabled nodes joined with `redis-cli --cluster
// create` (offline, no network), and a redis-server speaking TLS with
// certificates made by openssl for the test (never committed). Every process
// runs in its own process group, killed with the test (redis-server.ts).
import { spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createClient, RESP_TYPES } from '@redis/client'
import type { Test } from 'tap'
import type { RedisNodeAddress } from '../../src/config/redis-settings.js'
import type { RedisStoreOptions } from '../../src/store/redis-store.js'
import { eventually, temporaryDirectory } from './app.js'
import { runToEnd } from './processes.js'
import { freePort, requireRedisBinary, startRedisProcess, startRedisServer, type RedisServer } from './redis-server.js'

const LOCALHOST = '127.0.0.1'
/** Sentinel's failure detection, shortened for tests (the default is 30 s). */
const DOWN_AFTER_MS = 500
/** The Cluster's: how long a node may be silent before it counts as failing. */
const NODE_TIMEOUT_MS = 1_000

/** A plain client to one node, outside the code under test. */
export async function rawNodeClient (t: Test, node: RedisNodeAddress, options: { tls?: { ca: string } } = {}) {
  const client = createClient({ socket: { host: node.host, port: node.port, ...(options.tls === undefined ? {} : { tls: true as const, ca: options.tls.ca }) }, RESP: 2 }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer })
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => { client.destroy() })
  return client
}

const nodeOf = (server: RedisServer): RedisNodeAddress => ({ host: LOCALHOST, port: server.port })

export interface SentinelSetup {
  masterName: string
  /** [the first master, its replica]: after a failover the replica is the master. */
  nodes: RedisServer[]
  sentinel: RedisServer
  /** The store's settings: the sentinel list (a dead address first: the client must try the next). */
  redis: RedisStoreOptions['redis']
  /** REDIS_SENTINELS and REDIS_SENTINEL_NAME for a proxy. */
  env: Record<string, string>
  /** The master, as the sentinel says. */
  master: () => Promise<RedisNodeAddress>
  /** SENTINEL FAILOVER, then waits until the replica is the master and the sentinel says so. */
  failover: () => Promise<RedisNodeAddress>
}

export async function startSentinelSetup (t: Test): Promise<SentinelSetup> {
  requireRedisBinary('redis-sentinel')
  const masterName = 'cmu-test'
  const master = await startRedisServer(t)
  const replica = await startRedisServer(t, () => ['--replicaof', LOCALHOST, String(master.port), '--replica-announce-ip', LOCALHOST])
  const replicaClient = await rawNodeClient(t, nodeOf(replica))
  if (!await eventually(async () => /master_link_status:up/.test(String(await replicaClient.info('replication'))), 10_000)) throw new Error('the replica did not sync with its master')
  const sentinel = await startRedisProcess(t, {
    binary: 'redis-sentinel',
    args: (port, dir) => {
      const file = join(dir, 'sentinel.conf')
      // Sentinel rewrites its configuration file: it lives in the test's directory.
      writeFileSync(file, [
        `port ${port}`, `bind ${LOCALHOST}`, `dir ${dir}`, 'daemonize no', 'loglevel warning',
        `sentinel monitor ${masterName} ${LOCALHOST} ${master.port} 1`,
        `sentinel down-after-milliseconds ${masterName} ${DOWN_AFTER_MS}`,
        `sentinel failover-timeout ${masterName} 5000`
      ].join('\n') + '\n')
      return [file]
    }
  })
  const sentinelClient = await rawNodeClient(t, nodeOf(sentinel))
  const ask = async (...args: string[]): Promise<unknown> => await sentinelClient.sendCommand(['SENTINEL', ...args])
  const currentMaster = async (): Promise<RedisNodeAddress> => {
    const [host, port] = (await ask('GET-MASTER-ADDR-BY-NAME', masterName) as Buffer[]).map(String)
    return { host: host ?? '', port: Number(port) }
  }
  // A failover needs the sentinel to know the replica, and it learns of it from the master's INFO.
  const replicaKnown = async (): Promise<boolean> => {
    const replicas = await ask('REPLICAS', masterName) as Buffer[][]
    return replicas.some((fields) => {
      const flags = fields.map(String)
      return !flags.join(',').includes('s_down') && !flags.join(',').includes('disconnected')
    })
  }
  if (!await eventually(replicaKnown, 15_000)) throw new Error('the sentinel did not find the replica')
  const deadSentinel = await freePort()
  return {
    masterName,
    nodes: [master, replica],
    sentinel,
    redis: {
      topology: { kind: 'sentinel', sentinels: [{ host: LOCALHOST, port: deadSentinel }, nodeOf(sentinel)], masterName },
      target: `sentinel master ${masterName}`
    },
    env: { REDIS_SENTINELS: `${LOCALHOST}:${deadSentinel},${LOCALHOST}:${sentinel.port}`, REDIS_SENTINEL_NAME: masterName },
    master: currentMaster,
    failover: async () => {
      const before = await currentMaster()
      const promoted = async (): Promise<boolean> => {
        try {
          await ask('FAILOVER', masterName)
        } catch {
          // INPROG, or NOGOODSLAVE while the replica is still syncing: ask again.
        }
        const now = await currentMaster()
        if (now.port === before.port) return false
        const client = await rawNodeClient(t, now)
        return /role:master/.test(String(await client.info('replication')))
      }
      if (!await eventually(promoted, 20_000)) throw new Error('the failover did not complete')
      return await currentMaster()
    }
  }
}

export interface ClusterSetup {
  nodes: RedisServer[]
  /** The store's settings: the first node as the seed. */
  redis: RedisStoreOptions['redis']
  /** REDIS_URL and REDIS_CLUSTER for a proxy. */
  env: Record<string, string>
  /** The node serving `key`'s hash slot. */
  nodeFor: (key: string) => Promise<RedisServer>
}

/** `masters` --cluster-enabled nodes, no replicas, every slot assigned, `cluster_state:ok` on each. */
export async function startCluster (t: Test, masters = 3): Promise<ClusterSetup> {
  requireRedisBinary('redis-cli')
  const nodes: RedisServer[] = []
  for (let i = 0; i < masters; i++) {
    const busPort = await freePort()
    nodes.push(await startRedisServer(t, (_port, dir) => [
      '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-port', String(busPort),
      '--cluster-node-timeout', String(NODE_TIMEOUT_MS), '--cluster-announce-ip', LOCALHOST
    ]))
  }
  const created = await runToEnd('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `${LOCALHOST}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'])
  if (created.code !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stdout}${created.stderr}`)
  const clients = await Promise.all(nodes.map(async (node) => await rawNodeClient(t, nodeOf(node))))
  const ok = async (): Promise<boolean> => (await Promise.all(clients.map(async (c) => String(await c.sendCommand(['CLUSTER', 'INFO']))))).every((info) => /cluster_state:ok/.test(info))
  if (!await eventually(ok, 15_000)) throw new Error('the cluster did not reach cluster_state:ok')
  const [seed] = nodes
  if (seed === undefined) throw new Error('a cluster needs nodes')
  return {
    nodes,
    redis: { topology: { kind: 'cluster', seeds: [nodeOf(seed)] }, target: `cluster via redis://${LOCALHOST}:${seed.port}` },
    env: { REDIS_URL: seed.url, REDIS_CLUSTER: 'true' },
    nodeFor: async (key) => {
      const slot = Number(await clients[0]?.sendCommand(['CLUSTER', 'KEYSLOT', key]))
      for (const [i, client] of clients.entries()) if (await servesSlot(client, slot)) return nodes[i] as RedisServer
      throw new Error(`no node serves slot ${slot}`)
    }
  }
}

async function servesSlot (client: Awaited<ReturnType<typeof rawNodeClient>>, slot: number): Promise<boolean> {
  const myself = String(await client.sendCommand(['CLUSTER', 'MYID']))
  const slots = await client.sendCommand(['CLUSTER', 'SLOTS']) as Array<[number, number, [Buffer, number, Buffer]]>
  return slots.some(([from, to, owner]) => slot >= from && slot <= to && String(owner[2]) === myself)
}

export interface TlsFiles {
  dir: string
  caFile: string
  ca: string
  certFile: string
  keyFile: string
  /** A client certificate signed by the same CA. */
  clientCertFile: string
  clientKeyFile: string
}

/** A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate; made for this test only. */
export async function makeTlsFiles (t: Test, subject = 'cmu-proxy-test-ca'): Promise<TlsFiles> {
  requireOpenssl()
  const dir = temporaryDirectory(t)
  const at = (name: string): string => join(dir, name)
  const openssl = async (...args: string[]): Promise<void> => {
    const result = await runToEnd('openssl', args)
    if (result.code !== 0) throw new Error(`openssl ${args[0] ?? ''} failed: ${result.stderr}`)
  }
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  await openssl('req', '-x509', ...ec, '-keyout', at('ca.key'), '-out', at('ca.crt'), '-days', '2', '-subj', `/CN=${subject}`)
  writeFileSync(at('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n')
  writeFileSync(at('client.ext'), 'extendedKeyUsage=clientAuth\n')
  for (const [name, cn] of [['server', 'localhost'], ['client', 'cmu-proxy']] as const) {
    await openssl('req', ...ec, '-keyout', at(`${name}.key`), '-out', at(`${name}.csr`), '-subj', `/CN=${cn}`)
    await openssl('x509', '-req', '-in', at(`${name}.csr`), '-CA', at('ca.crt'), '-CAkey', at('ca.key'), '-CAcreateserial', '-out', at(`${name}.crt`), '-days', '2', '-extfile', at(`${name}.ext`))
  }
  return { dir, caFile: at('ca.crt'), ca: readFileSync(at('ca.crt'), 'utf8'), certFile: at('client.crt'), keyFile: at('client.key'), clientCertFile: at('client.crt'), clientKeyFile: at('client.key') }
}

export interface TlsRedis { server: RedisServer, tlsPort: number, files: TlsFiles }

/** A redis-server with a TLS port (and its plain port for readiness), asking clients for a certificate when `clientCertificates`. */
export async function startTlsRedisServer (t: Test, files: TlsFiles, clientCertificates: boolean): Promise<TlsRedis> {
  const tlsPort = await freePort()
  const server = await startRedisServer(t, () => [
    '--tls-port', String(tlsPort), '--tls-cert-file', join(files.dir, 'server.crt'), '--tls-key-file', join(files.dir, 'server.key'),
    '--tls-ca-cert-file', files.caFile, '--tls-auth-clients', clientCertificates ? 'yes' : 'no'
  ])
  return { server, tlsPort, files }
}

function requireOpenssl (): void {
  const probe = spawnSync('openssl', ['version'], { encoding: 'utf8', timeout: 5_000 })
  if (probe.status !== 0) throw new Error('openssl is needed to make the TLS tests\' certificates: apt-get install -y openssl')
}
