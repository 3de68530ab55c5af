// The sandbox's ESM API (/esm/v3) against Adobe's ESM pages, over real HTTP:
// https://experienceleague.adobe.com/en/docs/pass/authentication/integration-guide-programmers/features-premium/esm/entitlement-service-monitoring-api
import t, { type Test } from 'tap'
import { ESM } from '../../src/sandbox/esm-catalog.js'
import type { Sandbox } from '../../src/sandbox/server.js'
import { call, startSandbox, type RawResponse } from '../helpers/app.js'
import { tokenFor } from './dcr-client.js'

const NOW = Date.parse('2026-11-27T10:30:00Z')
const RANGE = 'start=2026-11-01&end=2026-11-03'
/** The programmers' metrics every report carries (the overview's table, less the daily unique counts and `count`). */
const METRICS = [
  'authn-attempts', 'authn-successful', 'authn-pending', 'authn-failed', 'clientless-tokens', 'clientless-failures',
  'authz-attempts', 'authz-successful', 'authz-failed', 'authz-rejected', 'authz-latency', 'media-tokens'
]

interface Esm { sandbox: Sandbox, get: (path: string, headers?: Record<string, string>) => Promise<RawResponse> }

async function startEsm (t: Test, now: () => number = () => NOW): Promise<Esm> {
  const sandbox = await startSandbox(t, { now })
  const auth = { authorization: `Bearer ${await tokenFor(sandbox)}` }
  return { sandbox, get: async (path, headers = {}) => await call(sandbox.authUrl, path, { headers: { ...auth, ...headers } }) }
}

