// The sandbox against Adobe's documented behaviour, over real HTTP.
import { gunzipSync } from 'node:zlib'
import t from 'tap'
import { Client } from 'undici'
import { CMU_METRICS as METRICS } from '../../src/sandbox/cmu-catalog.js'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { makeSoftwareStatement, statementClaims } from '../../src/sandbox/statement.js'
import { call, eventually, startSandbox } from '../helpers/app.js'
import { post, register, tokenFor } from './dcr-client.js'

const NOW = Date.parse('2026-11-27T10:30:00Z')
const RANGE = 'start=2026-11-01&end=2026-11-03'

t.test('DCR register and token as documented', async (t) => {
  const sandbox = await startSandbox(t, { now: () => NOW, tokenLifetimeSeconds: 1800 })
  const registered = await post(sandbox.authUrl, '/o/client/register', JSON.stringify({ software_statement: makeSoftwareStatement() }), 'application/json')
  t.equal(registered.status, 201)
  t.match(registered.json(), { client_id: String, client_secret: String, client_id_issued_at: NOW, redirect_uris: [], grant_types: ['client_credentials'], scopes: [] })
  const client = registered.json()

  const form = new URLSearchParams({ grant_type: 'client_credentials', client_id: client.client_id, client_secret: client.client_secret }).toString()
  const viaBody = await post(sandbox.authUrl, '/o/client/token', form, 'application/x-www-form-urlencoded')
  t.equal(viaBody.status, 201)
  t.match(viaBody.json(), { id: String, access_token: /^[\w-]+\.[\w-]+\.[\w-]+$/, created_at: NOW, expires_in: 1800, token_type: 'bearer' })
  const viaQuery = await post(sandbox.authUrl, `/o/client/token?${form}`, '', 'text/plain')
  t.equal(viaQuery.status, 201, 'parameters in the query string are accepted too')

  const errors: Array<[string, string, string, string]> = [
    ['/o/client/register', '{}', 'application/json', 'invalid_request'],
    ['/o/client/register', 'not json', 'application/json', 'invalid_request'],
    ['/o/client/register', JSON.stringify({ software_statement: 'nope' }), 'application/json', 'invalid_software_statement'],
    ['/o/client/token', 'grant_type=client_credentials', 'application/x-www-form-urlencoded', 'invalid_request'],
    ['/o/client/token', `grant_type=password&client_id=${client.client_id}&client_secret=x`, 'application/x-www-form-urlencoded', 'unsupported_grant_type'],
    ['/o/client/token', `grant_type=client_credentials&client_id=${client.client_id}&client_secret=wrong`, 'application/x-www-form-urlencoded', 'invalid_client']
  ]
  for (const [path, body, type, error] of errors) {
    const response = await post(sandbox.authUrl, path, body, type)
    t.equal(response.status, 400, `${path} ${error}`)
    t.same(response.json(), { error })
  }
  sandbox.dcr.rejectStatementsWith = 'unapproved_software_statement'
  t.same((await post(sandbox.authUrl, '/o/client/register', JSON.stringify({ software_statement: makeSoftwareStatement() }), 'application/json')).json(), { error: 'unapproved_software_statement' })
  t.equal((await call(sandbox.authUrl, '/o/client/token')).status, 405, 'GET is not allowed')
})

t.test('DCR throttle: burst of 10, then 429 with an HTML body and no Retry-After', async (t) => {
  let now = NOW
  const sandbox = await startSandbox(t, { throttle: true, now: () => now })
  const statuses: number[] = []
  for (let i = 0; i < 12; i++) statuses.push((await post(sandbox.authUrl, '/o/client/register', '{}', 'application/json')).status)
  t.same(statuses, [...Array(10).fill(400), 429, 429])
  const throttled = await post(sandbox.authUrl, '/o/client/register', '{}', 'application/json')
  t.match(throttled.headers['content-type'], /text\/html/)
  t.equal(throttled.headers['retry-after'], undefined)
  now += 1000
  t.equal((await post(sandbox.authUrl, '/o/client/register', '{}', 'application/json')).status, 400, 'one more after a second')
})

