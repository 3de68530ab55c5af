// The tracing section, from the standard OTEL_* variables as the OTel SDK
// reads them (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/),
// read like every other setting so an env file works too. telemetry/ gets
// the decided values: on or off, one URL, parsed header and attribute lists,
// one sampler.
import { parseKeyValueList } from './key-value-list.js'
import { problemOf, type ProblemList } from './problems.js'
import type { Config } from './schema.js'

export type SamplerName = NonNullable<Config['OTEL_TRACES_SAMPLER']>

/** OpenTelemetry traces exported over OTLP/HTTP (telemetry/tracing-sdk.ts). */
export interface TracingSettings {
  /** OTEL_SERVICE_NAME */
  readonly serviceName: string
  /** OTEL_RESOURCE_ATTRIBUTES, decoded. */
  readonly resourceAttributes: Readonly<Record<string, string>>
  /** OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces. */
  readonly tracesUrl: string
  /** OTEL_EXPORTER_OTLP_TRACES_HEADERS, else OTEL_EXPORTER_OTLP_HEADERS, decoded (may hold secrets). */
  readonly headers: Readonly<Record<string, string>>
  /** OTEL_TRACES_SAMPLER (default parentbased_always_on) and its ratio (OTEL_TRACES_SAMPLER_ARG, default 1). */
  readonly sampler: { readonly name: SamplerName, readonly ratio: number }
  /** TRACE_PROPAGATE_TO_ADOBE: send traceparent on to Adobe (a third party). */
  readonly propagateToAdobe: boolean
  /** OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL: what goes over OTLP/HTTP (by default protobuf, which every OTLP receiver must accept; JSON is optional). */
  readonly protocol: 'http/json' | 'http/protobuf'
  /** OTEL_BSP_MAX_QUEUE_SIZE: spans queued for export; beyond it they are dropped and counted. */
  readonly maxQueueSize: number
}

const LISTS = ['OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS', 'OTEL_RESOURCE_ATTRIBUTES'] as const
type ListVariable = typeof LISTS[number]

/** Undefined when tracing is off: no OTLP endpoint and no OTEL_TRACES_EXPORTER=otlp, or OTEL_SDK_DISABLED, or exporter none. */
export function tracingSettings (config: Config, problems: ProblemList): TracingSettings | undefined {
  // Checked even with tracing off, so a bad list is found before someone turns tracing on.
  const lists = {} as Record<ListVariable, Record<string, string>>
  for (const name of LISTS) {
    const parsed = parseKeyValueList(config[name])
    // Values may be secrets: never echoed.
    problems.check([name], () => parsed === undefined ? problemOf(name, 'must be key=value pairs separated by commas, with percent-encoded values') : undefined)
    lists[name] = parsed ?? {}
  }
  if (!tracingEnabled(config)) return undefined
  return {
    serviceName: config.OTEL_SERVICE_NAME,
    resourceAttributes: lists.OTEL_RESOURCE_ATTRIBUTES,
    tracesUrl: tracesUrl(config),
    headers: config.OTEL_EXPORTER_OTLP_TRACES_HEADERS === undefined ? lists.OTEL_EXPORTER_OTLP_HEADERS : lists.OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    // The schema's pattern admits only numbers from 0 to 1.
    sampler: { name: config.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on', ratio: config.OTEL_TRACES_SAMPLER_ARG === undefined ? 1 : Number(config.OTEL_TRACES_SAMPLER_ARG) },
    propagateToAdobe: config.TRACE_PROPAGATE_TO_ADOBE,
    protocol: config.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? config.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf',
    maxQueueSize: config.OTEL_BSP_MAX_QUEUE_SIZE
  }
}

function tracingEnabled (config: Config): boolean {
  if (config.OTEL_SDK_DISABLED || config.OTEL_TRACES_EXPORTER === 'none') return false
  return config.OTEL_TRACES_EXPORTER === 'otlp' || config.OTEL_EXPORTER_OTLP_ENDPOINT !== undefined || config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined
}

function tracesUrl (config: Config): string {
  if (config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined) return config.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  const base = config.OTEL_EXPORTER_OTLP_ENDPOINT ?? 'http://localhost:4318'
  return `${base.replace(/\/+$/, '')}/v1/traces`
}
