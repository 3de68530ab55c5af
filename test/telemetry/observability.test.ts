// The observability pack: the Grafana dashboard imports cleanly, the alert
// rules are valid, and every metric either of them names is one the proxy
// really exports (read from the files, checked against /metrics after traffic
// in fleet mode, so no second list is kept by hand).
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { parse } from 'yaml'
import { call, startProxy, startSandbox } from '../helpers/app.js'
import { startRedisServer } from '../helpers/redis-server.js'

const ROOT = join(fileURLToPath(import.meta.url), '../../..')
const DASHBOARD = join(ROOT, 'deploy/grafana/cmu-proxy.json')
const ALERTS = join(ROOT, 'deploy/prometheus/alerts.yaml')

interface Panel { id: number, type: string, title: string, gridPos: { h: number, w: number, x: number, y: number }, datasource?: { uid: string }, targets?: Array<{ expr: string, refId: string }> }
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

t.test('the alert rules are valid Prometheus rules, each with a summary and a runbook entry in docs/operations.md', async (t) => {
  const runbooks = readFileSync(join(ROOT, 'docs/operations.md'), 'utf8')
  for (const alert of ['CmuProxyTokenExpiringSoon', 'CmuProxyUpstreamErrors', 'CmuProxyServingStale', 'CmuProxyRedisDown', 'CmuProxyReregistered', 'CmuProxyMemoryNearLimit']) {
    t.ok(rules.some((r) => r.alert === alert), `has ${alert}`)
  }
  for (const rule of rules) {
    t.match(rule.alert, /^[A-Z][A-Za-z0-9]+$/, 'an alert name')
    t.type(rule.expr, 'string')
    if (rule.for !== undefined) t.match(rule.for, /^\d+[smh]$/, `${rule.alert}: a duration`)
    t.ok((rule.annotations?.summary ?? '') !== '', `${rule.alert}: a summary`)
    // GitHub's anchor of the heading `### CmuProxy…` is the name in lower case.
    t.equal(rule.annotations?.runbook, `docs/operations.md#${rule.alert.toLowerCase()}`, `${rule.alert}: a runbook link`)
    t.match(runbooks, new RegExp(`^### ${rule.alert}$`, 'm'), `${rule.alert}: its runbook entry in docs/operations.md`)
  }
  const promtool = spawnSync('promtool', ['check', 'rules', ALERTS], { encoding: 'utf8' })
  if (promtool.error === undefined) {
    t.equal(promtool.status, 0, `promtool check rules: ${promtool.stdout.trim()} ${promtool.stderr.trim()}`)
  } else {
    t.pass('promtool is not installed (Debian package prometheus): the structural checks above stand in for it')
  }
})

t.test('every metric the dashboard and the alerts name is exported on /metrics after some traffic (fleet mode)', async (t) => {
  const redis = await startRedisServer(t)
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, {
    env: { CACHE_ENABLED: 'true', REDIS_URL: redis.url, STATE_ENCRYPTION_KEY: randomBytes(32).toString('base64'), RATE_LIMIT: '1000/minute', CACHE_STALE_WHILE_REVALIDATE_SECONDS: '0' }
  })
  // A miss and a hit, an upstream retry, a problem answer.
  await call(proxy.url, '/readyz')
  await call(proxy.url, '/cmu/v2/year')
  await call(proxy.url, '/cmu/v2/year')
  sandbox.faults.failNext('cmu', 1, { drop: true })
  await call(proxy.url, '/cmu/v2/month')
  await call(proxy.url, '/nowhere')
  const exported = new Set((await call(proxy.url, '/metrics')).text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).map((l) => l.split(/[{ ]/)[0] ?? ''))

  const named = new Map<string, string>()
  for (const panel of dashboard.panels) for (const target of panel.targets ?? []) for (const name of metricNames(target.expr)) named.set(name, `dashboard: ${panel.title}`)
  for (const rule of rules) for (const name of metricNames(rule.expr)) named.set(name, `alert: ${rule.alert}`)
  t.ok(named.size > 20, `${named.size} metric names in the dashboard and the rules`)
  for (const [name, where] of named) t.ok(exported.has(name), `${name} (${where}) is exported`)
})
