// One JSON line per request, written when it completes, with what on-call
// needs (status, duration, problem code) and nothing secret.
import { LogController, type FastifyReply, type FastifyRequest } from 'fastify'
import { errorLabel, loggableUrl } from './logger.js'

/** Probes and scrapes: logged at debug only. */
const QUIET_PATHS = new Set(['/healthz', '/readyz', '/metrics'])

export interface RequestLine {
  method: string
  url: string
  statusCode: number
  durationMs: number
  /** Which report API (cmu, esm) a forwarded request was for. */
  api?: string
  code?: string
  cache?: string
  /** Why a stale copy was served (its Cache-Status header). */
  cacheStatus?: string
  /** Present (true) when a dropped upstream connection was retried for this request. */
  retried?: true
  error?: string
}

/** The request line's fields, in one place for completed and abandoned requests. */
export function requestLine (request: FastifyRequest, statusCode: number, durationMs: number, error?: Error | null): RequestLine {
  const line: RequestLine = { method: request.method, url: loggableUrl(request.raw.url ?? ''), statusCode, durationMs: Math.round(durationMs * 100) / 100 }
  if (request.reportApi !== null) line.api = request.reportApi
  if (request.problemCode !== null) line.code = request.problemCode
  if (request.cacheResult !== null) line.cache = request.cacheResult
  if (request.cacheStatus !== null) line.cacheStatus = request.cacheStatus
  if (request.upstreamRetried) line.retried = true
  if (error !== null && error !== undefined) line.error = errorLabel(error)
  return line
}

export class RequestLogController extends LogController {
  override incomingRequest (): void {}

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    // Already logged as 499 by the onRequestAbort hook (app.ts).
    if (request.callerLeft) return
    const line = requestLine(request, reply.statusCode, reply.elapsedTime, error)
    if (QUIET_PATHS.has(request.routeOptions.url ?? '')) request.log.debug(line, 'request')
    else request.log.info(line, 'request')
  }

  override streamError (error: Error, request: FastifyRequest): void {
    // Mid-body failures (upstream reset, body timeout, caller gone): the status line is already sent.
    request.log.warn({ error: errorLabel(error) }, 'response body ended early')
  }
}
