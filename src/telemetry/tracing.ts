// OpenTelemetry traces, on when the standard OTEL_* variables say so (read by
// config/tracing-settings.ts like every other setting): the server span
// (server-spans.ts), the proxy's own spans (token wait, cache, coalescing,
// each upstream attempt, background refreshes) and OTLP/HTTP export. This
// module is the light side the request path imports; the SDK, the exporter
// and the server span (tracing-sdk.ts) are loaded only when tracing is on, so
// with it off they cost neither memory nor a single call: the request path
// only ever tests `tracer === undefined`.
import type { Span, Tracer } from '@opentelemetry/api'
import type { TracingSettings } from '../config/settings.js'
import type { Tracing } from './tracing-sdk.js'

export type { Tracing }

/** Undefined settings (tracing off) load nothing. */
export async function startTracing (settings: TracingSettings | undefined): Promise<Tracing | undefined> {
  if (settings === undefined) return undefined
  const { createTracing } = await import('./tracing-sdk.js')
  return createTracing(settings)
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
      span.setStatus({ code: SPAN_STATUS_ERROR, message: (err as { code?: string }).code ?? (err as Error).name })
      throw err
    } finally {
      span.end()
    }
  })
}

/** SpanStatusCode.ERROR, without loading @opentelemetry/api for it. */
const SPAN_STATUS_ERROR = 2
