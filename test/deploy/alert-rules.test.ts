// The alert rules' unit tests (deploy/prometheus/alerts.test.yaml) run by
// promtool when it is installed (CI installs the Debian package prometheus),
// and, always, a check that they cover every rule: each fires in some test,
// and each stays quiet in the healthy runs with 6-hour and 5-minute tokens.
import { accessSync, constants, readFileSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { parse } from 'yaml'
import { runToEnd } from '../helpers/processes.js'

const RULES_DIR = fileURLToPath(new URL('../../deploy/prometheus/', import.meta.url))

interface RuleTest { eval_time: string, alertname: string, exp_alerts?: unknown[] }
interface TestGroup { name: string, interval: string, input_series: Array<{ series: string, values: string }>, alert_rule_test?: RuleTest[] }

const alerts = (parse(readFileSync(join(RULES_DIR, 'alerts.yaml'), 'utf8')) as { groups: Array<{ rules: Array<{ alert: string }> }> }).groups.flatMap((g) => g.rules.map((r) => r.alert))
const unitTests = parse(readFileSync(join(RULES_DIR, 'alerts.test.yaml'), 'utf8')) as { rule_files: string[], tests: TestGroup[] }

/** Whether `command` is an executable on PATH (promtool is optional outside CI). */
function onPath (command: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, command), constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

t.test('promtool: the rules are valid and their unit tests pass', async (t) => {
  if (!onPath('promtool')) {
    t.pass('promtool is not installed (Debian package prometheus): the coverage checks below stand in for it')
    return
  }
  const check = await runToEnd('promtool', ['check', 'rules', 'alerts.yaml'], { cwd: RULES_DIR, name: 'promtool check rules' })
  t.equal(check.code, 0, `promtool check rules: ${check.stdout}${check.stderr}`)
  const unit = await runToEnd('promtool', ['test', 'rules', 'alerts.test.yaml'], { cwd: RULES_DIR, name: 'promtool test rules' })
  t.equal(unit.code, 0, `promtool test rules:\n${unit.stdout}${unit.stderr}`)
  t.match(unit.stdout, /SUCCESS/)
})

t.test('every alert has a test that makes it fire', async (t) => {
  t.same(unitTests.rule_files, ['alerts.yaml'])
  t.ok(alerts.length >= 12, `${alerts.length} alerts`)
  const fired = new Set(unitTests.tests.flatMap((g) => (g.alert_rule_test ?? []).filter((r) => (r.exp_alerts ?? []).length > 0).map((r) => r.alertname)))
  for (const alert of alerts) t.ok(fired.has(alert), `${alert} fires in a test`)
})

t.test('healthy runs with 6-hour and with 5-minute tokens: every alert is checked quiet, more than once', async (t) => {
  for (const [lifetime, words] of [['21600', '6-hour'], ['300', '5-minute']] as const) {
    const group = unitTests.tests.find((g) => g.name.startsWith('healthy') && g.name.includes(words))
    t.ok(group !== undefined, `a healthy run with ${words} tokens`)
    const tokenLifetime = group?.input_series.find((s) => s.series.startsWith('cmu_proxy_token_lifetime_seconds'))
    t.match(tokenLifetime?.values, new RegExp(`^${lifetime}x\\d+$`), `its tokens last ${lifetime} s`)
    for (const alert of alerts) {
      const checks = (group?.alert_rule_test ?? []).filter((r) => r.alertname === alert)
      t.ok(checks.length >= 2 && checks.every((r) => (r.exp_alerts ?? []).length === 0), `${words}: ${alert} stays quiet at ${checks.map((r) => r.eval_time).join(', ')}`)
    }
  }
})
