// Which Host names the proxied routes answer for. Without inbound keys, a web
// page whose name an attacker rebinds to 127.0.0.1 (DNS rebinding) could
// otherwise read reports through a developer's browser: its requests carry
// the attacker's name in Host. Loopback names are always served; others only
// when PROXY_ALLOWED_HOSTS lists them (config/front-door-settings.ts).
import type { onRequestHookHandler } from 'fastify'
import { misdirected } from '../kernel/errors.js'
import { isLoopbackHost } from '../kernel/loopback.js'

/** The name of a Host header value (RFC 9110 §7.2): lower case, without port or trailing dot; IPv6 keeps its brackets. */
export function hostName (host: string): string {
  const value = host.trim().toLowerCase()
  const name = value.startsWith('[') ? value.slice(0, value.indexOf(']') + 1) : value.replace(/:\d*$/, '')
  return name.replace(/\.$/, '')
}

export function isAllowedHost (host: string | undefined, allowed: ReadonlySet<string>): boolean {
  if (host === undefined) return false
  const name = hostName(host)
  return name !== '' && (isLoopbackHost(name) || allowed.has(name))
}

/** An onRequest hook: 421 Misdirected Request (RFC 9110 §15.5.20) for any other Host, or none. */
export function hostCheck (allowed: ReadonlySet<string>): onRequestHookHandler {
  return (request, _reply, done) => {
    done(isAllowedHost(request.headers.host, allowed) ? undefined : misdirected())
  }
}
