// Fleet mode's Redis, as settings: which topology (one node, Sentinel, or a
// Cluster), how to authenticate, and TLS. Checked once at start by
// loadSettings (one line per bad variable, never echoing a secret) and turned
// into a typed section here, so the store never parses the environment.
import { createPrivateKey, X509Certificate } from 'node:crypto'

export interface RedisNodeAddress { host: string, port: number }

export type RedisTopology =
  /** REDIS_URL: one Redis (or Valkey), or a managed endpoint in front of one. */
  | { kind: 'standalone', node: RedisNodeAddress, database: number }
  /** REDIS_URL + REDIS_CLUSTER=true: a seed node; the client discovers the others. */
  | { kind: 'cluster', seeds: RedisNodeAddress[] }
  /** REDIS_SENTINELS + REDIS_SENTINEL_NAME: the sentinels say which node is the master. */
  | { kind: 'sentinel', sentinels: RedisNodeAddress[], masterName: string }

export interface RedisTls {
  /** PEM: the CA that signed the servers' certificates (absent: Node's default list). */
  ca?: string | undefined
  /** PEM: a client certificate and its key, for servers that ask for one (tls-auth-clients). */
  cert?: string | undefined
  key?: string | undefined
}

export interface RedisSettings {
  topology: RedisTopology
  /** An ACL user (REDIS_USERNAME, or the user in REDIS_URL). */
  username?: string | undefined
  /** REDIS_PASSWORD(_FILE), or the password in REDIS_URL. */
  password?: string | undefined
  /** On with a rediss:// URL, or with Sentinel when REDIS_TLS_CA(_FILE) is set. */
  tls?: RedisTls | undefined
  commandTimeoutMs: number
  /** Where to, for logs and `check`: never a credential. */
  target: string
  /** The variable that names Redis, for messages: REDIS_URL or REDIS_SENTINELS. */
  variable: 'REDIS_URL' | 'REDIS_SENTINELS'
}

/** The variables read here (the validated configuration has them all). */
export interface RedisValues {
  readonly REDIS_URL?: string | undefined
  readonly REDIS_SENTINELS?: string | undefined
  readonly REDIS_SENTINEL_NAME?: string | undefined
  readonly REDIS_CLUSTER: boolean
  readonly REDIS_USERNAME?: string | undefined
  readonly REDIS_PASSWORD?: string | undefined
  readonly REDIS_TLS_CA?: string | undefined
  readonly REDIS_TLS_CA_FILE?: string | undefined
  readonly REDIS_TLS_CERT?: string | undefined
  readonly REDIS_TLS_CERT_FILE?: string | undefined
  readonly REDIS_TLS_KEY?: string | undefined
  readonly REDIS_TLS_KEY_FILE?: string | undefined
  readonly REDIS_COMMAND_TIMEOUT_MS: number
}

export interface RedisProblem { variable: string, problem: string }

const SENTINEL_PORT = 26379
const REDIS_PORT = 6379

/** Fleet mode is on: some Redis is configured. */
export function usesRedis (config: RedisValues): boolean {
  return config.REDIS_URL !== undefined || config.REDIS_SENTINELS !== undefined
}

/** The variable that turns fleet mode on, for messages ("is required with REDIS_URL"). */
export function redisVariable (config: RedisValues): 'REDIS_URL' | 'REDIS_SENTINELS' {
  return config.REDIS_SENTINELS !== undefined && config.REDIS_URL === undefined ? 'REDIS_SENTINELS' : 'REDIS_URL'
}

/**
 * "host:port,host:port" (IPv6 in brackets; the port defaults to `defaultPort`),
 * or undefined when an entry is not one.
 */
export function parseNodeList (text: string, defaultPort: number): RedisNodeAddress[] | undefined {
  const nodes: RedisNodeAddress[] = []
  for (const entry of text.split(',').map((part) => part.trim())) {
    const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(?::(\d{1,5}))?$/.exec(entry)
    const port = match?.[3] === undefined ? defaultPort : Number(match[3])
    if (match === null || port < 1 || port > 65535) return undefined
    nodes.push({ host: match[1] ?? match[2] ?? '', port })
  }
  return nodes
}

