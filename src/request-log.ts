// One JSON line per request, written when it completes, with what on-call
// needs (status, duration, problem code) and nothing secret.
import { LogController, type FastifyReply, type FastifyRequest } from 'fastify'
import { errorLabel, loggableUrl } from './logger.js'

/** Probes and scrapes: logged at debug only. */
const QUIET_PATHS = new Set(['/healthz', '/readyz', '/metrics'])

interface RequestLine {
  method: string
  url: string
  statusCode: number
  durationMs: number
  code?: string
  cache?: string
  error?: string
}

export class RequestLogController extends LogController {
  override incomingRequest (): void {}

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const line: RequestLine = {
      method: request.method,
      url: loggableUrl(request.raw.url ?? ''),
      statusCode: reply.statusCode,
      durationMs: Math.round(reply.elapsedTime * 100) / 100
    }
    if (request.problemCode !== null) line.code = request.problemCode
    if (request.cacheResult !== null) line.cache = request.cacheResult
    if (error !== null && error !== undefined) line.error = errorLabel(error)
    if (QUIET_PATHS.has(request.routeOptions.url ?? '')) request.log.debug(line, 'request')
    else request.log.info(line, 'request')
  }

  override streamError (error: Error, request: FastifyRequest): void {
    // Mid-body failures (upstream reset, body timeout, caller gone): the status line is already sent.
    request.log.warn({ error: errorLabel(error) }, 'response body ended early')
  }
}
