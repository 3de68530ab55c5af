// Liveness and readiness. /readyz is 200 only while a usable token is held,
// and otherwise names the cause, so on-call can tell what is wrong in one curl.
import type { FastifyInstance } from 'fastify'
import type { TokenStatusSource } from '../adobe/token-status.js'

export async function healthRoutes (app: FastifyInstance, { broker }: { broker: TokenStatusSource }): Promise<void> {
  // Probes and scrapes are not traced: they would drown the traces that matter.
  app.get('/healthz', { config: { otel: false } }, async (_request, reply) => {
    reply.header('cache-control', 'no-store')
    return { status: 'ok' }
  })

  app.get('/readyz', { config: { otel: false } }, async (_request, reply) => {
    const status = broker.status()
    reply.header('cache-control', 'no-store')
    if (status.ready) return { status: 'ready', tokenExpiresAt: status.token === undefined ? undefined : new Date(status.token.expiresAt).toISOString() }
    return await reply.code(503).send({ status: 'not_ready', code: status.code, reason: status.detail })
  })
}
