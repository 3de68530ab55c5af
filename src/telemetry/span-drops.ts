// Spans that never reached the collector, counted from the batch span
// processor's own self-observability metric (otel.sdk.processor.span.processed,
// https://opentelemetry.io/docs/specs/semconv/otel/sdk-metrics/): it reports
// each span it handled, with error.type "queue_full" for one dropped because
// OTEL_BSP_MAX_QUEUE_SIZE were waiting, and the error's name for a failed
// export. Read here rather than by reaching into the processor's fields, and
// without an OpenTelemetry metrics SDK: the proxy's metrics are Prometheus's.
import { createNoopMeter, type Counter, type Meter, type MeterProvider, type MetricAttributes } from '@opentelemetry/api'

export type DropReason = 'queue_full' | 'export_failed'

export class SpanDrops implements MeterProvider {
  readonly counts: Record<DropReason, number> = { queue_full: 0, export_failed: 0 }
  readonly #meter: Meter

  constructor () {
    const counts = this.counts
    const processed: Counter = {
      add (value: number, attributes?: MetricAttributes): void {
        const type = attributes?.['error.type']
        if (type === undefined) return
        counts[type === 'queue_full' ? 'queue_full' : 'export_failed'] += value
      }
    }
    // Every other instrument the processor asks for (queue size, capacity) does nothing.
    this.#meter = Object.assign(Object.create(createNoopMeter()) as Meter, { createCounter: () => processed })
  }

  getMeter (): Meter {
    return this.#meter
  }
}