/** Every problem with the Redis variables (REDIS_URL's own form is checked by the schema and load.ts). */
export function redisProblems (config: RedisValues): RedisProblem[] {
  const problems: RedisProblem[] = []
  const problem = (variable: string, text: string): void => { problems.push({ variable, problem: text }) }
  if (config.REDIS_SENTINELS !== undefined) {
    if (config.REDIS_URL !== undefined) problem('REDIS_SENTINELS', 'and REDIS_URL are both set: set REDIS_URL for one Redis (or a Cluster, with REDIS_CLUSTER=true), or REDIS_SENTINELS for Redis behind Sentinel')
    if (parseNodeList(config.REDIS_SENTINELS, SENTINEL_PORT) === undefined) problem('REDIS_SENTINELS', `must be host:port pairs separated by commas, e.g. sentinel-1:26379,sentinel-2:26379 (got ${JSON.stringify(config.REDIS_SENTINELS.slice(0, 80))})`)
    if (config.REDIS_SENTINEL_NAME === undefined) problem('REDIS_SENTINEL_NAME', 'is required with REDIS_SENTINELS: the name of the master the sentinels monitor (sentinel monitor <name> ...)')
    if (config.REDIS_CLUSTER) problem('REDIS_CLUSTER', 'cannot be combined with REDIS_SENTINELS: a Cluster fails over by itself')
  } else {
    if (config.REDIS_SENTINEL_NAME !== undefined) problem('REDIS_SENTINEL_NAME', 'is set but REDIS_SENTINELS is not: list the sentinels in REDIS_SENTINELS')
    if (config.REDIS_CLUSTER && config.REDIS_URL === undefined) problem('REDIS_CLUSTER', 'needs REDIS_URL: the address of one node of the cluster')
  }
  const url = config.REDIS_URL !== undefined && URL.canParse(config.REDIS_URL) ? new URL(config.REDIS_URL) : undefined
  // Never echoed: it is the password.
  if (url !== undefined && (percentDecoded(url.username) === undefined || percentDecoded(url.password) === undefined)) problem('REDIS_URL', 'has a user or password that is not valid percent-encoding (write a % in it as %25)')
  const path = url?.pathname ?? ''
  if (!/^\/?\d{0,5}$/.test(path)) problem('REDIS_URL', 'must end with the host and port, or with /<database number>')
  else if (config.REDIS_CLUSTER && path.length > 1) problem('REDIS_URL', 'names a database, which a Redis Cluster does not have (only database 0): remove the /<number>')
  problems.push(...tlsProblems(config))
  return problems
}

function tlsProblems (config: RedisValues): RedisProblem[] {
  const problems: RedisProblem[] = []
  const name = (base: 'REDIS_TLS_CA' | 'REDIS_TLS_CERT' | 'REDIS_TLS_KEY'): string => config[`${base}_FILE`] === undefined ? base : `${base}_FILE`
  const { REDIS_TLS_CA: ca, REDIS_TLS_CERT: cert, REDIS_TLS_KEY: key } = config
  if (ca === undefined && cert === undefined && key === undefined) return problems
  if (config.REDIS_URL !== undefined && !config.REDIS_URL.startsWith('rediss://')) {
    const first = ca !== undefined ? name('REDIS_TLS_CA') : cert !== undefined ? name('REDIS_TLS_CERT') : name('REDIS_TLS_KEY')
    problems.push({ variable: first, problem: 'needs a rediss:// REDIS_URL: with redis:// the connection is not encrypted' })
  }
  if (config.REDIS_URL === undefined && config.REDIS_SENTINELS === undefined) {
    problems.push({ variable: name(ca !== undefined ? 'REDIS_TLS_CA' : cert !== undefined ? 'REDIS_TLS_CERT' : 'REDIS_TLS_KEY'), problem: 'is set but no Redis is (REDIS_URL or REDIS_SENTINELS)' })
  }
  if (ca !== undefined && !isCertificate(ca)) problems.push({ variable: name('REDIS_TLS_CA'), problem: 'does not hold a PEM certificate (-----BEGIN CERTIFICATE-----)' })
  if (cert !== undefined && !isCertificate(cert)) problems.push({ variable: name('REDIS_TLS_CERT'), problem: 'does not hold a PEM certificate (-----BEGIN CERTIFICATE-----)' })
  // Never echoed: it is a private key.
  if (key !== undefined && !isPrivateKey(key)) problems.push({ variable: name('REDIS_TLS_KEY'), problem: 'does not hold an unencrypted PEM private key (a key with a passphrase is not supported)' })
  if ((cert === undefined) !== (key === undefined)) {
    // The missing one by its file variable, which is what operators set.
    problems.push({ variable: cert === undefined ? 'REDIS_TLS_CERT_FILE' : 'REDIS_TLS_KEY_FILE', problem: `is required with ${cert === undefined ? name('REDIS_TLS_KEY') : name('REDIS_TLS_CERT')}: a client certificate needs its key` })
  } else if (cert !== undefined && key !== undefined && isCertificate(cert) && isPrivateKey(key) && !new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) {
    problems.push({ variable: name('REDIS_TLS_KEY'), problem: `is not the key of the certificate in ${name('REDIS_TLS_CERT')}` })
  }
  return problems
}

