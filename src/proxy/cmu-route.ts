// GET/HEAD <prefix>/*: validate the target, attach the current token, stream
// Adobe's answer back. An upstream 401 means our token went bad: invalidate
// it, get a fresh one (single-flight in the broker) and retry exactly once.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import type { TokenBroker } from '../adobe/token-broker.js'
import { methodNotAllowed, upstreamRejectedToken } from '../errors.js'
import { callerResponseHeaders, upstreamRequestHeaders } from './headers.js'
import { upstreamTarget } from './target.js'
import type { Upstream } from './upstream.js'

export interface CmuRouteOptions {
  /** PROXY_PATH_PREFIX (not `prefix`: Fastify reserves that register option) */
  pathPrefix: string
  broker: TokenBroker
  upstream: Upstream
}

const ALLOW = 'GET, HEAD'
const OTHER_METHODS = ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

export async function cmuRoutes (app: FastifyInstance, { pathPrefix: prefix, broker, upstream }: CmuRouteOptions): Promise<void> {
  async function forward (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const target = upstreamTarget(request.raw.url ?? '', prefix)
    const headers = upstreamRequestHeaders(request.headers, request.id, request.ip)
    const abort = new AbortController()
    // 'close' before the response finished means the caller went away: stop Adobe's work too.
    reply.raw.once('close', () => { if (!reply.raw.writableFinished) abort.abort() })

    // CMU only serves GET; a caller's HEAD is answered from a GET whose body is dropped.
    const send = async (token: string): Promise<Dispatcher.ResponseData> =>
      await upstream.request({ method: 'GET', ...target, headers: { ...headers, authorization: `Bearer ${token}` }, signal: abort.signal })

    let token = await broker.getToken()
    let response = await send(token)
    if (response.statusCode === 401) {
      await response.body.dump()
      broker.invalidate(token)
      token = await broker.getToken()
      response = await send(token)
      if (response.statusCode === 401) {
        await response.body.dump()
        throw upstreamRejectedToken()
      }
    }
    reply.code(response.statusCode).headers(callerResponseHeaders(response.headers))
    if (request.method === 'HEAD') {
      // dump() reads a small body to the end (keeping the socket) and quietly destroys a large one.
      void response.body.dump()
      return await reply.send()
    }
    return await reply.send(response.body)
  }

  app.route({ method: ['GET', 'HEAD'], url: prefix, handler: forward })
  app.route({ method: ['GET', 'HEAD'], url: `${prefix}/*`, handler: forward })
  // Refused in onRequest, before Fastify would parse (and maybe 415) a request body.
  const refuse = async (): Promise<never> => { throw methodNotAllowed(ALLOW) }
  app.route({ method: [...OTHER_METHODS], url: prefix, onRequest: refuse, handler: refuse })
  app.route({ method: [...OTHER_METHODS], url: `${prefix}/*`, onRequest: refuse, handler: refuse })
}
