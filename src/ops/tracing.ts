// OpenTelemetry traces, on when the standard OTEL_* variables say so (read by
// config.ts like every other setting, so an env file works too): the server
// span from @fastify/otel, the proxy's own spans (token wait, cache,
// coalescing, each upstream attempt, background refreshes) and OTLP/HTTP
// export. When tracing is off nothing here is created and the request path
// only ever tests `tracer === undefined`.
import { context, propagation, trace, type Span, type Tracer } from '@opentelemetry/api'
import { FastifyOtelInstrumentation } from '@fastify/otel'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { AlwaysOffSampler, AlwaysOnSampler, BatchSpanProcessor, NodeTracerProvider, ParentBasedSampler, TraceIdRatioBasedSampler, type Sampler } from '@opentelemetry/sdk-trace-node'
import { ATTR_CLIENT_ADDRESS, ATTR_ERROR_TYPE, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_HTTP_ROUTE, ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION, ATTR_URL_PATH, ATTR_URL_QUERY, ATTR_USER_AGENT_ORIGINAL } from '@opentelemetry/semantic-conventions'
import type { FastifyPluginCallback, FastifyRequest } from 'fastify'
import type { Config } from '../config.js'
import { loggableUrl } from '../logger.js'
import { VERSION } from '../version.js'

export interface Tracing {
  tracer: Tracer
  /** TRACE_PROPAGATE_TO_ADOBE: send traceparent on to Adobe (a third party: off by default). */
  propagateToAdobe: boolean
  /** Register before any route: creates the server span of every request. */
  plugin: FastifyPluginCallback
  /** Flushes what is queued and stops exporting. */
  shutdown: () => Promise<void>
}

/** The trace and span ids of the request's server span, for its log line. */
export function traceIds (request: FastifyRequest): { trace_id: string, span_id: string } | undefined {
  const span = request.opentelemetry().span
  if (span === undefined || span === null) return undefined
  const { traceId, spanId } = span.spanContext()
  return { trace_id: traceId, span_id: spanId }
}

/** The server span of a request whose caller left: Fastify's onResponse, where it would end, never runs. */
export function endAbandonedSpan (request: FastifyRequest, statusCode: number): void {
  const span = request.opentelemetry().span
  if (span === undefined || span === null || !span.isRecording()) return
  span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, statusCode)
  span.setAttribute(ATTR_ERROR_TYPE, 'caller_gone')
  span.end()
}

/** Whether the configuration turns tracing on: an OTLP endpoint, or OTEL_TRACES_EXPORTER=otlp; never with none or OTEL_SDK_DISABLED. */
export function tracingEnabled (config: Config): boolean {
  if (config.OTEL_SDK_DISABLED || config.OTEL_TRACES_EXPORTER === 'none') return false
  return config.OTEL_TRACES_EXPORTER === 'otlp' || config.OTEL_EXPORTER_OTLP_ENDPOINT !== undefined || config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined
}

let globalsRegistered = false

export function startTracing (config: Config): Tracing | undefined {
  if (!tracingEnabled(config)) return undefined
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ ...resourceAttributes(config.OTEL_RESOURCE_ATTRIBUTES), [ATTR_SERVICE_NAME]: config.OTEL_SERVICE_NAME, [ATTR_SERVICE_VERSION]: VERSION }),
    sampler: sampler(config.OTEL_TRACES_SAMPLER, config.OTEL_TRACES_SAMPLER_ARG),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: tracesUrl(config), headers: otlpHeaders(config.OTEL_EXPORTER_OTLP_TRACES_HEADERS ?? config.OTEL_EXPORTER_OTLP_HEADERS) }))]
  })
  // The context manager (AsyncLocalStorage) and the W3C propagator are process-wide; the provider stays ours.
  if (!globalsRegistered) {
    provider.register()
    globalsRegistered = true
  }
  const tracer = provider.getTracer('cmu-proxy', VERSION)
  const instrumentation = new FastifyOtelInstrumentation({
    // One server span per request, and the proxy's own spans under it: a span per Fastify hook
    // and one for the handler would only repeat the server span's timing.
    instrumentHooks: false,
    instrumentHandler: false,
    // Semantic conventions for the server span: "GET /cmu/*", the path without its query, the query with any access_token masked.
    requestHook: (span: Span, request: FastifyRequest) => { describeServerSpan(span, request) }
  })
  instrumentation.setTracerProvider(provider)
  return {
    tracer,
    propagateToAdobe: config.TRACE_PROPAGATE_TO_ADOBE,
    plugin: instrumentation.plugin(),
    shutdown: async () => { await provider.shutdown() }
  }
}

