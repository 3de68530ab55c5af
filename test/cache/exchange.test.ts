// What an exchange with Adobe leaves the caller and the cache: Age only as
// valid delta-seconds (RFC 9111 §5.1, §1.2.2), Adobe's Date (RFC 9110
// §6.6.1), a response delay counted from when the request left (§4.2.3),
// and the header bytes of an entry counted and bounded. Scripted origins on
// port 0, the sandbox for the token.
import { get, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import t from 'tap'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { call, eventually, startProxy, startSandbox, startScriptedServer, type ScriptedRequest } from '../helpers/app.js'
import { manualClock } from './directives-cases.js'

const ADOBE_DATE = 'Tue, 24 Nov 2026 10:00:00 GMT'

/** A scripted CMU origin (answers by `handler`) behind a proxy whose clock the test moves; the sandbox only issues the token. */
async function behindScripted (t: Parameters<typeof startScriptedServer>[0], handler: (req: ScriptedRequest, res: ServerResponse) => void, env: Record<string, string> = {}): Promise<{ url: string, requests: ScriptedRequest[], advance: (ms: number) => void }> {
  const upstream = await startScriptedServer(t, handler)
  const sandbox = await startSandbox(t)
  const clock = manualClock()
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true', ADOBE_CMU_URL: `${upstream.url}/cmu`, ...env }, now: clock.now })
  return { url: proxy.url, requests: upstream.requests, advance: clock.advance }
}

for (const CACHE_ENABLED of ['false', 'true']) {
  t.test(`Age crosses only as valid delta-seconds, at most 2^31 (cache ${CACHE_ENABLED}; streamed, buffered, and a conditional passed through)`, async (t) => {
    const { url } = await behindScripted(t, (req, res) => {
      const age = decodeURIComponent(new URL(req.url, 'http://x').searchParams.get('age') ?? '')
      res.setHeader('age', age.includes('|') ? age.split('|') : age)
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      res.end('{"report":[]}')
    }, { CACHE_ENABLED })
    const rows: Array<[string, string | undefined]> = [['30', '30'], ['-5', undefined], ['abc', undefined], ['1.5', undefined], ['0x10', undefined], ['99999999999', '2147483648'], ['30, 40', '30'], ['30|40', '30']]
    for (const [sent, seen] of rows) {
      const path = `/cmu/v2/year?age=${encodeURIComponent(sent)}`
      t.equal((await call(url, path)).headers.age, seen, `Age: ${sent}`)
      t.equal((await call(url, path, { headers: { 'if-none-match': '"x"' } })).headers.age, seen, `Age: ${sent}, passed through`)
    }
  })

  t.test(`Adobe's Date reaches the caller (cache ${CACHE_ENABLED})`, async (t) => {
    const { url } = await behindScripted(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', date: ADOBE_DATE })
      res.end('{"report":[]}')
    }, { CACHE_ENABLED })
    t.equal((await call(url, '/cmu/v2/year')).headers.date, ADOBE_DATE)
  })
}

t.test("Date on hits and 304s is Adobe's, as stored, with Age saying how long it was held; a 304 from Adobe brings its own", async (t) => {
  let date = ADOBE_DATE
  const { url, advance } = await behindScripted(t, (req, res) => {
    const headers = { date, etag: '"d1"', 'cache-control': 'max-age=600' }
    if (req.headers['if-none-match'] === '"d1"') { res.writeHead(304, headers); res.end(); return }
    res.writeHead(200, { 'content-type': 'application/json', ...headers })
    res.end('{"report":[]}')
  })
  const miss = await call(url, '/cmu/v2/year')
  t.same([miss.headers['x-cache'], miss.headers.date], ['MISS', ADOBE_DATE])
  advance(100_000)
  const hit = await call(url, '/cmu/v2/year')
  t.same([hit.headers['x-cache'], hit.headers.date, hit.headers.age], ['HIT', ADOBE_DATE, '100'], 'the stored Date, and Age for the time since')
  const notModified = await call(url, '/cmu/v2/year', { headers: { 'if-none-match': '"d1"' } })
  t.same([notModified.status, notModified.headers['x-cache'], notModified.headers.date], [304, 'HIT', ADOBE_DATE], 'RFC 9110 §15.4.5: a 304 carries the Date its 200 would')
  date = 'Tue, 24 Nov 2026 11:00:00 GMT'
  advance(600_000)
  const revalidated = await call(url, '/cmu/v2/year')
  t.same([revalidated.headers['x-cache'], revalidated.headers.date], ['REVALIDATED', date], "the 304's Date updates the stored one (RFC 9111 §3.2)")
})

