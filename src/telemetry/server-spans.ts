// The server span of every request, made here rather than by @fastify/otel,
// whose per-route hook wrappers, onSend hook and context switch cost half the
// throughput of a cache hit even with nothing sampled (bench/README.md). One
// onRequest hook starts the span (continuing the caller's traceparent) and,
// only when it is recorded, makes it the active context for the rest of the
// request and gives the request's log lines its ids; onResponse ends it, or
// onRequestAbort when the caller left (Fastify never reaches onResponse then).
// Attributes and status follow the HTTP server semantic conventions: a 4xx
// leaves the status unset, a 5xx is an error.
import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span, type Tracer } from '@opentelemetry/api'
import { ATTR_CLIENT_ADDRESS, ATTR_ERROR_TYPE, ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_HTTP_ROUTE, ATTR_URL_PATH, ATTR_URL_QUERY, ATTR_URL_SCHEME, ATTR_USER_AGENT_ORIGINAL } from '@opentelemetry/semantic-conventions'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { loggableUrl } from '../kernel/logger.js'

/** What the request log and the metrics record for a caller that left (nginx's 499). */
const CALLER_GONE_STATUS = 499

declare module 'fastify' {
  interface FastifyRequest {
    /** The request's server span while it is recorded (null when tracing is off or it was not sampled). */
    serverSpan: Span | null
  }
  interface FastifyContextConfig {
    /** false: this route is not traced (health checks, scrapes). */
    otel?: boolean
  }
}

/** Adds the hooks; call before any other onRequest hook, so that everything after runs inside the span. */
export function traceRequests (app: FastifyInstance, tracer: Tracer): void {
  app.decorateRequest('serverSpan', null)
  // Callback-style: no promise per request on the hot path.
  app.addHook('onRequest', (request, _reply, done) => {
    // W3C trace context from the caller, parsed only when it sent one.
    const parent = request.headers.traceparent === undefined ? ROOT_CONTEXT : propagation.extract(ROOT_CONTEXT, request.headers)
    // Named after the method until it is known to be recorded: an unsampled request reads nothing more (Fastify builds routeOptions on each read).
    const span = tracer.startSpan(request.method, { kind: SpanKind.SERVER }, parent)
    if (!span.isRecording()) { done(); return }
    const route = request.routeOptions
    // Health checks and scrapes: a span that is never ended is never exported.
    if (route.config.otel === false) { done(); return }
    if (route.url !== undefined) span.updateName(`${request.method} ${route.url}`)
    describe(span, request, route.url)
    request.serverSpan = span
    const { traceId, spanId } = span.spanContext()
    // The request's own logger (Fastify makes one per request): added to in place, since a child logger per request cost 8% of a traced cache hit.
    ;(request.log as unknown as Logger).setBindings({ trace_id: traceId, span_id: spanId })
    context.with(trace.setSpan(parent, span), done)
  })
  app.addHook('onResponse', (request, reply, done) => {
    const span = request.serverSpan
    if (span !== null) {
      request.serverSpan = null
      endServerSpan(span, reply.statusCode, request)
    }
    done()
  })
  app.addHook('onRequestAbort', (request, done) => {
    const span = request.serverSpan
    if (span !== null) {
      request.serverSpan = null
      span.setAttribute(ATTR_ERROR_TYPE, 'caller_gone')
      endServerSpan(span, CALLER_GONE_STATUS, request)
    }
    done()
  })
}

function describe (span: Span, request: FastifyRequest, route: string | undefined): void {
  // The query with any access_token masked, however its name is encoded.
  const url = loggableUrl(request.raw.url ?? '')
  const queryStart = url.indexOf('?')
  span.setAttribute(ATTR_HTTP_REQUEST_METHOD, request.method)
  span.setAttribute(ATTR_URL_SCHEME, 'http')
  span.setAttribute(ATTR_URL_PATH, queryStart === -1 ? url : url.slice(0, queryStart))
  if (queryStart !== -1) span.setAttribute(ATTR_URL_QUERY, url.slice(queryStart + 1))
  if (route !== undefined) span.setAttribute(ATTR_HTTP_ROUTE, route)
  span.setAttribute(ATTR_CLIENT_ADDRESS, request.ip)
  const agent = request.headers['user-agent']
  if (agent !== undefined) span.setAttribute(ATTR_USER_AGENT_ORIGINAL, agent)
}

function endServerSpan (span: Span, statusCode: number, request: FastifyRequest): void {
  span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, statusCode)
  if (request.reportApi !== null) span.setAttribute('cmu_proxy.api', request.reportApi)
  // How the cache answered, and why a stale copy stood in (its Cache-Status).
  if (request.cacheResult !== null) span.setAttribute('cmu_proxy.cache.result', request.cacheResult.toLowerCase())
  if (request.cacheStatus !== null) span.setAttribute('cmu_proxy.cache.status', request.cacheStatus)
  // Semantic conventions: a server span is an error for a 5xx only; a 4xx is the caller's, not ours.
  if (statusCode >= 500) {
    const type = request.problemCode ?? String(statusCode)
    span.setAttribute(ATTR_ERROR_TYPE, type)
    span.setStatus({ code: SpanStatusCode.ERROR, message: type })
  }
  span.end()
}
