// The observability pack: the Grafana dashboard imports cleanly, the alert
// rules are valid, and every metric either of them names is one the proxy
// really exports (read from the files, checked against /metrics after traffic
// in fleet mode, so no second list is kept by hand), and each panel shows its
// series in the unit their names say. The rules' own unit tests run in
// test/deploy/alert-rules.test.ts.
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { parse } from 'yaml'
import { call, startProxy, startSandbox, temporaryDirectory } from '../helpers/app.js'
import { jsonExport, startReceiver } from '../helpers/otlp-receiver.js'
import { startRedisServer } from '../helpers/redis-server.js'

const ROOT = join(fileURLToPath(import.meta.url), '../../..')
const DASHBOARD = join(ROOT, 'deploy/grafana/cmu-proxy.json')
const ALERTS = join(ROOT, 'deploy/prometheus/alerts.yaml')

interface Override { matcher: { id: string, options: string }, properties: Array<{ id: string, value: unknown }> }
interface FieldConfig { defaults: { unit?: string, mappings?: Array<{ type: string, options: Record<string, { text: string, color: string }> }>, thresholds?: { steps: Array<{ color: string, value: number | null }> } }, overrides: Override[] }
interface Panel { id: number, type: string, title: string, gridPos: { h: number, w: number, x: number, y: number }, datasource?: { uid: string }, targets?: Array<{ expr: string, refId: string, legendFormat?: string }>, fieldConfig?: FieldConfig }
interface Rule { alert: string, expr: string, for?: string, labels?: Record<string, string>, annotations?: Record<string, string> }

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { uid: string, title: string, schemaVersion: number, panels: Panel[], templating: { list: Array<{ name: string, type: string }> } }
const rules = (parse(readFileSync(ALERTS, 'utf8')) as { groups: Array<{ name: string, rules: Rule[] }> }).groups.flatMap((g) => g.rules)

/** Metric names in a PromQL expression: ours, and the process/runtime defaults prom-client exports. */
function metricNames (expr: string): string[] {
  return [...expr.matchAll(/\b((?:cmu_proxy|process|nodejs)_[a-z0-9_]+)\b/g)].map((m) => m[1] ?? '')
}

t.test('the dashboard imports cleanly: unique panel ids, grid positions, one datasource variable, PromQL targets', async (t) => {
  t.equal(dashboard.uid, 'cmu-proxy')
  t.ok(dashboard.schemaVersion >= 36, 'a current schema version')
  t.ok(dashboard.templating.list.some((v) => v.name === 'datasource' && v.type === 'datasource'), 'the datasource is chosen on import')
  const ids = dashboard.panels.map((p) => p.id)
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique')
  for (const panel of dashboard.panels) {
    const { x, y, w, h } = panel.gridPos
    t.ok(x >= 0 && w > 0 && x + w <= 24 && y >= 0 && h > 0, `${panel.title}: inside the 24-column grid`)
    if (panel.type === 'row') continue
    t.equal(panel.datasource?.uid, '${datasource}', `${panel.title}: uses the datasource variable`)
    t.ok((panel.targets ?? []).length > 0 && (panel.targets ?? []).every((target) => target.expr.trim() !== ''), `${panel.title}: has queries`)
  }
  const titles = dashboard.panels.map((p) => p.title.toLowerCase()).join(' | ')
  for (const topic of ['status class', 'problems by code', 'latency: proxy', 'latency: adobe', 'cache answers', 'cache memory', 'token time to expiry', 'token requests', 'registrations', 'in flight', 'shed', 'rate-limited', 'redis up', 'redis errors', 'memory', 'event-loop lag']) {
    t.ok(titles.includes(topic), `covers: ${topic}`)
  }
})

