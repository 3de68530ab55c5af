// Per-request counters and histograms kept as plain numbers and published to
// a prom-client registry at scrape time. prom-client validates and hashes the
// label set on every inc()/observe(); three of those per request cost about
// a tenth of the proxy's throughput in the benchmark (bench/README.md).
import type { Registry } from 'prom-client'

interface Sample { metricName: string, labels: Record<string, string | number>, value: number }

/** A prom-client-compatible metric: Registry.metrics() calls get() on scrape. */
abstract class ScrapedMetric {
  abstract readonly type: 'counter' | 'histogram'
  readonly aggregator = 'sum'
  constructor (readonly name: string, readonly help: string, registry: Registry) {
    registry.registerMetric(this as never)
  }

  async get (): Promise<{ name: string, help: string, type: string, values: Sample[], aggregator: string }> {
    return { name: this.name, help: this.help, type: this.type, values: this.samples(), aggregator: this.aggregator }
  }

  protected abstract samples (): Sample[]
}

interface CounterEntry { labels: Record<string, string>, value: number }

/**
 * A counter with up to three labels, keyed by a tree of Maps on the label
 * values: an increment allocates nothing once its label set has been seen.
 */
export class FastCounter<L extends string> extends ScrapedMetric {
  readonly type = 'counter'
  readonly #labelNames: readonly L[]
  readonly #tree = new Map<string, Map<string, Map<string, CounterEntry>>>()
  readonly #entries: CounterEntry[] = []

  constructor (name: string, help: string, labelNames: readonly L[], registry: Registry) {
    super(name, help, registry)
    if (labelNames.length > 3) throw new RangeError('FastCounter takes at most three labels')
    this.#labelNames = labelNames
  }

  /** The label values in the order of the label names. */
  inc (a: string, b = '', c = ''): void {
    let second = this.#tree.get(a)
    if (second === undefined) this.#tree.set(a, second = new Map())
    let third = second.get(b)
    if (third === undefined) second.set(b, third = new Map())
    const entry = third.get(c)
    if (entry !== undefined) {
      entry.value++
      return
    }
    const values = [a, b, c]
    const labels: Record<string, string> = {}
    this.#labelNames.forEach((name, i) => { labels[name] = values[i] ?? '' })
    const created = { labels, value: 1 }
    third.set(c, created)
    this.#entries.push(created)
  }

  protected samples (): Sample[] {
    return this.#entries.map(({ labels, value }) => ({ metricName: this.name, labels, value }))
  }
}

/** A histogram with one label, cumulative buckets as Prometheus expects. */
export class FastHistogram extends ScrapedMetric {
  readonly type = 'histogram'
  readonly #labelName: string
  readonly #bounds: readonly number[]
  readonly #series = new Map<string, { buckets: Float64Array, sum: number, count: number }>()

  constructor (name: string, help: string, labelName: string, bounds: readonly number[], registry: Registry) {
    super(name, help, registry)
    this.#labelName = labelName
    this.#bounds = bounds
  }

  observe (labelValue: string, value: number): void {
    let series = this.#series.get(labelValue)
    if (series === undefined) {
      series = { buckets: new Float64Array(this.#bounds.length), sum: 0, count: 0 }
      this.#series.set(labelValue, series)
    }
    series.sum += value
    series.count++
    // A plain loop: no closure per observation on the request path.
    const bounds = this.#bounds
    for (let i = 0; i < bounds.length; i++) {
      if (value <= (bounds[i] ?? Infinity)) {
        series.buckets[i] = (series.buckets[i] ?? 0) + 1
        return
      }
    }
  }

  protected samples (): Sample[] {
    const samples: Sample[] = []
    for (const [labelValue, { buckets, sum, count }] of this.#series) {
      let cumulative = 0
      this.#bounds.forEach((bound, i) => {
        cumulative += buckets[i] ?? 0
        samples.push({ metricName: `${this.name}_bucket`, labels: { le: bound, [this.#labelName]: labelValue }, value: cumulative })
      })
      samples.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', [this.#labelName]: labelValue }, value: count })
      samples.push({ metricName: `${this.name}_sum`, labels: { [this.#labelName]: labelValue }, value: sum })
      samples.push({ metricName: `${this.name}_count`, labels: { [this.#labelName]: labelValue }, value: count })
    }
    return samples
  }
}
