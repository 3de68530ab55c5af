// How calls to Adobe leave the process: straight to Adobe, or through the
// egress proxy named by HTTPS_PROXY / HTTP_PROXY / NO_PROXY (read in
// config.ts). Both Adobe origins are fixed at start, so the choice is made
// once per origin, with the rules of undici's EnvHttpProxyAgent, instead of
// on every request (EnvHttpProxyAgent parses the origin and scans NO_PROXY
// per dispatch, and falls back to the environment for anything not passed); `check` and
// the start-up log then print the very decision the dispatchers act on.
import type { Dispatcher, Pool as UndiciPool } from 'undici'
import { Pool, ProxyAgent } from './undici-dispatchers.js'

export interface EgressSettings {
  HTTPS_PROXY?: string | undefined
  HTTP_PROXY?: string | undefined
  NO_PROXY?: string | undefined
}

export interface ConnectionOptions {
  /** Connections per origin; unbounded when absent. */
  connections?: number | undefined
  connectTimeoutMs: number
  /** Defaults for every request; a request may set its own (the DCR calls do). */
  headersTimeoutMs?: number | undefined
  bodyTimeoutMs?: number | undefined
  keepAliveTimeoutMs: number
}

const DEFAULT_PORTS: Record<string, number> = { 'http:': 80, 'https:': 443 }

/**
 * The proxy URL that calls to `url` go through, or undefined for a direct
 * connection. As undici's EnvHttpProxyAgent: https URLs use HTTPS_PROXY, else
 * HTTP_PROXY; NO_PROXY lists hosts (a leading `.` or `*.` is dropped, so
 * `example.com` covers its subdomains), optionally with `:port`, or `*`.
 */
export function egressProxyFor (url: string, settings: EgressSettings): string | undefined {
  const { protocol, hostname, port } = new URL(url)
  const proxy = protocol === 'https:' ? settings.HTTPS_PROXY ?? settings.HTTP_PROXY : settings.HTTP_PROXY
  if (proxy === undefined) return undefined
  const host = hostname.toLowerCase()
  const targetPort = Number(port) || DEFAULT_PORTS[protocol] || 0
  for (const entry of (settings.NO_PROXY ?? '').split(/[,\s]/)) {
    if (entry === '') continue
    if (entry === '*') return undefined
    const [, name = entry, entryPort] = /^(.+):(\d+)$/.exec(entry) ?? []
    if (entryPort !== undefined && Number(entryPort) !== targetPort) continue
    const bare = name.replace(/^\*?\./, '').toLowerCase()
    if (host === bare || host.endsWith(`.${bare}`)) return undefined
  }
  return proxy
}

/** The proxy URL as logs and `check` may show it: user and password masked. */
export function describeEgress (proxy: string | undefined): string {
  if (proxy === undefined) return 'direct'
  const url = new URL(proxy)
  const credentials = url.username !== '' || url.password !== '' ? '***@' : ''
  return `via ${url.protocol}//${credentials}${url.host}`
}

/**
 * A keep-alive dispatcher to `origin`, through `proxy` when given. Requests
 * must carry `origin` (a ProxyAgent routes by it; a Pool ignores it).
 */
export function createDispatcher (origin: string, proxy: string | undefined, options: ConnectionOptions): Dispatcher {
  const poolOptions: UndiciPool.Options = {
    connections: options.connections ?? null,
    keepAliveTimeout: options.keepAliveTimeoutMs,
    connect: { timeout: options.connectTimeoutMs },
    ...(options.headersTimeoutMs === undefined ? {} : { headersTimeout: options.headersTimeoutMs }),
    ...(options.bodyTimeoutMs === undefined ? {} : { bodyTimeout: options.bodyTimeoutMs })
  }
  if (proxy === undefined) return new Pool(origin, poolOptions)
  const tls = { timeout: options.connectTimeoutMs }
  return new ProxyAgent({
    ...poolOptions,
    uri: proxy,
    // http:// targets go to the proxy in absolute form (as curl sends them); https:// ones through a CONNECT tunnel.
    proxyTunnel: false,
    // Connecting to the proxy, and the TLS handshake inside a tunnel, keep our connect timeout.
    proxyTls: tls,
    requestTls: tls,
    // Every pool ProxyAgent opens (to the proxy, or to Adobe through a tunnel) keeps
    // our connection count, keep-alive and timeouts; undici's default would drop them.
    factory: (poolOrigin: string | URL, opts: object) => new Pool(poolOrigin, { ...poolOptions, ...opts }),
    // The proxy's answer to CONNECT is part of connecting: it gets the connect timeout too.
    clientFactory: (proxyOrigin: URL, opts: object) => new Pool(proxyOrigin, { ...opts, headersTimeout: options.connectTimeoutMs })
  })
}

export interface AdobeEgress {
  /** For ADOBE_AUTH_URL (register, token). */
  auth: string | undefined
  /** For ADOBE_CMU_URL (reports). */
  cmu: string | undefined
}

export function adobeEgress (config: EgressSettings & { ADOBE_AUTH_URL: string, ADOBE_CMU_URL: string }): AdobeEgress {
  return { auth: egressProxyFor(config.ADOBE_AUTH_URL, config), cmu: egressProxyFor(config.ADOBE_CMU_URL, config) }
}

/** One line for the start-up log and `check`: "direct", "via <proxy>", or each route when they differ. */
export function describeAdobeEgress ({ auth, cmu }: AdobeEgress): string {
  return auth === cmu ? describeEgress(auth) : `auth ${describeEgress(auth)}, reports ${describeEgress(cmu)}`
}