/** The units a series may be shown in, from what its query computes and its metric's name (Prometheus naming: unit suffixes). */
function unitsFor (expr: string): string[] {
  // `and on (…) (time() - process_start_time_seconds …)` only picks which series to show.
  const names = metricNames(expr.replace(/ and on \([^)]*\) \(time\(\) - process_start_time_seconds[^)]*\)/g, ''))
  const suffix = (name: string): string => /_(bytes|seconds|total|seconds_bucket)$/.exec(name)?.[1] ?? 'count'
  const kind = suffix(names[0] ?? '')
  if (!names.every((name) => suffix(name) === kind)) return [`one kind of metric per series: ${names.join(', ')}`]
  if (expr.includes('histogram_quantile(')) return kind === 'seconds_bucket' ? ['s'] : ['a quantile of seconds']
  const rated = /\b(?:rate|irate)\(/.test(expr)
  // A rate over a rate: a ratio (the hit ratio).
  if (rated && / \/ /.test(expr)) return ['percentunit']
  if (rated) return kind === 'total' ? ['reqps', 'ops', 'cps'] : ['a rate of a counter']
  if (expr.includes('increase(')) return kind === 'total' ? ['short', 'none'] : ['an increase of a counter']
  if (kind === 'bytes') return ['bytes', 'decbytes']
  if (kind === 'seconds') return ['s']
  return ['short', 'none']
}

t.test('each series is shown in the unit its metric says: bytes only on _bytes, seconds on _seconds, rates of _total as per-second, counts as counts', async (t) => {
  for (const panel of dashboard.panels) {
    for (const target of panel.targets ?? []) {
      const override = panel.fieldConfig?.overrides.find((o) => o.matcher.id === 'byFrameRefID' && o.matcher.options === target.refId)?.properties.find((p) => p.id === 'unit')?.value
      const unit = override ?? panel.fieldConfig?.defaults.unit
      const expected = unitsFor(target.expr)
      t.ok(typeof unit === 'string' && expected.includes(unit), `${panel.title} / ${target.legendFormat ?? target.refId}: ${String(unit)} (expected ${expected.join(' or ')})`)
    }
  }
})

t.test('the dashboard reads right: Redis down is red, the resident set has a scale without the heap limit', async (t) => {
  const redis = dashboard.panels.find((p) => p.title === 'Redis up')
  const mapping = redis?.fieldConfig?.defaults.mappings?.find((m) => m.type === 'value')?.options
  t.same([mapping?.['0']?.color, mapping?.['1']?.color], ['red', 'green'], '0 maps to red, 1 to green')
  t.equal(redis?.fieldConfig?.defaults.thresholds?.steps[0]?.color, 'red', 'below 1 is red')
  const rss = dashboard.panels.filter((p) => (p.targets ?? []).some((target) => target.expr.includes('process_resident_memory_bytes')))
  t.equal(rss.length, 1)
  const rssExprs = (rss[0]?.targets ?? []).map((target) => target.expr).join(' ')
  t.notOk(rssExprs.includes('cmu_proxy_heap_limit_bytes'), 'not on the heap limit\'s axis')
  t.ok(rssExprs.includes('cmu_proxy_memory_limit_bytes') && rssExprs.includes('cmu_proxy_cache_bytes'), 'against the container\'s limit, with the cache\'s bytes')
})

t.test('the alert rules are well formed, each with a summary and a runbook entry in docs/operations.md', async (t) => {
  const runbooks = readFileSync(join(ROOT, 'docs/operations.md'), 'utf8')
  for (const alert of ['CmuProxyDown', 'CmuProxyAbsent', 'CmuProxyTokenExpiringSoon', 'CmuProxyUpstreamErrors', 'CmuProxyAdobeSlow', 'CmuProxyServingStale', 'CmuProxyRedisDown', 'CmuProxyReregistered', 'CmuProxyMemoryNearLimit', 'CmuProxyHeapNearLimit', 'CmuProxyShedding', 'CmuProxyTraceSpansDropped']) {
    t.ok(rules.some((r) => r.alert === alert), `has ${alert}`)
  }
  for (const rule of rules) {
    t.match(rule.alert, /^[A-Z][A-Za-z0-9]+$/, 'an alert name')
    t.type(rule.expr, 'string')
    if (rule.for !== undefined) t.match(rule.for, /^\d+[smh]$/, `${rule.alert}: a duration`)
    t.ok((rule.annotations?.summary ?? '') !== '', `${rule.alert}: a summary`)
    // GitHub's anchor of the heading `### CmuProxy…` is the name in lower case.
    t.equal(rule.annotations?.runbook_url, `docs/operations.md#${rule.alert.toLowerCase()}`, `${rule.alert}: a runbook link`)
    t.match(runbooks, new RegExp(`^### ${rule.alert}$`, 'm'), `${rule.alert}: its runbook entry in docs/operations.md`)
    // An aggregation keeps only the labels it names: a summary may use no other.
    const kept = /^\s*(?:sum|min|max) by \(([^)]*)\)/.exec(rule.expr)?.[1]?.split(',').map((l) => l.trim())
    for (const [, label] of (rule.annotations?.summary ?? '').matchAll(/\$labels\.(\w+)/g)) {
      if (kept !== undefined) t.ok(kept.includes(label ?? ''), `${rule.alert}: the summary's $labels.${label} survives \`by (${kept.join(', ')})\``)
    }
  }
})

