// The tracer the proxy's modules get when tracing is on. Only a span started
// as a root (`root: true`: a token refresh, a background cache refresh) may
// begin a trace; any other span is recorded only under a recorded parent.
// That lets a request whose server span was not sampled skip the context
// switch altogether (server-spans.ts): on Node 20, the first
// AsyncLocalStorage.run() turns on async hooks for every promise of the
// process, which alone costs about a tenth of a cache hit (bench/README.md).
// Its spans then find no active parent and cost nothing, as sampling meant.
import { context, INVALID_SPAN_CONTEXT, trace, type Context, type Span, type SpanOptions, type Tracer } from '@opentelemetry/api'

/** One shared span for everything that is not recorded: its methods do nothing. */
const NOT_RECORDED = trace.wrapSpanContext(INVALID_SPAN_CONTEXT)

export class ChildOnlyTracer implements Tracer {
  readonly #tracer: Tracer

  constructor (tracer: Tracer) {
    this.#tracer = tracer
  }

  startSpan (name: string, options: SpanOptions = {}, ctx: Context = context.active()): Span {
    if (options.root !== true && trace.getSpan(ctx) === undefined) return NOT_RECORDED
    return this.#tracer.startSpan(name, options, ctx)
  }

  startActiveSpan<F extends (span: Span) => unknown>(name: string, fn: F): ReturnType<F>
  startActiveSpan<F extends (span: Span) => unknown>(name: string, options: SpanOptions, fn: F): ReturnType<F>
  startActiveSpan<F extends (span: Span) => unknown>(name: string, options: SpanOptions, ctx: Context, fn: F): ReturnType<F>
  startActiveSpan<F extends (span: Span) => unknown> (name: string, ...rest: [F] | [SpanOptions, F] | [SpanOptions, Context, F]): ReturnType<F> {
    const fn = rest[rest.length - 1] as F
    const options = rest.length > 1 ? rest[0] as SpanOptions : {}
    const ctx = rest.length > 2 ? rest[1] as Context : context.active()
    const span = this.startSpan(name, options, ctx)
    // A span nobody records is not made the active one: no context switch.
    if (!span.isRecording()) return fn(span) as ReturnType<F>
    return context.with(trace.setSpan(ctx, span), fn as (span: Span) => ReturnType<F>, undefined, span)
  }
}
