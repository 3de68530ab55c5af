// /esm/* through the proxy (issue 23): the same token and rules as /cmu, ESM's
// own cache namespace, HAL links made usable whichever form Adobe writes, and
// Adobe's 403 told for what it means. Over real HTTP, against the sandbox
// (/_sandbox/links, /_sandbox/access) and scripted upstreams.
import { get } from 'node:http'
import { gunzipSync, gzipSync } from 'node:zlib'
import t, { type Test } from 'tap'
import type { Sandbox } from '../../src/sandbox/server.js'
import { assertProblem, call, eventually, startProxy, startSandbox, startScriptedServer, type RawResponse } from '../helpers/app.js'

const RANGE = 'start=2026-01-01&end=2026-01-03'
const ADMIN_API_KEY = 'admin-key-for-the-esm-tests-0123'

async function sandboxControl (sandbox: Sandbox, method: string, path: string, body?: unknown): Promise<void> {
  const response = await fetch(`${sandbox.authUrl}/_sandbox/${path}`, { method, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
  if (response.status !== 200) throw new Error(`sandbox control ${path}: ${response.status}`)
}

/** Every href of a HAL JSON report (self, roll-up, each drill-down). */
function jsonHrefs (report: RawResponse): string[] {
  const text = report.headers['content-encoding'] === 'gzip' ? gunzipSync(report.body).toString('utf8') : report.text
  const links = JSON.parse(text)._links
  return [links.self, links['roll-up'], ...[links['drill-down'] ?? []].flat()].filter((link) => link !== undefined).map((link: { href: string }) => link.href)
}

/** Every href of a HAL XML report. */
function xmlHrefs (report: RawResponse): string[] {
  const text = report.headers['content-encoding'] === 'gzip' ? gunzipSync(report.body).toString('utf8') : report.text
  return [...text.matchAll(/\shref="([^"]*)"/g)].map((match) => match[1] ?? '')
}

t.test('/esm/v3/year.csv: the demo\'s report, with the one token CMU uses (one registration, one token call)', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox)
  const csv = await call(proxy.url, '/esm/v3/year.csv')
  t.equal(csv.status, 200)
  t.match(csv.headers['content-type'], /^text\/csv/)
  t.match(csv.text, /^year,authn-attempts,/)
  t.equal((await call(proxy.url, `/cmu/v2/year?${RANGE}`)).status, 200)
  t.equal((await call(proxy.url, `/esm/v3/year/month?${RANGE}`)).status, 200)
  t.same({ register: sandbox.calls.register, token: sandbox.calls.token, cmu: sandbox.calls.cmu, esm: sandbox.calls.esm }, { register: 1, token: 1, cmu: 1, esm: 2 })
  t.equal(sandbox.esmRequests.at(-1)?.url, `/esm/v3/year/month?${RANGE}`, 'path and query byte for byte under ADOBE_ESM_URL')
  t.equal(sandbox.esmRequests.at(-1)?.headers.authorization, sandbox.cmuRequests.at(-1)?.headers.authorization, 'the same token')
})

for (const CACHE_ENABLED of ['false', 'true']) {
  t.test(`HAL links work through the proxy in either form Adobe writes them: JSON and XML, identity and gzip (cache ${CACHE_ENABLED})`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED } })
    for (const form of ['short', 'full']) {
      await sandboxControl(sandbox, 'POST', 'links', { api: 'esm', form })
      for (const encoding of ['identity', 'gzip']) {
        // A distinct query per form, so that each form's answer is its own cache entry.
        const query = `${RANGE}&limit=${form === 'short' ? 3 : 4}`
        const asked = { 'accept-encoding': encoding }
        const json = await call(proxy.url, `/esm/v3/year/month?${query}`, { headers: asked })
        const xml = await call(proxy.url, `/esm/v3/year/month.xml?${query}`, { headers: asked })
        for (const [kind, report, hrefs] of [['JSON', json, jsonHrefs(json)], ['XML', xml, xmlHrefs(xml)]] as const) {
          const label = `${form} links, ${kind}, ${encoding}`
          t.equal(report.status, 200, label)
          t.equal(report.headers['content-encoding'], encoding === 'gzip' ? 'gzip' : undefined, `${label}: encoded as asked`)
          t.equal(Number(report.headers['content-length']), report.body.length, `${label}: Content-Length is the body's`)
          t.ok(hrefs.length >= 3, `${label}: self, roll-up, drill-down`)
          t.same(hrefs.filter((href) => !href.startsWith('/esm/v3')), [], `${label}: every href is under /esm`)
        }
        // Each link answers through the proxy.
        for (const href of jsonHrefs(json)) t.equal((await call(proxy.url, href)).status, 200, `${form}: ${href}`)
      }
    }
    const esmCalls = sandbox.calls.esm
    if (CACHE_ENABLED === 'true') {
      const again = await call(proxy.url, `/esm/v3/year/month?${RANGE}&limit=3`, { headers: { 'accept-encoding': 'gzip' } })
      t.equal(again.headers['x-cache'], 'HIT', 'a cached entry')
      t.same(jsonHrefs(again).filter((href) => !href.startsWith('/esm/v3')), [], 'holds the rewritten links')
      t.equal(sandbox.calls.esm, esmCalls, 'without asking Adobe again')
    }
  })
}