async function control (sandbox: Sandbox, method: string, path: string, body?: unknown): Promise<{ status: number, json: unknown }> {
  const response = await fetch(`${sandbox.authUrl}/_sandbox/${path}`, { method, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
  return { status: response.status, json: await response.json() }
}

t.test('/esm/v3/year.csv: CSV with ESM\'s metrics, the documented file name and a Last-Modified', async (t) => {
  const { get } = await startEsm(t)
  const csv = await get('/esm/v3/year.csv')
  t.equal(csv.status, 200)
  t.match(csv.headers['content-type'], /^text\/csv/)
  const [header, ...rows] = csv.text.trimEnd().split('\r\n')
  t.equal(header, ['year', ...METRICS].join(','))
  t.same(rows.map((row) => row.split(',')[0]), ['2024', '2025', '2026'], 'the default window of a yearly report')
  t.ok(rows.every((row) => row.split(',').slice(1).every((v) => /^\d+$/.test(v))), 'numbers')
  // Yearly data is recomputed every 2 days: as of midnight on the 27th.
  t.equal(csv.headers['last-modified'], 'Fri, 27 Nov 2026 00:00:00 GMT')
  t.equal(csv.headers['content-disposition'], 'attachment; filename="report__2024-01-01T00:00_2026-11-27T00:00_1000.csv"')
})

t.test('ESM\'s drill-down tree: pre-aggregated paths answer 200, others 404', async (t) => {
  const { get } = await startEsm(t)
  const cases: Array<[string, number]> = [
    ['/esm/v3', 200], ['/esm/v3/', 200], ['/esm/v3.json', 200], ['/esm/v3/year', 200], ['/esm/v3/year/month/day/hour/minute', 200],
    ['/esm/v3/media-company/year/month/day', 200], ['/esm/v3/mvpd/year/month', 200],
    ['/esm/v3/year/month/day/requestor-id', 200], ['/esm/v3/year/month/day/requestor-id/mvpd', 200],
    ['/esm/v3/year/month/day/hour/platform', 200], ['/esm/v3/mvpd/year/month/day/hour/minute/eap/cdt', 200],
    // Not in the tree: time out of order, other dimensions above day, a third level, repeats, CMU's dimensions.
    ['/esm/v3/month', 404], ['/esm/v3/year/day', 404], ['/esm/v3/platform', 404], ['/esm/v3/year/mvpd', 404],
    ['/esm/v3/mvpd/platform', 404], ['/esm/v3/mvpd/year/month/mvpd', 404], ['/esm/v3/year/month/day/mvpd/platform/eap', 404],
    ['/esm/v3/year/month/day/mvpd/mvpd', 404], ['/esm/v3/media-company/year/month/day/media-company', 404],
    ['/esm/v3/tenant', 404], ['/esm/v2/year', 404], ['/esm/v3/year.pdf', 404], ['/esm', 404], ['/cmu/v2/requestor-id', 404]
  ]
  for (const [path, status] of cases) t.equal((await get(`${path}${path.includes('?') ? '&' : '?'}${RANGE}`)).status, status, path)
})

t.test('what a filter may name (below) is exactly what the drill-down tree (next) reaches, from every path of the tree', async (t) => {
  const reachable = (path: string[]): Set<string> => {
    const found = new Set<string>()
    for (const dim of ESM.next(path)) {
      found.add(dim)
      for (const deeper of reachable([...path, dim])) found.add(deeper)
    }
    return found
  }
  let paths: string[][] = [[]]
  let checked = 0
  while (paths.length > 0 && checked < 2_000) {
    for (const path of paths.slice(0, 200)) {
      t.same(new Set(ESM.below(path)), reachable(path), `/${path.join('/')}`)
      checked++
    }
    paths = paths.flatMap((path) => ESM.next(path).map((dim) => [...path, dim]))
  }
  t.ok(checked > 500, `${checked} paths`)
})

t.test('links: /v3/... as in ESM\'s overview by default, /esm/v3/... after POST /_sandbox/links, in JSON and XML', async (t) => {
  const { sandbox, get } = await startEsm(t)
  const path = `/esm/v3/year/month?mvpd=DTV&${RANGE}&limit=3`
  const selfQuery = `mvpd=DTV&${RANGE}&limit=3&metrics=${METRICS.join(',')}`
  const forms: Array<[string, string]> = [['short', '/v3'], ['full', '/esm/v3']]
  for (const [form, base] of forms) {
    t.same(await control(sandbox, 'POST', 'links', { api: 'esm', form }), { status: 200, json: { api: 'esm', form } })
    t.same((await get(path)).json()._links, {
      self: { href: `${base}/year/month?${selfQuery}` },
      'roll-up': { href: `${base}/year` },
      'drill-down': [{ href: `${base}/year/month/day`, name: 'day' }]
    }, `${form} JSON`)
    const xml = (await get(path.replace('month?', 'month.xml?'))).text
    t.match(xml, `<resource href="${base}/year/month.xml?mvpd=DTV&amp;start=`, `${form} XML`)
    t.match(xml, `<link rel="roll-up" href="${base}/year"/><link rel="drill-down" href="${base}/year/month/day" name="day"/>`)
    t.match((await get(`/cmu/v2/year?${RANGE}`)).json()._links['roll-up'], { href: '/cmu/v2' }, 'CMU keeps its own form')
  }
  t.same(await control(sandbox, 'POST', 'links', { api: 'cmu', form: 'short' }), { status: 200, json: { api: 'cmu', form: 'short' } })
  t.same((await get(`/cmu/v2/year?${RANGE}`)).json()._links['roll-up'], { href: '/v2' }, 'either API, either form')
  t.same(await control(sandbox, 'DELETE', 'links'), { status: 200, json: { cmu: 'full', esm: 'short' } })
  t.same((await get('/esm/v3/year')).json()._links['roll-up'], { href: '/v3' }, 'back to the documented forms')
  for (const body of [{ api: 'esm', form: 'relative' }, { api: 'dcr', form: 'full' }, null, ['esm']]) {
    t.equal((await control(sandbox, 'POST', 'links', body)).status, 400, JSON.stringify(body))
  }
})

t.test('every link from /esm/v3, five levels deep, resolves under /esm', async (t) => {
  const { get } = await startEsm(t)
  let frontier = ['/v3']
  let visited = 0
  for (let depth = 0; depth < 5; depth++) {
    const next: string[] = []
    for (const href of frontier) {
      const response = await get(`/esm${href}?${RANGE}&limit=1`)
      visited++
      if (response.status !== 200) t.fail(`${href} answered ${response.status}`)
      const links = response.json()._links
      if (!String(links.self.href).startsWith(`${href}?`)) t.fail(`self of ${href} is ${links.self.href}`)
      if (links['roll-up'] !== undefined && (await get(`/esm${links['roll-up'].href}`)).status !== 200) t.fail(`roll-up of ${href}`)
      next.push(...(links['drill-down'] ?? []).map((d: { href: string }) => d.href))
    }
    frontier = next
  }
  t.ok(visited > 30, `walked ${visited} reports`)
  t.ok(frontier.includes('/v3/year/month/day/hour/minute') && frontier.includes('/v3/year/month/day/hour/eap'), 'time and other dimensions below hour')
})

t.test('formats: extension, then format=, then Accept; XML and HTML', async (t) => {
  const { get } = await startEsm(t)
  const cases: Array<[string, Record<string, string>, RegExp, RegExp]> = [
    ['/esm/v3/year/month.xml', { accept: 'text/csv' }, /^application\/xml/, /^<\?xml[^]*<record year="2026" month="11" authn-attempts="\d+"/],
    ['/esm/v3/year/month.json', { accept: 'text/csv' }, /^application\/json/, /^\{"_links"/],
    ['/esm/v3/year/month?format=xml', { accept: 'application/json' }, /^application\/xml/, /^<\?xml/],
    ['/esm/v3/year/month', { accept: 'application/xml' }, /^application\/xml/, /^<\?xml/],
    ['/esm/v3/year/month.html', {}, /^text\/html/, /<title>ESM report<\/title>[^]*<th>authz-latency<\/th>/],
    ['/esm/v3/year/month', {}, /^application\/json/, /^\{/]
  ]
  for (const [path, headers, type, body] of cases) {
    const response = await get(`${path}${path.includes('?') ? '&' : '?'}${RANGE}`, headers)
    t.equal(response.status, 200, `${path} ${JSON.stringify(headers)}`)
    t.match(response.headers['content-type'], type)
    t.match(response.text, body)
  }
  t.equal((await get('/esm/v3/year?format=pdf')).status, 406)
})

t.test('filters, projections and metrics as ESM documents them', async (t) => {
  const { get } = await startEsm(t)
  const report = async (path: string, query: string): Promise<Array<Record<string, string>>> => {
    const response = await get(`/esm/v3${path}?${RANGE}&${query}`)
    t.equal(response.status, 200, `${path}?${query}`)
    return response.json().report
  }
  t.same([...new Set((await report('/year/month/day/mvpd', 'mvpd=DTV&mvpd=Cox')).map((r) => r.mvpd))], ['DTV', 'Cox'], 'repeated = is IN')
  const notIn = await report('/year/month/day/mvpd', 'mvpd!=DTV&mvpd!=Cox')
  t.ok(notIn.length > 0 && notIn.every((r) => r.mvpd !== 'DTV' && r.mvpd !== 'Cox'), 'repeated != is NOT IN')
  // The page's example: no path /dimension1/dimension3, but /dimension1?dimension3 groups by both.
  t.same(Object.keys((await report('/year', 'platform&limit=1'))[0] ?? {}).slice(0, 2), ['year', 'platform'], 'a bare name below the path adds a column')
  const all = await report('/year/month/day', 'limit=1')
  const apple = await report('/year/month/day', 'eap=Apple&limit=1')
  t.ok(Number(apple[0]?.['authz-attempts']) < Number(all[0]?.['authz-attempts']), 'a filter on another dimension shrinks the numbers')
  t.same(Object.keys((await report('/year/month/day/mvpd', 'metrics=authn-attempts,authz-successful&limit=2'))[0] ?? {}),
    ['year', 'month', 'day', 'mvpd', 'authn-attempts', 'authz-successful'])
  t.same(Object.keys(all[0] ?? {}).slice(3), METRICS, 'the programmers\' metrics by default')
  // unique-accounts and unique-sessions: daily values, with the dc dimension only; count: event-oriented reports.
  t.same(Object.keys((await report('/year/month/day/dc', 'limit=1'))[0] ?? {}).slice(4), [...METRICS, 'unique-accounts', 'unique-sessions'])
  t.same(Object.keys((await report('/year/month/day/hour/dc', 'limit=1'))[0] ?? {}).slice(5), METRICS, 'not hourly')
  t.same(Object.keys((await report('/year/month/day/event', 'limit=1'))[0] ?? {}).slice(4), [...METRICS, 'count'])

  const bad: Array<[string, RegExp]> = [
    ['/esm/v3/year/month/day/mvpd/platform?eap=Apple', /^Dimension not available below this path: eap$/],
    ['/esm/v3/year?tenant=acme-tv', /^Unknown dimension: tenant$/],
    ['/esm/v3/year?hasOwnProperty', /^Unknown dimension: hasOwnProperty$/],
    ['/esm/v3/year/month/day?metrics=unique-accounts', /^Metric not available in this report: unique-accounts$/],
    ['/esm/v3/year?metrics=active-users', /^Unknown metric: active-users$/],
    ['/esm/v3/year?start=2026-13', /^Invalid date for start/],
    ['/esm/v3/year/month/day/hour/minute?start=2025&end=2026', /^Query too large/],
    ['/esm/v3/year/month/day?start=2026-01-01&end=2026-11-01&mvpd&platform&nsdk&cdt&eap&dc&device', /^Query too large/]
  ]
  for (const [path, message] of bad) {
    const response = await get(path)
    t.equal(response.status, 400, path)
    t.match(response.headers['content-type'], /^text\/plain/)
    t.match(response.text, message)
  }
})

t.test('Last-Modified is when the report was computed; If-Modified-Since gets 304 until the next computation', async (t) => {
  let now = Date.parse('2026-11-27T10:30:20Z')
  const { sandbox, get } = await startEsm(t, () => now)
  const path = '/esm/v3/year/month/day/hour/minute'
  const first = await get(path)
  t.equal(first.headers['last-modified'], 'Fri, 27 Nov 2026 10:30:00 GMT', 'by the minute: recomputed every minute')
  now += 30_000
  const again = await get(path)
  t.equal(again.headers['last-modified'], first.headers['last-modified'])
  t.equal(again.text, first.text, 'the same data until the next computation')
  const since = first.headers['last-modified'] ?? ''
  const notModified = await get(path, { 'if-modified-since': since })
  t.equal(notModified.status, 304)
  t.equal(notModified.body.length, 0)
  t.equal(notModified.headers['last-modified'], since)
  t.equal(sandbox.calls.esmNotModified, 1)
  t.equal((await call(sandbox.authUrl, path, { method: 'HEAD', headers: { ...(await authOf(sandbox)), 'if-modified-since': since } })).status, 304, 'HEAD too')
  t.equal((await get(path, { 'if-modified-since': 'Fri, 27 Nov 2026 10:29:59 GMT' })).status, 200, 'older than the data')
  now = Date.parse('2026-11-27T10:31:05Z')
  const recomputed = await get(path, { 'if-modified-since': since })
  t.equal(recomputed.status, 200, 'a new computation')
  t.equal(recomputed.headers['last-modified'], 'Fri, 27 Nov 2026 10:31:00 GMT')
  t.equal((await get('/esm/v3/year/month/day')).headers['last-modified'], 'Fri, 27 Nov 2026 09:00:00 GMT', 'daily data: every 3 hours')
  t.equal((await get('/cmu/v2/year/month/day')).headers['last-modified'], undefined, 'CMU sends none')
  sandbox.reportHeaders = { lastModified: 'Wed, 01 Jan 2025 00:00:00 GMT' }
  t.equal((await get(path)).headers['last-modified'], 'Wed, 01 Jan 2025 00:00:00 GMT', 'the report-headers control wins')
})

async function authOf (sandbox: Sandbox): Promise<Record<string, string>> {
  return { authorization: `Bearer ${await tokenFor(sandbox)}` }
}

t.test('POST /_sandbox/access: ESM answers 403 to valid tokens, as for a client without ESM access', async (t) => {
  const { sandbox, get } = await startEsm(t)
  t.same(await control(sandbox, 'POST', 'access', { api: 'esm', allowed: false }), { status: 200, json: { api: 'esm', allowed: false } })
  const forbidden = await get('/esm/v3/year')
  t.equal(forbidden.status, 403)
  t.match(forbidden.headers['content-type'], /^text\/plain/)
  t.equal(forbidden.text, 'Forbidden')
  t.equal((await call(sandbox.authUrl, '/esm/v3/year')).status, 401, 'no token is still 401')
  t.equal((await get('/cmu/v2/year')).status, 200, 'CMU unaffected')
  t.match((await control(sandbox, 'GET', 'calls')).json, { esm: 2, esmForbidden: 1, esmUnauthorized: 1, cmu: 1, cmuForbidden: 0 })
  t.same(await control(sandbox, 'POST', 'access', { api: 'esm', allowed: true }), { status: 200, json: { api: 'esm', allowed: true } })
  t.equal((await get('/esm/v3/year')).status, 200)
  sandbox.forbidden.add('cmu')
  t.equal((await get('/cmu/v2/year')).status, 403, 'in process, for either API')
  t.same(await control(sandbox, 'DELETE', 'access'), { status: 200, json: { cleared: true } })
  t.equal((await get('/cmu/v2/year')).status, 200)
  for (const body of [{ api: 'esm', allowed: 'no' }, { api: 'pass', allowed: false }]) {
    t.equal((await control(sandbox, 'POST', 'access', body)).status, 400, JSON.stringify(body))
  }
})

t.test('faults, counters and recorded requests per API', async (t) => {
  const { sandbox, get } = await startEsm(t)
  t.equal((await control(sandbox, 'POST', 'faults', { endpoint: 'esm', count: 1, status: 503, path: '/v3/year' })).status, 201)
  t.equal((await get('/cmu/v2/year')).status, 200, 'CMU unaffected')
  t.equal((await get('/esm/v3')).status, 200, 'another path unaffected')
  t.equal((await get('/esm/v3/year?mvpd=DTV')).status, 503)
  t.equal((await get('/esm/v3/year?mvpd=DTV')).status, 200, 'used up')
  t.same(sandbox.esmRequests.map((r) => r.url), ['/esm/v3', '/esm/v3/year?mvpd=DTV', '/esm/v3/year?mvpd=DTV'])
  t.same(sandbox.cmuRequests.map((r) => r.url), ['/cmu/v2/year'])
  t.match(sandbox.calls, { cmu: 1, esm: 3 })
})