function isCertificate (pem: string): boolean {
  try {
    return new X509Certificate(pem).raw.length > 0
  } catch {
    return false
  }
}

function isPrivateKey (pem: string): boolean {
  try {
    return createPrivateKey(pem).type === 'private'
  } catch {
    return false
  }
}

/** The typed section, from a configuration loadSettings has validated; undefined without Redis. */
export function redisSettings (config: RedisValues): RedisSettings | undefined {
  const tlsFiles: RedisTls = { ca: config.REDIS_TLS_CA, cert: config.REDIS_TLS_CERT, key: config.REDIS_TLS_KEY }
  const anyTlsFile = tlsFiles.ca !== undefined || tlsFiles.cert !== undefined
  const common = { commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS }
  if (config.REDIS_SENTINELS !== undefined) {
    const sentinels = parseNodeList(config.REDIS_SENTINELS, SENTINEL_PORT) ?? []
    const masterName = config.REDIS_SENTINEL_NAME ?? ''
    return {
      ...common,
      topology: { kind: 'sentinel', sentinels, masterName },
      username: config.REDIS_USERNAME,
      password: config.REDIS_PASSWORD,
      tls: anyTlsFile ? tlsFiles : undefined,
      target: `sentinel master ${masterName} via ${sentinels.map(formatNode).join(',')}${anyTlsFile ? ' (TLS)' : ''}`,
      variable: 'REDIS_SENTINELS'
    }
  }
  if (config.REDIS_URL === undefined) return undefined
  const url = new URL(config.REDIS_URL)
  const node = { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: url.port === '' ? REDIS_PORT : Number(url.port) }
  const secure = url.protocol === 'rediss:'
  return {
    ...common,
    topology: config.REDIS_CLUSTER ? { kind: 'cluster', seeds: [node] } : { kind: 'standalone', node, database: url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0 },
    // REDIS_USERNAME and REDIS_PASSWORD(_FILE) win over the URL's.
    username: config.REDIS_USERNAME ?? (url.username === '' ? undefined : percentDecoded(url.username)),
    password: config.REDIS_PASSWORD ?? (url.password === '' ? undefined : percentDecoded(url.password)),
    tls: secure ? tlsFiles : undefined,
    target: `${config.REDIS_CLUSTER ? 'cluster via ' : ''}${url.protocol}//${url.host}`,
    variable: 'REDIS_URL'
  }
}

/** A URL's user or password, decoded; undefined when it is not valid percent-encoding (redisProblems reports that first). */
function percentDecoded (text: string): string | undefined {
  try {
    return decodeURIComponent(text)
  } catch {
    return undefined
  }
}

function formatNode ({ host, port }: RedisNodeAddress): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`
}
