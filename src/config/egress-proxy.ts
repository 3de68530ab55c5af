// HTTPS_PROXY / HTTP_PROXY / NO_PROXY: which calls to Adobe go through an
// egress proxy. Both Adobe origins are fixed at start, so the choice is made
// here once per origin, with the rules of undici's EnvHttpProxyAgent, instead
// of on every request (EnvHttpProxyAgent parses the origin and scans NO_PROXY
// per dispatch, and falls back to the environment for anything not passed);
// `check` and the start-up log then print the very decision the dispatchers
// (upstream/dispatchers.ts) act on.

export interface EgressVariables {
  HTTPS_PROXY?: string | undefined
  HTTP_PROXY?: string | undefined
  NO_PROXY?: string | undefined
}

const DEFAULT_PORTS: Record<string, number> = { 'http:': 80, 'https:': 443 }

/**
 * The proxy URL that calls to `url` go through, or undefined for a direct
 * connection. As undici's EnvHttpProxyAgent: https URLs use HTTPS_PROXY, else
 * HTTP_PROXY; NO_PROXY lists hosts (a leading `.` or `*.` is dropped, so
 * `example.com` covers its subdomains), optionally with `:port`, or `*`.
 */
export function egressProxyFor (url: string, variables: EgressVariables): string | undefined {
  const { protocol, hostname, port } = new URL(url)
  const proxy = protocol === 'https:' ? variables.HTTPS_PROXY ?? variables.HTTP_PROXY : variables.HTTP_PROXY
  if (proxy === undefined) return undefined
  const host = hostname.toLowerCase()
  const targetPort = Number(port) || DEFAULT_PORTS[protocol] || 0
  for (const entry of (variables.NO_PROXY ?? '').split(/[,\s]/)) {
    if (entry === '') continue
    if (entry === '*') return undefined
    const [, name = entry, entryPort] = /^(.+):(\d+)$/.exec(entry) ?? []
    if (entryPort !== undefined && Number(entryPort) !== targetPort) continue
    const bare = name.replace(/^\*?\./, '').toLowerCase()
    if (host === bare || host.endsWith(`.${bare}`)) return undefined
  }
  return proxy
}
