// The OpenTelemetry SDK side of tracing.ts, imported only when tracing is
// on: the tracer provider and its OTLP/HTTP exporter, configured from the
// tracing settings, and @fastify/otel for the server span.
import { FastifyOtelInstrumentation } from '@fastify/otel'
import type { Span, Tracer } from '@opentelemetry/api'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { AlwaysOffSampler, AlwaysOnSampler, BatchSpanProcessor, NodeTracerProvider, ParentBasedSampler, TraceIdRatioBasedSampler, type Sampler } from '@opentelemetry/sdk-trace-node'
import { ATTR_CLIENT_ADDRESS, ATTR_HTTP_ROUTE, ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION, ATTR_URL_PATH, ATTR_URL_QUERY, ATTR_URL_SCHEME, ATTR_USER_AGENT_ORIGINAL } from '@opentelemetry/semantic-conventions'
import type { FastifyPluginCallback, FastifyRequest } from 'fastify'
import type { TracingSettings } from '../config/settings.js'
import { loggableUrl } from '../kernel/logger.js'
import { UpstreamSpans, type AttemptSpans } from './upstream-spans.js'
import { VERSION } from '../kernel/version.js'

export interface Tracing {
  tracer: Tracer
  /** Register before any route: creates the server span of every request. */
  plugin: FastifyPluginCallback
  /** One client span per attempt at Adobe (with traceparent only when TRACE_PROPAGATE_TO_ADOBE is on). */
  upstreamSpans: (origin: string) => AttemptSpans
  /** Flushes what is queued and stops exporting. */
  shutdown: () => Promise<void>
}

let globalsRegistered = false
/** The longest shutdown waits for queued spans to reach the collector. */
const SHUTDOWN_FLUSH_MS = 1_000

/** Resolves when `work` settles or after `ms`, whichever comes first; never rejects (losing the last spans is acceptable). */
async function withinDeadline (work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([work.catch(() => {}), new Promise<void>((resolve) => { timer = setTimeout(resolve, ms) })])
  clearTimeout(timer)
}

export function createTracing (settings: TracingSettings): Tracing {
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ ...settings.resourceAttributes, [ATTR_SERVICE_NAME]: settings.serviceName, [ATTR_SERVICE_VERSION]: VERSION }),
    sampler: sampler(settings.sampler),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: settings.tracesUrl, headers: { ...settings.headers } }))]
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
    plugin: instrumentation.plugin(),
    upstreamSpans: (origin) => new UpstreamSpans(tracer, settings.propagateToAdobe, origin),
    // Bounded: a collector that is down or silent must not eat the shutdown grace period.
    shutdown: async () => { await withinDeadline(provider.shutdown(), SHUTDOWN_FLUSH_MS) }
  }
}

function describeServerSpan (span: Span, request: FastifyRequest): void {
  const url = loggableUrl(request.raw.url ?? '')
  const queryStart = url.indexOf('?')
  span.updateName(`${request.method} ${request.routeOptions.url ?? ''}`.trim())
  span.setAttribute(ATTR_URL_SCHEME, 'http')
  span.setAttribute(ATTR_URL_PATH, queryStart === -1 ? url : url.slice(0, queryStart))
  if (queryStart !== -1) span.setAttribute(ATTR_URL_QUERY, url.slice(queryStart + 1))
  if (request.routeOptions.url !== undefined) span.setAttribute(ATTR_HTTP_ROUTE, request.routeOptions.url)
  span.setAttribute(ATTR_CLIENT_ADDRESS, request.ip)
  const agent = request.headers['user-agent']
  if (agent !== undefined) span.setAttribute(ATTR_USER_AGENT_ORIGINAL, agent)
}

/** OTEL_TRACES_SAMPLER (+ _ARG) as the OTel SDK reads them. */
function sampler ({ name, ratio }: TracingSettings['sampler']): Sampler {
  switch (name) {
    case 'always_on': return new AlwaysOnSampler()
    case 'always_off': return new AlwaysOffSampler()
    case 'traceidratio': return new TraceIdRatioBasedSampler(ratio)
    case 'parentbased_always_off': return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case 'parentbased_traceidratio': return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) })
    case 'parentbased_always_on': return new ParentBasedSampler({ root: new AlwaysOnSampler() })
  }
}
