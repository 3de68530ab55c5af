// An OTLP/HTTP traces receiver on loopback for the tracing tests: it records
// what the proxy exports and answers as a collector would (or as a failing
// one, or one that holds its answers until released).
import type { Test } from 'tap'
import type { Sandbox } from '../../src/sandbox/server.js'
import { json, startProxy, startSandbox, startScriptedServer, type RunningProxy, type ScriptedRequest } from './app.js'

export interface OtlpSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  startTimeUnixNano: string
  endTimeUnixNano: string
  status?: { code?: number, message?: string }
  attributes: Array<{ key: string, value: Record<string, unknown> }>
}

export interface OtlpReceiver {
  url: string
  requests: ScriptedRequest[]
  bodies: () => string[]
  /** The spans of every JSON export so far. */
  spans: () => OtlpSpan[]
  /** Answers every held export (with `hold`). */
  release: () => void
}

export interface ReceiverOptions {
  /** Answer with this status (400: the collector refuses the export). */
  status?: number
  /** Hold each answer until release(): exports stay in flight. */
  hold?: boolean
}

export async function startReceiver (t: Test, options: ReceiverOptions = {}): Promise<OtlpReceiver> {
  const held: Array<() => void> = []
  let holding = options.hold === true
  const server = await startScriptedServer(t, (_req, res) => {
    const answer = (): void => { json(res, options.status ?? 200, {}) }
    if (holding) held.push(answer)
    else answer()
  })
  const release = (): void => {
    holding = false
    for (const answer of held.splice(0)) answer()
  }
  t.teardown(release)
  const spans = (): OtlpSpan[] => server.requests.filter((r) => r.headers['content-type'] === 'application/json').flatMap((r) => {
    const payload = JSON.parse(r.body) as { resourceSpans: Array<{ scopeSpans: Array<{ spans: OtlpSpan[] }> }> }
    return payload.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans))
  })
  return { url: server.url, requests: server.requests, bodies: () => server.requests.map((r) => r.body), spans, release }
}

/** The settings that export to `receiver` as OTLP/JSON, which the tests read (the proxy sends protobuf by default). */
export function jsonExport (receiver: Pick<OtlpReceiver, 'url'>): Record<string, string> {
  return { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }
}

/** The value of a span attribute, whatever its OTLP type. */
export function attribute (span: OtlpSpan | undefined, key: string): unknown {
  const value = span?.attributes.find((a) => a.key === key)?.value
  return value === undefined ? undefined : Object.values(value)[0]
}

/** The sandbox, a receiver and a proxy that exports its spans there. */
export async function tracedProxy (t: Test, env: Record<string, string> = {}): Promise<{ proxy: RunningProxy, receiver: OtlpReceiver, sandbox: Sandbox }> {
  const receiver = await startReceiver(t)
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ...jsonExport(receiver), OTEL_SERVICE_NAME: 'cmu-proxy-test', ...env } })
  return { proxy, receiver, sandbox }
}
