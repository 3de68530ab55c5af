// The front door: what the HTTP server accepts before any route runs. Node's
// own server settings carry the limits (request and keep-alive timeouts,
// requests per connection, connections), pipelining is bounded in
// pipelining.ts, and no request body is ever read: no route takes one, and a
// JSON parser fed a megabyte of `[` by anyone (the 404 handler parses bodies
// too) stalls every caller (issue 19). Requests the parser itself refuses get
// a problem answer from here, and a log line without their bytes.
import { createServer, STATUS_CODES, type IncomingHttpHeaders, type Server } from 'node:http'
import type { Socket } from 'node:net'
import { randomUUID } from 'node:crypto'
import type { FastifyInstance, FastifyServerFactory } from 'fastify'
import type { Logger } from 'pino'
import type { FrontDoorSettings } from '../config/settings.js'
import { PROBLEM_HEADERS, badRequest, bodyNotAllowed, headersTooLarge, problemBody, requestTimeout, type ProxyError } from '../kernel/errors.js'
import { errorLabel } from '../kernel/logger.js'
import { MAX_HELD, Pipelines } from './pipelining.js'

/**
 * Node cuts a head that trickles in for longer than headersTimeout, but only
 * checks every 30 s by default: a slow-loris connection would then hold a
 * socket up to 30 s longer.
 */
const CONNECTIONS_CHECKING_INTERVAL_MS = 1_000

/** The Fastify options that build the server: Node's own settings for every limit, the pipelining bound around Fastify's handler. */
export function frontDoorServer (settings: FrontDoorSettings, logger: Logger): { serverFactory: FastifyServerFactory<Server>, clientErrorHandler: (error: Error & { code?: string }, socket: Socket) => void } {
  const pipelines = new Pipelines(settings.maxPipelinedRequests, () => {
    logger.info({ maxPipelined: settings.maxPipelinedRequests, maxHeld: MAX_HELD }, 'connection closed: it pipelined more requests in one burst than wait unread')
  })
  const serverFactory: FastifyServerFactory<Server> = (handler) => {
    const server = createServer({
      // No route takes a body, so the head is the whole request: one deadline for both (nginx's client_header_timeout).
      requestTimeout: settings.requestTimeoutMs,
      headersTimeout: settings.requestTimeoutMs,
      keepAliveTimeout: settings.keepAliveTimeoutMs,
      connectionsCheckingInterval: CONNECTIONS_CHECKING_INTERVAL_MS
    }, pipelines.wrap(handler))
    // 0 is Node's "no limit"; past the limit Node answers 503 itself, and the last answer carries Connection: close.
    server.maxRequestsPerSocket = settings.maxRequestsPerConnection
    // Past it, Node closes new connections at once.
    server.maxConnections = settings.maxConnections
    return server
  }
  return {
    serverFactory,
    clientErrorHandler: (error, socket) => { answerClientError(error, socket, logger, pipelines) }
  }
}

/** Refuses, before any of it is read, every request that announces a body; and makes sure nothing would parse one. */
export function refuseBodies (app: FastifyInstance): void {
  app.addHook('onRequest', (request, _reply, done) => {
    done(announcesBody(request.headers) ? bodyNotAllowed() : undefined)
  })
  // Behind the hook no body reaches a parser; a bodiless POST that names a content type
  // (`curl -X POST -H 'content-type: application/json'`) still reaches its route, not 415.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, _payload, done) => { done(null, undefined) })
}

/** Content-Length above 0, or any Transfer-Encoding (RFC 9112 §6.3): the request has a body. */
function announcesBody (headers: IncomingHttpHeaders): boolean {
  const length = headers['content-length']
  return headers['transfer-encoding'] !== undefined || (length !== undefined && Number(length) !== 0)
}

/**
 * Node's 'clientError': the parser refused the bytes, or the head outlasted
 * INBOUND_REQUEST_TIMEOUT_MS. There is no request, so no hook or request log
 * runs. The error's rawPacket holds the raw request (API keys included): it
 * is never logged, only the parser's code.
 */
function answerClientError (error: Error & { code?: string }, socket: Socket, logger: Logger, pipelines: Pipelines): void {
  const problem = clientProblem(error.code)
  if (error.code !== 'ECONNRESET' && !socket.destroyed) {
    logger.info({ statusCode: problem.statusCode, code: problem.code, error: errorLabel(error) }, 'client error')
    // With an answer still pending on this connection, bytes written here would cut into it (Node's own rule).
    if (socket.writable && !pipelines.busy(socket)) socket.write(rawProblem(problem))
  }
  socket.destroy()
}

function clientProblem (code: string | undefined): ProxyError {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW': return headersTooLarge()
    case 'ERR_HTTP_REQUEST_TIMEOUT': return requestTimeout()
    // A chunk extension too long: a body, which no route takes.
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW': return bodyNotAllowed()
    default: return badRequest()
  }
}

/** A whole problem answer as bytes for the socket: there is no ServerResponse to write it with. */
function rawProblem (problem: ProxyError): string {
  const id = randomUUID()
  const body = problemBody(problem, id)
  return `HTTP/1.1 ${problem.statusCode} ${STATUS_CODES[problem.statusCode] ?? ''}\r\n` +
    `content-type: ${PROBLEM_HEADERS['content-type']}\r\ncache-control: ${PROBLEM_HEADERS['cache-control']}\r\n` +
    `x-request-id: ${id}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
}
