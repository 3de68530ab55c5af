// The front door's section: the limits on callers' connections (Node's HTTP
// server settings) and the Host names served (PROXY_ALLOWED_HOSTS), used by
// proxy/front-door.ts and proxy/allowed-hosts.ts.
import { isIP } from 'node:net'
import { echo, problemOf, type ProblemList } from './problems.js'
import type { Config } from './schema.js'

export interface FrontDoorSettings {
  /** INBOUND_REQUEST_TIMEOUT_MS: the whole request (head; no route takes a body) must arrive within this. */
  readonly requestTimeoutMs: number
  /** INBOUND_KEEP_ALIVE_TIMEOUT_MS */
  readonly keepAliveTimeoutMs: number
  /** INBOUND_MAX_REQUESTS_PER_CONNECTION; 0: no limit. */
  readonly maxRequestsPerConnection: number
  /** INBOUND_MAX_CONNECTIONS */
  readonly maxConnections: number
  /** INBOUND_MAX_PIPELINED_REQUESTS */
  readonly maxPipelinedRequests: number
  /**
   * The Host names served on the proxied routes besides loopback names
   * (PROXY_ALLOWED_HOSTS, lower case, IPv6 in brackets); empty in anonymous
   * mode without it (loopback names only). Undefined: any Host (keys are
   * required and PROXY_ALLOWED_HOSTS is unset).
   */
  readonly allowedHosts: ReadonlySet<string> | undefined
}

/** A DNS name (letters, digits, hyphens, dots) or an IPv4 address. */
const HOST_NAME = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/

export function frontDoorSettings (config: Config, apiKeys: readonly string[], problems: ProblemList): FrontDoorSettings {
  const listed = config.PROXY_ALLOWED_HOSTS === undefined ? undefined : parseHostList(config.PROXY_ALLOWED_HOSTS)
  problems.check(['PROXY_ALLOWED_HOSTS'], () => listed !== undefined && 'bad' in listed
    ? problemOf('PROXY_ALLOWED_HOSTS', `must be a comma-separated list of host names or IP addresses, without ports (any port is accepted); ${echo(listed.bad)} is not one`)
    : undefined)
  const hosts = listed === undefined || 'bad' in listed ? undefined : listed.hosts
  return {
    requestTimeoutMs: config.INBOUND_REQUEST_TIMEOUT_MS,
    keepAliveTimeoutMs: config.INBOUND_KEEP_ALIVE_TIMEOUT_MS,
    maxRequestsPerConnection: config.INBOUND_MAX_REQUESTS_PER_CONNECTION,
    maxConnections: config.INBOUND_MAX_CONNECTIONS,
    maxPipelinedRequests: config.INBOUND_MAX_PIPELINED_REQUESTS,
    // Anonymous: a web page whose name rebinds to this machine must not read reports (DNS rebinding).
    allowedHosts: hosts ?? (apiKeys.length === 0 ? new Set() : undefined)
  }
}

function parseHostList (value: string): { hosts: ReadonlySet<string> } | { bad: string } {
  const hosts = new Set<string>()
  for (const entry of value.split(',')) {
    const name = entry.trim().toLowerCase().replace(/\.$/, '')
    if (name === '') continue
    const bare = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name
    if (isIP(bare) === 6) hosts.add(`[${bare}]`)
    else if (HOST_NAME.test(name)) hosts.add(name)
    else return { bad: entry.trim() }
  }
  return { hosts }
}