/** A container limited to 512 MiB, as /proc and /sys show it (cgroup v2, in its own namespace). */
function limitedContainer (t: Test): string {
  const root = temporaryDirectory(t)
  mkdirSync(join(root, 'proc/self'), { recursive: true })
  mkdirSync(join(root, 'sys/fs/cgroup'), { recursive: true })
  writeFileSync(join(root, 'proc/self/cgroup'), '0::/\n')
  writeFileSync(join(root, 'sys/fs/cgroup/cgroup.controllers'), 'cpu memory\n')
  writeFileSync(join(root, 'sys/fs/cgroup/memory.max'), `${512 * 1024 * 1024}\n`)
  return root
}

t.test('every metric the dashboard and the alerts name is exported on /metrics after some traffic (fleet mode, traced, in a limited container)', async (t) => {
  const redis = await startRedisServer(t)
  const sandbox = await startSandbox(t)
  const receiver = await startReceiver(t)
  const proxy = await startProxy(t, sandbox, {
    cgroupRoot: limitedContainer(t),
    env: { CACHE_ENABLED: 'true', REDIS_URL: redis.url, STATE_ENCRYPTION_KEY: randomBytes(32).toString('base64'), RATE_LIMIT: '1000/minute', CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0', ...jsonExport(receiver), UPSTREAM_HEADERS_TIMEOUT_MS: '20000' }
  })
  // A miss and a hit, an upstream retry, a problem answer.
  await call(proxy.url, '/readyz')
  await call(proxy.url, '/cmu/v2/year')
  await call(proxy.url, '/cmu/v2/year')
  sandbox.faults.failNext('cmu', 1, { drop: true })
  await call(proxy.url, '/cmu/v2/month')
  await call(proxy.url, '/nowhere')
  const samples = (await call(proxy.url, '/metrics')).text.split('\n').filter((l) => l !== '' && !l.startsWith('#'))
  const exported = new Set(samples.map((l) => l.split(/[{ ]/)[0] ?? ''))
  const value = (series: string): number => Number(samples.find((l) => l.startsWith(`${series} `))?.split(' ')[1])
  t.equal(value('cmu_proxy_memory_limit_bytes{source="cgroup_v2"}'), 512 * 1024 * 1024, 'the container\'s limit')
  t.equal(value('cmu_proxy_upstream_headers_timeout_seconds'), 20, 'UPSTREAM_HEADERS_TIMEOUT_MS, in seconds')
  t.equal(value('cmu_proxy_token_lifetime_seconds'), sandbox.dcr.tokenLifetimeSeconds, 'the lifetime Adobe gave the token')
  t.ok(value('cmu_proxy_token_expires_in_seconds') <= sandbox.dcr.tokenLifetimeSeconds, 'and its time left')

  const named = new Map<string, string>()
  for (const panel of dashboard.panels) for (const target of panel.targets ?? []) for (const name of metricNames(target.expr)) named.set(name, `dashboard: ${panel.title}`)
  for (const rule of rules) for (const name of metricNames(rule.expr)) named.set(name, `alert: ${rule.alert}`)
  t.ok(named.size > 20, `${named.size} metric names in the dashboard and the rules`)
  for (const [name, where] of named) t.ok(exported.has(name), `${name} (${where}) is exported`)
})