function describeServerSpan (span: Span, request: FastifyRequest): void {
  const url = loggableUrl(request.raw.url ?? '')
  const queryStart = url.indexOf('?')
  span.updateName(`${request.method} ${request.routeOptions.url ?? ''}`.trim())
  span.setAttribute(ATTR_URL_PATH, queryStart === -1 ? url : url.slice(0, queryStart))
  if (queryStart !== -1) span.setAttribute(ATTR_URL_QUERY, url.slice(queryStart + 1))
  if (request.routeOptions.url !== undefined) span.setAttribute(ATTR_HTTP_ROUTE, request.routeOptions.url)
  span.setAttribute(ATTR_CLIENT_ADDRESS, request.ip)
  const agent = request.headers['user-agent']
  if (agent !== undefined) span.setAttribute(ATTR_USER_AGENT_ORIGINAL, agent)
}

/**
 * Runs `work` inside a child span of the active one (or a new trace with
 * `root`), ending it with an error status when `work` throws. Without a
 * tracer it is just `work()`.
 */
export async function inSpan<T> (tracer: Tracer | undefined, name: string, attributes: Record<string, string | number | boolean>, work: (span: Span | undefined) => Promise<T>, root = false): Promise<T> {
  if (tracer === undefined) return await work(undefined)
  return await tracer.startActiveSpan(name, { attributes, root }, async (span) => {
    try {
      return await work(span)
    } catch (err) {
      span.setStatus({ code: 2, message: (err as { code?: string }).code ?? (err as Error).name })
      throw err
    } finally {
      span.end()
    }
  })
}

/** The traceparent (and tracestate) of the active span, as headers for the next hop. */
export function traceHeaders (): Record<string, string> {
  const carrier: Record<string, string> = {}
  propagation.inject(context.active(), carrier)
  return carrier
}

/** The active span, if any (to annotate it). */
export function activeSpan (): Span | undefined {
  return trace.getActiveSpan()
}

function tracesUrl (config: Config): string {
  if (config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined) return config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  const base = config.OTEL_EXPORTER_OTLP_ENDPOINT ?? 'http://localhost:4318'
  return `${base.replace(/\/+$/, '')}/v1/traces`
}

/** OTEL_EXPORTER_OTLP_HEADERS: comma-separated key=value pairs, values percent-encoded (OTel spec). */
export function otlpHeaders (text: string | undefined): Record<string, string> {
  const headers: Record<string, string> = {}
  for (const pair of (text ?? '').split(',')) {
    const equals = pair.indexOf('=')
    if (equals <= 0) continue
    headers[pair.slice(0, equals).trim()] = decodeURIComponent(pair.slice(equals + 1).trim())
  }
  return headers
}

function resourceAttributes (text: string | undefined): Record<string, string> {
  return otlpHeaders(text)
}

/** OTEL_TRACES_SAMPLER (+ _ARG) as the OTel SDK reads them; the default is parentbased_always_on. */
function sampler (name: string | undefined, arg: string | undefined): Sampler {
  const ratio = arg === undefined || Number.isNaN(Number(arg)) ? 1 : Math.min(1, Math.max(0, Number(arg)))
  switch (name) {
    case 'always_on': return new AlwaysOnSampler()
    case 'always_off': return new AlwaysOffSampler()
    case 'traceidratio': return new TraceIdRatioBasedSampler(ratio)
    case 'parentbased_always_off': return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case 'parentbased_traceidratio': return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) })
    default: return new ParentBasedSampler({ root: new AlwaysOnSampler() })
  }
}
