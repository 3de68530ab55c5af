// One client span per attempt to reach Adobe, following the HTTP semantic
// conventions; a resend (after a dropped connection, or with a fresh token
// after a 401) carries http.request.resend_count. Loaded only when tracing is
// on (tracing-sdk.ts); traceparent goes to Adobe only when
// TRACE_PROPAGATE_TO_ADOBE says so, since Adobe is a third party.
import { context, SpanKind, SpanStatusCode, trace, type Span, type Tracer } from '@opentelemetry/api'
import { ATTR_ERROR_TYPE, ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_REQUEST_RESEND_COUNT, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT, ATTR_URL_FULL } from '@opentelemetry/semantic-conventions'

export interface Attempt {
  /** The request headers to send: the caller's, plus traceparent when propagating. */
  headers: Record<string, string>
  /** Ends the attempt with Adobe's status, or with the error that ended it. */
  finish: (status: number | undefined, error?: unknown) => void
}

export interface AttemptSpans {
  /**
   * The attempt's span, or undefined when it is not recorded (not sampled): the caller sends as if tracing were off.
   * `retried`: a resend after a dropped connection (the span counts resends itself, 401 retries included).
   */
  start: (path: string, headers: Record<string, string>, retried: boolean) => Attempt | undefined
}

export class UpstreamSpans implements AttemptSpans {
  readonly #tracer: Tracer
  readonly #propagate: boolean
  readonly #origin: URL
  readonly #port: number
  /** Attempts made so far under each parent span (the request's, or its coalesced fetch's): the next one's resend count. */
  readonly #attempts = new WeakMap<Span, number>()

  constructor (tracer: Tracer, propagate: boolean, origin: string) {
    this.#tracer = tracer
    this.#propagate = propagate
    this.#origin = new URL(origin)
    this.#port = Number(this.#origin.port !== '' ? this.#origin.port : (this.#origin.protocol === 'https:' ? 443 : 80))
  }

  start (path: string, headers: Record<string, string>): Attempt | undefined {
    const span = this.#tracer.startSpan('GET', {
      kind: SpanKind.CLIENT,
      attributes: {
        [ATTR_HTTP_REQUEST_METHOD]: 'GET',
        [ATTR_SERVER_ADDRESS]: this.#origin.hostname,
        [ATTR_SERVER_PORT]: this.#port,
        [ATTR_URL_FULL]: `${this.#origin.origin}${path}`
      }
    })
    // Not sampled: no span, and no traceparent either.
    if (!span.isRecording()) return undefined
    const parent = trace.getSpan(context.active())
    if (parent !== undefined) {
      // Semantic conventions: recorded on resends only, counting from 1.
      const resends = this.#attempts.get(parent) ?? 0
      if (resends > 0) span.setAttribute(ATTR_HTTP_REQUEST_RESEND_COUNT, resends)
      this.#attempts.set(parent, resends + 1)
    }
    let sent = headers
    if (this.#propagate) {
      // traceparent alone, built from this span: never the caller's tracestate or baggage (Adobe is a third party).
      const { traceId, spanId, traceFlags } = span.spanContext()
      sent = { ...headers, traceparent: `00-${traceId}-${spanId}-${traceFlags.toString(16).padStart(2, '0')}` }
    }
    return {
      headers: sent,
      finish: (status, error) => {
        if (status !== undefined) {
          span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status)
          // Semantic conventions: a client span with a 4xx or 5xx answer is an error.
          if (status >= 400) span.setStatus({ code: SpanStatusCode.ERROR })
        }
        if (error !== undefined) {
          const type = (error as { code?: string }).code ?? (error as Error).name ?? 'error'
          span.setAttribute(ATTR_ERROR_TYPE, type)
          span.setStatus({ code: SpanStatusCode.ERROR, message: type })
        }
        span.end()
      }
    }
  }
}