t.test('the rewrite is bounded: only HAL JSON/XML 200s, not no-transform, not above CACHE_MAX_ENTRY_BYTES; never an absolute URL', async (t) => {
  const big = JSON.stringify({ _links: { self: { href: '/v3/big' } }, report: [{ pad: 'x'.repeat(5_000) }] })
  const answers: Record<string, { type: string, body: string, headers?: Record<string, string>, status?: number }> = {
    '/esm/v3/csv': { type: 'text/csv', body: 'href,x\n"/v3/a",1\n' },
    '/esm/v3/html': { type: 'text/html', body: '<a href="/v3/a">a</a>' },
    '/esm/v3/no-transform': { type: 'application/json', body: '{"_links":{"self":{"href":"/v3/a"}}}', headers: { 'cache-control': 'max-age=60, no-transform' } },
    '/esm/v3/big': { type: 'application/json', body: big },
    '/esm/v3/not-found': { type: 'application/json', body: '{"_links":{"self":{"href":"/v3/a"}}}', status: 404 },
    '/esm/v3/shapes': { type: 'application/hal+json', body: '{"_links":{"a":{"href":"/v3/x?y=1"},"b":{"href":"//evil.example/v3"},"c":{"href":"https://evil.example/v3"},"d":{"href":"/v33x/../v3"},"e":{"href":"\\/v3\\/y"},"f":{"href":"/v3x"}},"report":[{"note":"\\"href\\":\\"/v3"}],"n":12345678901234567890}' },
    '/esm/v3/xml': { type: 'application/xml; charset=ISO-8859-1', body: '<resource href="/v3/xml?a=1&amp;b=2"><links><link rel="roll-up" href="/v3"/><link href="http://evil.example/v3"/></links><record name="caf\u00e9 href=&quot;/v3"/></resource>' }
  }
  const upstream = await startScriptedServer(t, (req, res) => {
    const answer = answers[(req.url.split('?')[0] ?? '')]
    if (answer === undefined) { res.writeHead(404).end(); return }
    res.writeHead(answer.status ?? 200, { 'content-type': answer.type, ...answer.headers })
    res.end(Buffer.from(answer.body, 'latin1'))
  })
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true', CACHE_MAX_ENTRY_BYTES: '4096', ADOBE_ESM_URL: `${upstream.url}/esm` } })
  for (const path of ['/esm/v3/csv', '/esm/v3/html', '/esm/v3/no-transform', '/esm/v3/big', '/esm/v3/not-found']) {
    const response = await call(proxy.url, path)
    t.equal(response.body.toString('latin1'), answers[path]?.body, `${path}: as Adobe sent it`)
  }
  t.equal((await call(proxy.url, '/esm/v3/shapes')).text,
    '{"_links":{"a":{"href":"/esm/v3/x?y=1"},"b":{"href":"//evil.example/v3"},"c":{"href":"https://evil.example/v3"},"d":{"href":"/v33x/../v3"},"e":{"href":"/esm\\/v3\\/y"},"f":{"href":"/v3x"}},"report":[{"note":"\\"href\\":\\"/v3"}],"n":12345678901234567890}',
    'only /v<n> paths gain the prefix; other hosts, other shapes, report values and number spellings stay')
  const xml = await call(proxy.url, '/esm/v3/xml')
  t.equal(xml.body.toString('latin1'), '<resource href="/esm/v3/xml?a=1&amp;b=2"><links><link rel="roll-up" href="/esm/v3"/><link href="http://evil.example/v3"/></links><record name="caf\u00e9 href=&quot;/v3"/></resource>', 'XML: link and resource hrefs, every other byte as it came (ISO-8859-1 too)')
})

