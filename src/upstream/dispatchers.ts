// How calls to Adobe leave the process: straight to Adobe, or through the
// egress proxy decided per Adobe origin at start (config/egress-proxy.ts,
// with the rules of undici's EnvHttpProxyAgent), so `check` and the start-up
// log print the very decision the dispatchers act on.
import type { Dispatcher, Pool as UndiciPool } from 'undici'
import type { AdobeEgress } from '../config/settings.js'
import { Pool, ProxyAgent } from './undici-dispatchers.js'

export interface ConnectionOptions {
  /** Connections per origin; unbounded when absent. */
  connections?: number | undefined
  connectTimeoutMs: number
  /** Defaults for every request; a request may set its own (the DCR calls do). */
  headersTimeoutMs?: number | undefined
  bodyTimeoutMs?: number | undefined
  keepAliveTimeoutMs: number
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

/** One line for the start-up log and `check`: "direct", "via <proxy>", or each route when they differ. */
export function describeAdobeEgress ({ auth, cmu, esm }: AdobeEgress): string {
  if (auth === cmu && cmu === esm) return describeEgress(auth)
  return cmu === esm ? `auth ${describeEgress(auth)}, reports ${describeEgress(cmu)}` : `auth ${describeEgress(auth)}, cmu ${describeEgress(cmu)}, esm ${describeEgress(esm)}`
}