t.test('the response delay counts from when the request left for Adobe, not from before the wait for a token', async (t) => {
  const clock = manualClock()
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true' }, now: clock.now })
  t.equal((await call(proxy.url, '/cmu/v2/tenant')).status, 200, 'a token is held')
  // The next report call meets a 401 (the token was revoked), and the new token takes 100 s to come.
  sandbox.dcr.revokeTokens()
  const token = heldAnswer()
  t.teardown(token.release)
  sandbox.faults.failNext('token', 1, { until: token.until })
  const tokens = sandbox.calls.token
  const path = '/cmu/v2/year/month/day/hour?start=2026-11-27T00:00'
  const miss = call(proxy.url, path)
  t.ok(await eventually(() => sandbox.calls.token === tokens + 1), 'waiting for the token')
  clock.advance(100_000)
  token.release()
  t.equal((await miss).headers['x-cache'], 'MISS')
  const hit = await call(proxy.url, path)
  t.same([hit.headers['x-cache'], hit.headers.age], ['HIT', '0'], 'the 100 s spent waiting for a token are not the answer\'s age')
})

t.test('the byte bound counts the headers an entry keeps, not only its body', async (t) => {
  const { url } = await behindScripted(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/csv', 'content-disposition': `attachment; filename="${'r'.repeat(8_000)}.csv"` })
    res.end('a,b\n1,2\n')
  }, { CACHE_MAX_BYTES: '40000', CACHE_MAX_ENTRY_BYTES: '1000' })
  for (let n = 1; n <= 10; n++) t.equal((await call(url, `/cmu/v2/year.csv?n=${n}`)).status, 200)
  const metrics = (await call(url, '/metrics')).text
  const entries = Number(/^cmu_proxy_cache_entries (\d+)$/m.exec(metrics)?.[1])
  const bytes = Number(/^cmu_proxy_cache_bytes (\d+)$/m.exec(metrics)?.[1])
  t.ok(entries >= 1 && entries <= 4, `${entries} entries of 8 KB headers fit in 40 KB`)
  t.ok(bytes >= entries * 8_000 && bytes <= 40_000, `${bytes} bytes held, headers counted`)
})

t.test('an entry whose headers would pass 16 KiB (a 304 adding to them) is served once and not kept', async (t) => {
  const { url, requests, advance } = await behindScripted(t, (req, res) => {
    if (req.headers['if-none-match'] === '"h1"') {
      res.writeHead(304, { etag: '"h1"', 'cache-control': `max-age=600, x-note="${'n'.repeat(9_000)}"` })
      res.end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/csv', etag: '"h1"', 'cache-control': 'max-age=60', 'content-disposition': `attachment; filename="${'r'.repeat(9_000)}.csv"` })
    res.end('a,b\n1,2\n')
  })
  t.equal((await call(url, '/cmu/v2/year.csv')).headers['x-cache'], 'MISS')
  advance(200_000)
  // Served once as they stand: more than Node's default 16 KiB of headers, so read with room for them.
  const revalidated = await headersOf(url, '/cmu/v2/year.csv')
  t.equal(revalidated['x-cache'], 'REVALIDATED')
  t.match(revalidated['cache-status'], /; detail=large-headers$/)
  const next = await call(url, '/cmu/v2/year.csv')
  t.equal(next.headers['x-cache'], 'MISS', 'not kept')
  t.equal(requests.at(-1)?.headers['if-none-match'], undefined, 'nothing left to revalidate')
  t.match((await call(url, '/metrics')).text, /^cmu_proxy_cache_uncacheable_total\{reason="large-headers"\} 1$/m)
})

/** The response headers of GET `path`, read with room for 64 KiB of them. */
async function headersOf (baseUrl: string, path: string): Promise<IncomingHttpHeaders> {
  return await new Promise((resolve, reject) => {
    get(`${baseUrl}${path}`, { maxHeaderSize: 65_536 }, (res) => { res.resume().on('end', () => { resolve(res.headers) }) }).on('error', reject)
  })
}