t.test('a body larger than CACHE_MAX_INFLIGHT_BYTES could ever hold passes as Adobe sent it, never shed', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_MAX_INFLIGHT_BYTES: '16' } })
  for (let i = 0; i < 3; i++) {
    const response = await call(proxy.url, `/esm/v3/year?${RANGE}`)
    t.equal(response.status, 200)
    t.match(response.json()._links.self.href, /^\/v3\/year\?/, 'Adobe\'s own links: too large to rewrite here')
  }
})

t.test('a gzip body too large once decoded passes as Adobe sent it, still compressed and intact', async (t) => {
  const body = JSON.stringify({ _links: { self: { href: '/v3/year' } }, report: [{ pad: 'x'.repeat(50_000) }] })
  const gzipped = gzipSync(body)
  const upstream = await startScriptedServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': gzipped.length })
    res.end(gzipped)
  })
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_MAX_ENTRY_BYTES: '4096', ADOBE_ESM_URL: `${upstream.url}/esm` } })
  const response = await call(proxy.url, '/esm/v3/year', { headers: { 'accept-encoding': 'gzip' } })
  t.ok(gzipped.length < 4096, 'small compressed')
  t.same(response.body, gzipped, 'the same bytes')
})

t.test('Adobe\'s 403 on /esm: a problem that says the deployment lacks ESM access; CMU unaffected; nothing cached', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true' } })
  await sandboxControl(sandbox, 'POST', 'access', { api: 'esm', allowed: false })
  for (const method of ['GET', 'HEAD']) {
    const response = await call(proxy.url, `/esm/v3/year?${RANGE}`, { method })
    t.equal(response.status, 403, method)
    if (method === 'GET') {
      assertProblem(t, response, 403, 'CMU_PROXY_ESM_FORBIDDEN')
      t.match(response.json().detail, /no ESM access[^]*CMU reports are not affected/)
    }
  }
  t.equal(sandbox.calls.esmForbidden, 2, 'each asked Adobe: a 403 is not cached')
  t.equal((await call(proxy.url, `/cmu/v2/year?${RANGE}`)).status, 200, 'CMU works')
  await sandboxControl(sandbox, 'DELETE', 'access')
  t.equal((await call(proxy.url, `/esm/v3/year?${RANGE}`)).status, 200, 'once Adobe allows it, at once')
  const cacheOff = await startProxy(t, sandbox)
  await sandboxControl(sandbox, 'POST', 'access', { api: 'esm', allowed: false })
  assertProblem(t, await call(cacheOff.url, `/esm/v3/year?${RANGE}`), 403, 'CMU_PROXY_ESM_FORBIDDEN')
  t.ok(proxy.logs.some((line) => line.includes('"api":"esm"') && line.includes('"code":"CMU_PROXY_ESM_FORBIDDEN"')), 'the request line names the API and the code')
})

t.test('/cmu/v2/x and /esm/v2/x are two reports: two cache entries, two purges; metrics label route="esm"', async (t) => {
  let served = 0
  const upstream = await startScriptedServer(t, (req, res) => {
    served++
    res.writeHead(200, { 'content-type': 'text/csv', 'cache-control': 'max-age=600' })
    res.end(`${req.url}\n`)
  })
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true', ADMIN_API_KEY, ADOBE_CMU_URL: `${upstream.url}/cmu`, ADOBE_ESM_URL: `${upstream.url}/esm` } })
  const body = async (path: string): Promise<string> => (await call(proxy.url, path)).text
  t.equal(await body('/cmu/v2/x.csv'), '/cmu/v2/x.csv\n')
  t.equal(await body('/esm/v2/x.csv'), '/esm/v2/x.csv\n', 'not CMU\'s cached answer')
  t.equal(await body('/esm/v2/x.csv'), '/esm/v2/x.csv\n')
  t.equal(served, 2, 'one call per API, then hits')
  const purge = async (path: string): Promise<RawResponse> => await call(proxy.url, `/admin/cache?path=${encodeURIComponent(path)}`, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN_API_KEY}` } })
  const purged = await purge('/esm/v2/x.csv')
  t.equal(purged.status, 200)
  t.match(purged.json(), { purged: true, scope: 'path', path: '/esm/v2/x.csv', entries: { memory: 1 } })
  t.equal(await body('/cmu/v2/x.csv'), '/cmu/v2/x.csv\n')
  t.equal(served, 2, 'CMU\'s entry stayed')
  t.equal(await body('/esm/v2/x.csv'), '/esm/v2/x.csv\n')
  t.equal(served, 3, 'ESM\'s went')
  assertProblem(t, await purge('/%65sm/v2/x.csv'), 400, 'CMU_PROXY_BAD_PATH')
  assertProblem(t, await purge('/esm/v2/../x'), 400, 'CMU_PROXY_BAD_PATH')
  const metrics = (await call(proxy.url, '/metrics')).text
  t.match(metrics, /cmu_proxy_requests_total\{route="esm",status_class="2xx",cache="HIT"\} 1/)
  t.match(metrics, /cmu_proxy_requests_total\{route="cmu",status_class="2xx",cache="HIT"\} 1/)
  t.match(metrics, /cmu_proxy_request_duration_seconds_count\{route="esm"\} 3/)
})

t.test('one pool for CMU and ESM on one host; another host gets its own', async (t) => {
  const seen: string[] = []
  const upstream = await startScriptedServer(t, (req, res) => {
    seen.push(`${req.headers.host} ${req.url}`)
    res.writeHead(200, { 'content-type': 'text/csv' })
    res.end('x\n')
  })
  const sandbox = await startSandbox(t)
  const port = new URL(upstream.url).port
  // 'localhost' is another origin than 127.0.0.1 for the pool, the same server here.
  const proxy = await startProxy(t, sandbox, { env: { ADOBE_CMU_URL: `${upstream.url}/a/cmu`, ADOBE_ESM_URL: `http://localhost:${port}/b/esm` } })
  t.equal((await call(proxy.url, '/cmu/v2/year.csv')).status, 200)
  t.equal((await call(proxy.url, '/esm/v3/year.csv')).status, 200)
  t.same(seen, [`127.0.0.1:${port} /a/cmu/v2/year.csv`, `localhost:${port} /b/esm/v3/year.csv`], 'each API\'s base path on its own origin')
})