t.test('CMU: valid drill-down paths answer 200, others 404', async (t) => {
  const sandbox = await startSandbox(t, { now: () => NOW })
  const token = await tokenFor(sandbox)
  const auth = { authorization: `Bearer ${token}` }
  const cases: Array<[string, number]> = [
    ['/cmu/v2', 200], ['/cmu/v2/', 200], ['/cmu/v2/year', 200], ['/cmu/v2/year/month/day/hour/minute', 200],
    ['/cmu/v2/tenant', 200], ['/cmu/v2/year/month/tenant/mvpd', 200], ['/cmu/v2/tenant/year', 200],
    ['/cmu/v2/month', 404], ['/cmu/v2/year/day', 404], ['/cmu/v2/year/year', 404], ['/cmu/v2/tenant/tenant', 404],
    ['/cmu/v2/bogus', 404], ['/cmu/v1/year', 404], ['/cmu/v2/year.pdf', 404], ['/elsewhere', 404]
  ]
  for (const [path, status] of cases) t.equal((await call(sandbox.authUrl, `${path}?${RANGE}`, { headers: auth })).status, status, path)
})

t.test('CMU: auth, methods and query validation', async (t) => {
  const sandbox = await startSandbox(t, { now: () => NOW })
  const token = await tokenFor(sandbox)
  const auth = { authorization: `Bearer ${token}` }
  t.equal((await call(sandbox.authUrl, '/cmu/v2')).status, 401, 'no token')
  t.equal((await call(sandbox.authUrl, '/cmu/v2', { headers: { authorization: 'Bearer forged' } })).status, 401, 'unknown token')
  t.equal((await call(sandbox.authUrl, `/cmu/v2?access_token=${token}`)).status, 200, 'token in the query')
  t.equal((await call(sandbox.authUrl, '/cmu/v2', { method: 'POST', headers: auth })).status, 405)
  const bad: Array<[string, number, RegExp]> = [
    ['/cmu/v2/year?start=2026-13', 400, /Invalid date for start/],
    ['/cmu/v2/year?end=yesterday', 400, /Invalid date for end/],
    ['/cmu/v2/year?start=2026-02-30', 400, /Invalid date/],
    ['/cmu/v2/year?start=2026-02&end=2026-01', 400, /start is after end/],
    ['/cmu/v2/year?color=red', 400, /Unknown dimension: color/],
    ['/cmu/v2/year?metrics=active-users,hugs', 400, /Unknown metric: hugs/],
    ['/cmu/v2/year?limit=0', 400, /Invalid limit/],
    ['/cmu/v2/year?tenant=%E0%A4%A', 400, /Malformed/],
    ['/cmu/v2/year?format=pdf', 406, /Unsupported format/],
    // Not own properties of the catalog: unknown, not a crash.
    ['/cmu/v2/year?constructor', 400, /Unknown dimension: constructor/],
    ['/cmu/v2/year?__proto__=x', 400, /Unknown dimension: __proto__/],
    // Two years by the minute: Adobe refuses queries that need a massive volume of data.
    ['/cmu/v2/year/month/day/hour/minute?start=2024&end=2026', 400, /Query too large/],
    ['/cmu/v2/year/month/day/hour/minute?start=2026-11-01&end=2026-11-02&tenant&application&application-id&channel&mvpd&platform', 400, /Query too large/]
  ]
  for (const [path, status, message] of bad) {
    const response = await call(sandbox.authUrl, path, { headers: auth })
    t.equal(response.status, status, path)
    t.match(response.headers['content-type'], /^text\/plain/)
    t.match(response.text, message)
  }
  t.equal((await call(sandbox.authUrl, '/cmu/v2/year', { headers: { ...auth, accept: 'image/png' } })).status, 406)
})

