// One JSON line per request, written when it completes, with what on-call
// needs (status, duration, problem code) and nothing secret. Health checks go
// to debug so probes do not drown the log.
import { LogController, type FastifyReply, type FastifyRequest } from 'fastify'
import { loggableUrl } from './logger.js'

const QUIET_PATHS = new Set(['/healthz', '/readyz'])

export class RequestLogController extends LogController {
  override incomingRequest (): void {}

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const line = {
      method: request.method,
      url: loggableUrl(request.raw.url ?? ''),
      statusCode: reply.statusCode,
      durationMs: Math.round(reply.elapsedTime * 100) / 100,
      ...(request.problemCode === null ? {} : { code: request.problemCode }),
      ...(request.cacheResult === null ? {} : { cache: request.cacheResult }),
      ...(error === null || error === undefined ? {} : { error: (error as { code?: string }).code ?? error.name })
    }
    if (QUIET_PATHS.has(request.routeOptions.url ?? '')) request.log.debug(line, 'request')
    else request.log.info(line, 'request')
  }

  override streamError (error: Error, request: FastifyRequest): void {
    // Mid-body failures (upstream reset, body timeout, caller gone): the status line is already sent.
    request.log.warn({ error: (error as { code?: string }).code ?? error.name }, 'response body ended early')
  }
}