for (const CACHE_ENABLED of ['false', 'true']) {
  t.test(`rewrites past CACHE_MAX_INFLIGHT_BYTES are shed with 503, and the proxy lives on (cache ${CACHE_ENABLED})`, async (t) => {
    // CACHE_MAX_INFLIGHT_BYTES 6,500: bodies of up to 812 bytes are rewritten. Nine answers
    // hold about 740 bytes each until all nine were asked for: together they need more than it has.
    let asked = 0
    let release = (): void => {}
    const held = new Promise<void>((resolve) => { release = resolve })
    t.teardown(release)
    const upstream = await startScriptedServer(t, (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      if (req.url?.includes('small') === true) return void res.end('{"_links":{"self":{"href":"/v3/a"}}}')
      asked++
      res.write(`{"_links":{"self":{"href":"/v3/a"}},"pad":"${'x'.repeat(700)}`)
      void held.then(() => { res.end(`${'x'.repeat(50)}"}`) })
    })
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED, CACHE_MAX_ENTRY_BYTES: '4096', CACHE_MAX_INFLIGHT_BYTES: '6500', ADOBE_ESM_URL: `${upstream.url}/esm` } })
    await call(proxy.url, '/esm/v3/a?small')
    const pending = [1, 2, 3, 4, 5, 6, 7, 8, 9].map(async (x) => await call(proxy.url, `/esm/v3/a?x=${x}`))
    t.ok(await eventually(() => asked === 9), 'all nine asked of Adobe')
    release()
    const answers = await Promise.all(pending)
    const shed = answers.filter((answer) => answer.status === 503)
    t.ok(shed.length >= 1, `some shed (${shed.length})`)
    for (const answer of shed) assertProblem(t, answer, 503, 'CMU_PROXY_OVERLOADED')
    const served = answers.filter((answer) => answer.status !== 503)
    t.ok(served.every((answer) => answer.status === 200 && answer.json()._links.self.href === '/esm/v3/a'), 'the others answered with their links rewritten, never with Adobe\'s')
    // Before the fix, undici's abort of a shed body was an uncaught 'error' that ended the process.
    const after = await call(proxy.url, '/esm/v3/a?x=10')
    t.equal(after.status, 200, 'still serving, links rewritten')
    t.equal(after.json()._links.self.href, '/esm/v3/a')
  })
}