t.test('CMU: filters, projections, metrics and limit shape the report', async (t) => {
  const sandbox = await startSandbox(t, { now: () => NOW })
  const auth = { authorization: `Bearer ${await tokenFor(sandbox)}` }
  const report = async (query: string): Promise<Array<Record<string, string>>> =>
    (await call(sandbox.authUrl, `/cmu/v2/year/month/day/mvpd?${RANGE}&${query}`, { headers: auth })).json().report
  t.same([...new Set((await report('mvpd=DTV&mvpd=Cox')).map((r) => r.mvpd))], ['DTV', 'Cox'], 'repeated = is IN')
  t.notOk((await report('mvpd!=DTV&mvpd!=Cox')).some((r) => r.mvpd === 'DTV' || r.mvpd === 'Cox'), 'repeated != is NOT IN')
  t.ok((await report('platform')).every((r) => typeof r.platform === 'string'), 'bare dim adds a column')
  const metrics = await report('metrics=active-users,failed-attempts&limit=3')
  t.equal(metrics.length, 3, 'limit')
  t.same(Object.keys(metrics[0] ?? {}), ['year', 'month', 'day', 'mvpd', 'active-users', 'failed-attempts'])
  t.ok(Object.values(metrics[0] ?? {}).every((v) => typeof v === 'string'), 'values are strings, as Adobe sends them')
  const all = await report('limit=1')
  t.same(Object.keys(all[0] ?? {}).slice(4), [...METRICS], 'the seven session metrics by default')
  const filteredTotal = await report('tenant=acme-tv&limit=1')
  t.ok(Number(filteredTotal[0]?.['started-sessions']) < Number(all[0]?.['started-sessions']), 'a filter on another dimension shrinks the numbers')
})

