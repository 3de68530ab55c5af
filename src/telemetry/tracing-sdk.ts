// The OpenTelemetry SDK side of tracing.ts, imported only when tracing is
// on: the tracer provider and its OTLP/HTTP exporter (JSON or protobuf, as
// OTEL_EXPORTER_OTLP_PROTOCOL says), configured from the tracing settings,
// and the server span of each request (server-spans.ts).
import type { Tracer } from '@opentelemetry/api'
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { OTLPTraceExporter as ProtobufExporter } from '@opentelemetry/exporter-trace-otlp-proto'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { BatchSpanProcessor } from '@opentelemetry/sdk-trace'
import { AlwaysOffSampler, AlwaysOnSampler, NodeTracerProvider, ParentBasedSampler, TraceIdRatioBasedSampler, type Sampler } from '@opentelemetry/sdk-trace-node'
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions'
import type { FastifyInstance } from 'fastify'
import type { TracingSettings } from '../config/settings.js'
import { ChildOnlyTracer } from './child-only-tracer.js'
import { traceRequests } from './server-spans.js'
import { SpanDrops, type DropReason } from './span-drops.js'
import { UpstreamSpans, type AttemptSpans } from './upstream-spans.js'
import { VERSION } from '../kernel/version.js'

export interface Tracing {
  tracer: Tracer
  /** Call before any other onRequest hook: the server span of every request. */
  instrument: (app: FastifyInstance) => void
  /** One client span per attempt at Adobe (with traceparent only when TRACE_PROPAGATE_TO_ADOBE is on). */
  upstreamSpans: (origin: string) => AttemptSpans
  /** Spans that never reached the collector, by reason (read by the metrics at scrape time). */
  readonly spansDropped: Readonly<Record<DropReason, number>>
  /** Flushes what is queued and stops exporting. */
  shutdown: () => Promise<void>
}

let globalsRegistered = false
/** The longest shutdown waits for queued spans to reach the collector. */
const SHUTDOWN_FLUSH_MS = 1_000
/** The SDK's default batch; never above the queue, which the SDK would otherwise correct with a warning. */
const EXPORT_BATCH_SIZE = 512
/**
 * Callers choose the path, query and User-Agent (up to Node's 16 KB of
 * headers each): a queue of spans carrying them must not cost megabytes.
 */
const ATTRIBUTE_VALUE_MAX_LENGTH = 4_096

/** Resolves when `work` settles or after `ms`, whichever comes first; never rejects (losing the last spans is acceptable). */
async function withinDeadline (work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([work.catch(() => {}), new Promise<void>((resolve) => { timer = setTimeout(resolve, ms) })])
  clearTimeout(timer)
}

export function createTracing (settings: TracingSettings): Tracing {
  const drops = new SpanDrops()
  const exporterOptions = { url: settings.tracesUrl, headers: { ...settings.headers } }
  const exporter = settings.protocol === 'http/protobuf' ? new ProtobufExporter(exporterOptions) : new JsonExporter(exporterOptions)
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ ...settings.resourceAttributes, [ATTR_SERVICE_NAME]: settings.serviceName, [ATTR_SERVICE_VERSION]: VERSION }),
    sampler: sampler(settings.sampler),
    spanLimits: { attributeValueLengthLimit: ATTRIBUTE_VALUE_MAX_LENGTH },
    // The processor without the OTEL_BSP_* fallbacks of sdk-trace-base's: config/ reads the environment.
    spanProcessors: [new BatchSpanProcessor({
      exporter,
      maxQueueSize: settings.maxQueueSize,
      maxExportBatchSize: Math.min(EXPORT_BATCH_SIZE, settings.maxQueueSize),
      selfObsMeterProvider: drops
    })]
  })
  // The context manager (AsyncLocalStorage) and the W3C propagator are process-wide; the provider stays ours.
  if (!globalsRegistered) {
    provider.register()
    globalsRegistered = true
  }
  // The server span may begin a trace (or continue the caller's); every other span is a child (child-only-tracer.ts).
  const sdkTracer = provider.getTracer('cmu-proxy', VERSION)
  const tracer = new ChildOnlyTracer(sdkTracer)
  return {
    tracer,
    instrument: (app) => { traceRequests(app, sdkTracer) },
    upstreamSpans: (origin) => new UpstreamSpans(tracer, settings.propagateToAdobe, origin),
    spansDropped: drops.counts,
    // Bounded: a collector that is down or silent must not eat the shutdown grace period.
    shutdown: async () => { await withinDeadline(provider.shutdown(), SHUTDOWN_FLUSH_MS) }
  }
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
