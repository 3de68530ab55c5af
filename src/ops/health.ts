// Liveness and readiness. /readyz is 200 only while a usable token is held
// (and, in a fleet, this instance is a member of it), and otherwise names
// the cause, so on-call can tell what is wrong in one curl.
import type { FastifyInstance } from 'fastify'
import type { TokenStatusSource } from '../adobe/token-status.js'

/** Something besides the token that keeps the instance out of rotation (fleet mode: a key list that is not the fleet's). */
export interface ReadinessGate {
  notReady: () => { code: string, reason: string, detail: string } | undefined
}

export interface HealthOptions {
  broker: TokenStatusSource
  gate?: ReadinessGate | undefined
}

export async function healthRoutes (app: FastifyInstance, { broker, gate }: HealthOptions): Promise<void> {
  // Probes and scrapes are not traced: they would drown the traces that matter.
  app.get('/healthz', { config: { otel: false } }, async (_request, reply) => {
    reply.header('cache-control', 'no-store')
    return { status: 'ok' }
  })

  app.get('/readyz', { config: { otel: false } }, async (_request, reply) => {
    reply.header('cache-control', 'no-store')
    const gated = gate?.notReady()
    if (gated !== undefined) return await reply.code(503).send({ status: 'not_ready', ...gated })
    const status = broker.status()
    if (status.ready) return { status: 'ready', tokenExpiresAt: status.token === undefined ? undefined : new Date(status.token.expiresAt).toISOString() }
    return await reply.code(503).send({ status: 'not_ready', code: status.code, reason: status.detail })
  })
}