t.test('CMU: formats by extension, then format=, then Accept', async (t) => {
  const sandbox = await startSandbox(t, { now: () => NOW })
  const auth = { authorization: `Bearer ${await tokenFor(sandbox)}` }
  const cases: Array<[string, Record<string, string>, RegExp, RegExp]> = [
    ['/cmu/v2/year/month.csv', { accept: 'application/json' }, /^text\/csv/, /^year,month,active-users/],
    ['/cmu/v2/year/month.xml', {}, /^application\/xml/, /^<\?xml[^]*<resource href="\/cmu\/v2\/year\/month\.xml\?[^]*<record year="2026" month="11"/],
    ['/cmu/v2/year/month.html', {}, /^text\/html/, /<table>[^]*<th>year<\/th>/],
    ['/cmu/v2/year/month.json', { accept: 'text/csv' }, /^application\/json/, /^\{"_links"/],
    ['/cmu/v2/year/month?format=csv', { accept: 'application/json' }, /^text\/csv/, /^year,month/],
    ['/cmu/v2/year/month?format=xml', {}, /^application\/xml/, /^<\?xml/],
    ['/cmu/v2/year/month', { accept: 'text/csv' }, /^text\/csv/, /^year,month/],
    ['/cmu/v2/year/month', { accept: 'text/html;q=0.5, application/xml' }, /^application\/xml/, /^<\?xml/],
    ['/cmu/v2/year/month', { accept: 'text/xml' }, /^application\/xml/, /^<\?xml/],
    ['/cmu/v2/year/month', { accept: 'text/*' }, /^text\/csv/, /^year/],
    ['/cmu/v2/year/month', { accept: '*/*' }, /^application\/json/, /^\{/],
    ['/cmu/v2/year/month', {}, /^application\/json/, /^\{/]
  ]
  for (const [path, headers, type, body] of cases) {
    const response = await call(sandbox.authUrl, `${path}${path.includes('?') ? '&' : '?'}${RANGE}`, { headers: { ...auth, ...headers } })
    t.equal(response.status, 200, `${path} ${JSON.stringify(headers)}`)
    t.match(response.headers['content-type'], type)
    t.match(response.text, body)
  }
  const csv = await call(sandbox.authUrl, `/cmu/v2/year/month.csv?${RANGE}&limit=5`, { headers: auth })
  t.equal(csv.headers['content-disposition'], 'attachment; filename="report__2026-11-01_2026-11-03_5.csv"')
})

t.test('CMU: gzip when asked, same bytes every time', async (t) => {
  const sandbox = await startSandbox(t, { now: () => NOW })
  const auth = { authorization: `Bearer ${await tokenFor(sandbox)}` }
  const path = '/cmu/v2/year/month/day/hour?start=2026-11-01&end=2026-11-02'
  const plain = await call(sandbox.authUrl, path, { headers: auth })
  const again = await call(sandbox.authUrl, path, { headers: auth })
  t.equal(plain.text, again.text, 'deterministic')
  t.equal(plain.json().report.length, 24, 'one row per hour')
  const gzip = await call(sandbox.authUrl, path, { headers: { ...auth, 'accept-encoding': 'br, gzip;q=0.8' } })
  t.equal(gzip.headers['content-encoding'], 'gzip')
  t.equal(gunzipSync(gzip.body).toString('utf8'), plain.text)
  const refused = await call(sandbox.authUrl, path, { headers: { ...auth, 'accept-encoding': 'gzip;q=0' } })
  t.equal(refused.headers['content-encoding'], undefined, 'q=0 means no')
  const head = await call(sandbox.authUrl, path, { method: 'HEAD', headers: auth })
  t.equal(head.status, 200)
  t.equal(head.body.length, 0)
  const otherSeed = await startSandbox(t, { now: () => NOW, seed: 2 })
  const otherAuth = { authorization: `Bearer ${await tokenFor(otherSeed)}` }
  t.not((await call(otherSeed.authUrl, path, { headers: otherAuth })).text, plain.text, 'the seed changes the numbers')
})

t.test('CMU: every drill-down link from /cmu/v2, three levels deep, answers 200 with links that resolve', async (t) => {
  const sandbox = await startSandbox(t, { now: () => NOW })
  const auth = { authorization: `Bearer ${await tokenFor(sandbox)}` }
  let frontier = ['/cmu/v2']
  let visited = 0
  for (let depth = 0; depth < 3; depth++) {
    const next: string[] = []
    for (const href of frontier) {
      const response = await call(sandbox.authUrl, `${href}?${RANGE}&limit=2`, { headers: auth })
      visited++
      if (response.status !== 200) t.fail(`${href} answered ${response.status}`)
      const links = response.json()._links
      for (const link of [links.self, links['roll-up']].filter(Boolean)) {
        if (!String(link.href).startsWith('/cmu/v2')) t.fail(`${link.href} is not an absolute /cmu path`)
      }
      if (links['roll-up'] !== undefined && (await call(sandbox.authUrl, links['roll-up'].href, { headers: auth })).status !== 200) t.fail(`roll-up of ${href}`)
      next.push(...(links['drill-down'] ?? []).map((d: { href: string }) => d.href))
    }
    frontier = next
  }
  t.ok(visited > 50, `walked ${visited} reports`)
})

t.test('HAL links as in Adobe\'s examples: self with the effective query, roll-up and drill-down bare paths', async (t) => {
  const sandbox = await startSandbox(t, { now: () => NOW })
  const auth = { authorization: `Bearer ${await tokenFor(sandbox)}` }
  const json = (await call(sandbox.authUrl, `/cmu/v2/year/month?mvpd=DTV&${RANGE}&limit=3`, { headers: auth })).json()._links
  t.equal(json.self.href, `/cmu/v2/year/month?mvpd=DTV&${RANGE}&limit=3&metrics=${METRICS.join(',')}`, 'self: path and the full effective query')
  t.same(json['roll-up'], { href: '/cmu/v2/year' })
  t.same(json['drill-down'].map((d: { href: string }) => d.href), json['drill-down'].map((d: { name: string }) => `/cmu/v2/year/month/${d.name}`))
  t.ok(json['drill-down'].length > 1)
  const xml = (await call(sandbox.authUrl, `/cmu/v2/year/month.xml?mvpd=DTV&${RANGE}`, { headers: auth })).text
  t.match(xml, /<resource href="\/cmu\/v2\/year\/month\.xml\?mvpd=DTV&amp;start=/)
  t.match(xml, /<link rel="roll-up" href="\/cmu\/v2\/year"\/>/)
  t.match(xml, /<link rel="drill-down" href="\/cmu\/v2\/year\/month\/day" name="day"\/>/)
  t.notMatch(xml, /rel="(roll-up|drill-down)" href="[^"]*\?/, 'no query on roll-up or drill-down')
})

t.test('faults: fail N times, hang, delay, drop', async (t) => {
  const sandbox = await startSandbox(t, { now: () => NOW })
  const auth = { authorization: `Bearer ${await tokenFor(sandbox)}` }
  sandbox.faults.failNext('cmu', 2, { status: 503 }, '/v2/year')
  t.equal((await call(sandbox.authUrl, '/cmu/v2', { headers: auth })).status, 200, 'other paths unaffected')
  t.equal((await call(sandbox.authUrl, '/cmu/v2/year', { headers: auth })).status, 503)
  t.equal((await call(sandbox.authUrl, '/cmu/v2/year', { headers: auth })).status, 503)
  t.equal((await call(sandbox.authUrl, '/cmu/v2/year', { headers: auth })).status, 200, 'used up')
  sandbox.faults.failNext('token', 1, { delayMs: 50 })
  const started = Date.now()
  await tokenFor(sandbox)
  t.ok(Date.now() - started >= 45, 'delayed')
  sandbox.faults.failNext('cmu', 1, { drop: true })
  await t.rejects(call(sandbox.authUrl, '/cmu/v2', { headers: auth }))
  sandbox.faults.failNext('cmu', Infinity, { status: 500 })
  sandbox.faults.clear('cmu')
  t.equal((await call(sandbox.authUrl, '/cmu/v2', { headers: auth })).status, 200, 'cleared')
  sandbox.dcr.tokenLifetimeSeconds = 1
  t.equal((await post(sandbox.authUrl, '/o/client/token', new URLSearchParams({ grant_type: 'client_credentials', ...(await register(sandbox)) }).toString(), 'application/x-www-form-urlencoded')).json().expires_in, 1, 'token lifetime can change')
})

t.test('a held answer released after the caller left is dropped quietly, and the sandbox answers on', async (t) => {
  const sandbox = await startSandbox(t, { now: () => NOW })
  const auth = { authorization: `Bearer ${await tokenFor(sandbox)}` }
  const adobe = heldAnswer()
  sandbox.faults.failNext('cmu', 1, { until: adobe.until })
  const leaving = new AbortController()
  const answer = call(sandbox.authUrl, '/cmu/v2/year', { headers: auth, signal: leaving.signal }).catch(() => 'left')
  t.ok(await eventually(() => sandbox.requests.cmu.length === 1), 'the request is held')
  leaving.abort()
  t.equal(await answer, 'left')
  t.ok(await eventually(() => sandbox.calls.cmuAborted === 1), 'the sandbox saw it leave')
  adobe.release()
  await adobe.until
  // Before, piping the report into the destroyed response was an unhandled rejection that failed the run.
  t.equal((await call(sandbox.authUrl, '/cmu/v2/year', { headers: auth })).status, 200)
})

t.test('dropRate drops requests on reused keep-alive connections, never the first one on a connection', async (t) => {
  const sandbox = await startSandbox(t, { now: () => NOW, dropRate: 1 })
  const auth = { authorization: `Bearer ${await tokenFor(sandbox)}` }
  const client = new Client(sandbox.authUrl)
  t.teardown(async () => { await client.close() })
  const first = await client.request({ method: 'GET', path: '/cmu/v2', headers: auth })
  t.equal(first.statusCode, 200, 'a new connection: answered')
  await first.body.dump()
  t.equal(sandbox.calls.cmuDropped, 0)
  await t.rejects(client.request({ method: 'GET', path: '/cmu/v2', headers: auth }), { code: 'UND_ERR_SOCKET' }, 'the same connection again: dropped')
  t.equal(sandbox.calls.cmuDropped, 1)
  const fresh = await client.request({ method: 'GET', path: '/cmu/v2', headers: auth })
  t.equal(fresh.statusCode, 200, 'the next (new) connection is answered')
  await fresh.body.dump()
})

t.test('the made-up statement looks like Adobe\'s', async (t) => {
  const statement = makeSoftwareStatement(NOW)
  t.match(statementClaims(statement), { iss: 'auth.adobe.com', iat: NOW / 1000, nbf: NOW / 1000, sub: String })
  t.equal(statementClaims('x'), undefined)
  t.equal(statementClaims('a.bm90IGpzb24.c'), undefined)
  t.equal(statementClaims(`a.${Buffer.from('[1]').toString('base64url')}.c`), undefined)
})