t.test('a gzip body\'s decoded copies count against CACHE_MAX_INFLIGHT_BYTES, not only its compressed bytes; every gzip member is decoded', async (t) => {
  // CACHE_MAX_INFLIGHT_BYTES 20,000: bodies of up to 2,500 bytes are rewritten. The gzip body
  // is tiny on the wire and 2,400 bytes decoded: rewriting it holds five copies, about 12,000 bytes.
  const json = JSON.stringify({ _links: { self: { href: '/v3/zip' } }, pad: 'x'.repeat(2400 - 40) })
  const zipped = gzipSync(json)
  // The same body in two gzip members (RFC 1952 §2.2), as a server that flushes may send it.
  const twoMembers = Buffer.concat([gzipSync(json.slice(0, 1000)), gzipSync(json.slice(1000))])
  let release = (): void => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  t.teardown(release)
  const upstream = await startScriptedServer(t, (req, res) => {
    if (req.url?.includes('/slow') === true) {
      // Each holds 2,400 bytes of the budget until released.
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write(`{"_links":{"self":{"href":"/v3/slow"}},"pad":"${'x'.repeat(2400 - 40)}`)
      return void held.then(() => { res.end('"}') })
    }
    res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' })
    res.end(req.url?.includes('/members') === true ? twoMembers : zipped)
  })
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'false', CACHE_MAX_ENTRY_BYTES: '4096', CACHE_MAX_INFLIGHT_BYTES: '20000', ADOBE_ESM_URL: `${upstream.url}/esm` } })
  const zip = async (path = '/esm/v3/zip'): Promise<RawResponse> => await call(proxy.url, path, { headers: { 'accept-encoding': 'gzip' } })
  const alone = await zip()
  t.equal(alone.status, 200)
  t.same(jsonHrefs(alone), ['/esm/v3/zip'], 'alone it fits: rewritten')
  t.same(jsonHrefs(await zip('/esm/v3/members')), ['/esm/v3/zip'], 'two gzip members: both decoded, rewritten')
  const slow = [1, 2, 3, 4].map(async (n) => await call(proxy.url, `/esm/v3/slow${n}`))
  t.ok(await eventually(async () => (await zip()).status === 503), 'while four other rewrites hold 9,600 bytes, the decoded copies do not fit: shed')
  assertProblem(t, await zip(), 503, 'CMU_PROXY_OVERLOADED')
  release()
  t.same((await Promise.all(slow)).map((answer) => answer.status), [200, 200, 200, 200])
  t.same(jsonHrefs(await zip()), ['/esm/v3/zip'], 'the budget is whole again')
})

t.test('bodies up to an eighth of CACHE_MAX_INFLIGHT_BYTES are rewritten, so one rewrite always fits; larger ones pass as Adobe sent them', async (t) => {
  const ofLength = (bytes: number): string => {
    const head = '{"_links":{"self":{"href":"/v3/a"}},"pad":"'
    return `${head}${'x'.repeat(bytes - head.length - 2)}"}`
  }
  const upstream = await startScriptedServer(t, (req, res) => {
    const body = ofLength(Number(new URL(req.url ?? '/', 'http://x').searchParams.get('bytes')))
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
  const sandbox = await startSandbox(t)
  // 6,400 / 8: 800 bytes.
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'false', CACHE_MAX_ENTRY_BYTES: '4096', CACHE_MAX_INFLIGHT_BYTES: '6400', ADOBE_ESM_URL: `${upstream.url}/esm` } })
  t.equal((await call(proxy.url, '/esm/v3/a?bytes=800')).json()._links.self.href, '/esm/v3/a', '800 bytes: rewritten')
  const larger = await call(proxy.url, '/esm/v3/a?bytes=801')
  t.equal(larger.status, 200)
  t.equal(larger.text, ofLength(801), '801 bytes: as Adobe sent it')
})

t.test('a caller that leaves while a large answer passes unrewritten: Adobe\'s connection is closed, not held', async (t) => {
  let closed = false
  const upstream = await startScriptedServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.write('{"_links":{"self":{"href":"/v3/a"}},"pad":"')
    // Far more than the caller will read; the answer never ends on its own.
    for (let i = 0; i < 20; i++) res.write('x'.repeat(1 << 20))
    res.on('close', () => { closed = true })
  })
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true', CACHE_MAX_ENTRY_BYTES: String(16 << 20), CACHE_MAX_INFLIGHT_BYTES: String(64 << 20), ADOBE_ESM_URL: `${upstream.url}/esm` } })
  // Reads the head, then hangs up without reading the body.
  const status = await new Promise<number | undefined>((resolve, reject) => {
    const request = get(`${proxy.url}/esm/v3/a`, (response) => {
      response.pause()
      resolve(response.statusCode)
      request.destroy()
    })
    request.on('error', reject)
  })
  t.equal(status, 200, 'the answer started')
  t.ok(await eventually(() => closed, 10_000), 'the proxy closed its connection to Adobe')
  t.equal((await call(proxy.url, '/healthz')).status, 200)
})
