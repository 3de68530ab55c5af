// RFC 9111 with the cache in memory: the cases of issue 21 (directives-cases.ts)
// against one instance, and the sandbox's control for the caching fields.
import t from 'tap'
import { call, startProxy, startSandbox } from '../helpers/app.js'
import { directiveCases, manualClock, type Start } from './directives-cases.js'

const start: Start = async (t, env = {}) => {
  const clock = manualClock()
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true', ...env }, now: clock.now })
  return { sandbox, a: proxy, b: proxy, clock }
}

directiveCases(t, start)

t.test('the sandbox control for the caching fields of report answers: POST sets them (checked), DELETE clears them', async (t) => {
  const sandbox = await startSandbox(t)
  const control = async (method: string, body?: unknown): Promise<number> =>
    (await fetch(`${sandbox.authUrl}/_sandbox/report-headers`, { method, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })).status
  for (const bad of [{ age: -1 }, { age: 1.5 }, { lastModified: 'soon' }, { etag: 3 }, { cacheControl: 5 }]) t.equal(await control('POST', bad), 400, JSON.stringify(bad))
  t.same(sandbox.reportHeaders, {}, 'none by default, and none after a refused one')
  t.equal(await control('POST', { cacheControl: 'max-age=60', etag: true, lastModified: 'Tue, 24 Nov 2026 10:00:00 GMT', age: 7 }), 200)
  t.same(sandbox.reportHeaders, { cacheControl: 'max-age=60', etag: true, lastModified: 'Tue, 24 Nov 2026 10:00:00 GMT', age: 7 })
  t.equal(await control('DELETE'), 200)
  t.same(sandbox.reportHeaders, {})
})

t.test('the report answers carry the fields set, and a matching validator gets a 304', async (t) => {
  const clock = manualClock()
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'false' }, now: clock.now })
  const path = '/cmu/v2/year?start=2026-01-01'
  const none = await call(proxy.url, path)
  for (const name of ['cache-control', 'etag', 'last-modified', 'age', 'expires']) t.equal(none.headers[name], undefined, `no ${name} by default`)
  sandbox.reportHeaders = { cacheControl: 'max-age=60', etag: true, lastModified: 'Tue, 24 Nov 2026 10:00:00 GMT', age: 7 }
  const full = await call(proxy.url, path)
  t.match(full.headers, { 'cache-control': 'max-age=60', etag: /^"[\w-]{22}"$/, 'last-modified': 'Tue, 24 Nov 2026 10:00:00 GMT', age: '7' })
  t.equal((await call(proxy.url, path)).headers.etag, full.headers.etag, 'the same body, the same ETag')
  t.not((await call(proxy.url, path, { headers: { 'accept-encoding': 'gzip' } })).headers.etag, full.headers.etag, 'another encoding, another ETag')
  const conditional = await call(proxy.url, path, { headers: { 'if-none-match': String(full.headers.etag) } })
  t.equal(conditional.status, 304, 'passed through with the cache off')
  t.equal((await call(proxy.url, path, { headers: { 'if-modified-since': 'Wed, 25 Nov 2026 10:00:00 GMT' } })).status, 304)
  t.equal((await call(proxy.url, path, { headers: { 'if-modified-since': 'Mon, 23 Nov 2026 10:00:00 GMT' } })).status, 200)
  sandbox.reportHeaders = { etag: 'W/"v1"' }
  t.equal((await call(proxy.url, path, { headers: { 'if-none-match': '"v1"' } })).status, 304, 'weak comparison')
  t.equal(sandbox.calls.cmuNotModified, 3)
})
