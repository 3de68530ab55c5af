// /admin/*: the token's state for on-call (never the token), two token
// levers and the cache purge (cache-purge.ts). Registered only when
// ADMIN_API_KEY is set; otherwise these paths are 404.
import type { FastifyInstance } from 'fastify'
import { maskClientId } from '../adobe/credentials.js'
import { noStatementToRegister, reregisterTooSoon } from '../adobe/errors.js'
import { publicStatementInfo } from '../adobe/software-statement.js'
import type { TokenLevers, TokenStatus } from '../adobe/token-status.js'
import type { ResponseCache } from '../cache/response-cache.js'
import { unauthorized } from '../kernel/errors.js'
import { presentedKey, type ApiKeys } from '../proxy/api-keys.js'
import { VERSION } from '../kernel/version.js'
import { cachePurgeRoute, type CachePurgeOptions } from './cache-purge.js'

/** Each registration creates a client at Adobe: a human lever needs no more than one a minute. */
const REREGISTER_INTERVAL_MS = 60_000

export interface AdminOptions {
  /** ADMIN_API_KEY: one key, replaced when a reload changes it (ops/live-secrets.ts). */
  adminKeys: ApiKeys
  broker: TokenLevers
  cache: ResponseCache | undefined
  /** The software statement in use (a reload may change it). */
  softwareStatement: () => string | undefined
  purge: CachePurgeOptions
  upstreams: { authUrl: string, cmuUrl: string, esmUrl: string }
  /** Fleet mode: the shared store's state (never a secret). */
  state?: (() => unknown) | undefined
  startedAt: number
  now: () => number
}

export async function adminRoutes (app: FastifyInstance, options: AdminOptions): Promise<void> {
  const { broker, cache, adminKeys } = options
  app.addHook('onRequest', async (request, reply) => {
    reply.header('cache-control', 'no-store')
    if (!adminKeys.matches(presentedKey(request.headers))) {
      reply.header('www-authenticate', 'Bearer realm="cmu-proxy-admin"')
      throw unauthorized()
    }
  })

  app.get('/admin/status', async () => {
    const status = broker.status()
    const softwareStatement = options.softwareStatement()
    return {
      version: VERSION,
      uptimeSeconds: Math.round((options.now() - options.startedAt) / 1000),
      ready: status.ready,
      ...(status.code === undefined ? {} : { notReadyCode: status.code, notReadyReason: status.detail }),
      token: tokenView(status) ?? null,
      lastError: status.lastError === undefined ? null : { ...status.lastError, at: iso(status.lastError.at), nextAttemptAt: iso(status.lastError.nextAttemptAt) },
      counts: status.counts,
      clientId: status.clientId === undefined ? null : maskClientId(status.clientId),
      softwareStatement: softwareStatement === undefined ? null : publicStatementInfo(softwareStatement),
      upstreams: options.upstreams,
      cache: cache?.stats() ?? null,
      state: options.state?.() ?? null
    }
  })

  app.post('/admin/token/refresh', async () => {
    await broker.refreshNow()
    return { refreshed: true, token: tokenView(broker.status()) }
  })

  let lastReregisterAt: number | undefined
  app.post('/admin/credentials/reregister', async () => {
    if (options.softwareStatement() === undefined) {
      throw noStatementToRegister()
    }
    const now = options.now()
    if (lastReregisterAt !== undefined && now - lastReregisterAt < REREGISTER_INTERVAL_MS) {
      throw reregisterTooSoon((lastReregisterAt + REREGISTER_INTERVAL_MS - now) / 1000)
    }
    // Counted when it starts, so concurrent requests are limited too, and a failed one as well.
    lastReregisterAt = now
    await broker.reregister()
    const status = broker.status()
    return { reregistered: true, clientId: status.clientId === undefined ? null : maskClientId(status.clientId), token: tokenView(status) }
  })

  await cachePurgeRoute(app, options.purge)
}

/** The token's instants as dates (never the token). */
function tokenView (status: TokenStatus): { obtainedAt: string, expiresAt: string, refreshAt: string | undefined } | undefined {
  const { token } = status
  if (token === undefined) return undefined
  return { obtainedAt: iso(token.obtainedAt), expiresAt: iso(token.expiresAt), refreshAt: token.refreshAt === undefined ? undefined : iso(token.refreshAt) }
}

function iso (ms: number): string {
  return new Date(ms).toISOString()
}
