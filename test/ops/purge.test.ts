// DELETE /admin/cache on one instance (ops/cache-purge.ts): everything, or one
// report with every variant of its path; the admin rules of the other routes;
// paths refused as forwarded paths are.
import t from 'tap'
import { heldAnswer } from '../../src/sandbox/faults.js'
import { assertProblem, call, startProxy, startSandbox, whenInFlight } from '../helpers/app.js'

const ADMIN = 'purge-admin-key-0123456789'
const AS_ADMIN = { 'x-api-key': ADMIN }
const CACHED = { CACHE_ENABLED: 'true', ADMIN_API_KEY: ADMIN }
const YEAR = '/cmu/v2/year'
const MONTH = '/cmu/v2/year/month'

/** Every variant of YEAR the test caches (query, Accept, encoding), and one of MONTH. */
const VARIANTS: Array<[string, Record<string, string>]> = [
  [YEAR, {}],
  [`${YEAR}?start=2026-01-01&end=2026-02-01`, {}],
  [YEAR, { accept: 'text/csv' }],
  [YEAR, { 'accept-encoding': 'gzip' }],
  [MONTH, {}]
]

async function xCache (url: string, [path, headers]: [string, Record<string, string>]): Promise<string | string[] | undefined> {
  const answer = await call(url, path, { headers })
  return answer.status === 200 ? answer.headers['x-cache'] : `status ${answer.status}`
}

async function purges (url: string, scope: 'all' | 'path'): Promise<number> {
  return Number(new RegExp(`^cmu_proxy_cache_purges_total\\{scope="${scope}"\\} (\\d+)$`, 'm').exec((await call(url, '/metrics')).text)?.[1] ?? Number.NaN)
}

t.test('one report: every variant of its path goes, other reports stay', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHED })
  for (const variant of VARIANTS) t.equal(await xCache(proxy.url, variant), 'MISS', `cached: ${variant[0]} ${JSON.stringify(variant[1])}`)
  for (const variant of VARIANTS) t.equal(await xCache(proxy.url, variant), 'HIT')
  const purged = await call(proxy.url, `/admin/cache?path=${encodeURIComponent(YEAR)}`, { method: 'DELETE', headers: AS_ADMIN })
  t.equal(purged.status, 200)
  t.equal(purged.headers['cache-control'], 'no-store')
  t.same(purged.json(), { purged: true, scope: 'path', path: YEAR, cacheEnabled: true, entries: { memory: 4, fleet: null } }, 'four variants of the path, no fleet')
  const calls = sandbox.calls.cmu
  t.same(await Promise.all(VARIANTS.map(async (variant) => await xCache(proxy.url, variant))), ['MISS', 'MISS', 'MISS', 'MISS', 'HIT'], 'every variant of the path is fetched again; the other report is not')
  t.equal(sandbox.calls.cmu, calls + 4)
  t.equal(await purges(proxy.url, 'path'), 1)
  t.equal(await purges(proxy.url, 'all'), 0)
  t.match(proxy.logs.map((line) => JSON.parse(line)).filter((line) => line.msg === 'cache purged'), [{ scope: 'path', path: YEAR, memory: 4, fleet: null }], 'logged')
})

t.test('a percent-encoded alias of the path is the same report: purged with it', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHED })
  t.equal(await xCache(proxy.url, ['/cmu/v2/%79ear', {}]), 'MISS')
  const purged = await call(proxy.url, `/admin/cache?path=${encodeURIComponent(YEAR)}`, { method: 'DELETE', headers: AS_ADMIN })
  t.match(purged.json(), { scope: 'path', path: YEAR, entries: { memory: 1 } })
  t.equal(await xCache(proxy.url, ['/cmu/v2/y%65ar', {}]), 'MISS', 'fetched again')
  const byAlias = await call(proxy.url, `/admin/cache?path=${encodeURIComponent('/cmu/v2/%79ear')}`, { method: 'DELETE', headers: AS_ADMIN })
  t.match(byAlias.json(), { scope: 'path', path: YEAR, entries: { memory: 1 } }, 'a purge naming the alias drops it too')
})

t.test('everything: DELETE /admin/cache without a path', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHED })
  for (const variant of VARIANTS) await xCache(proxy.url, variant)
  const purged = await call(proxy.url, '/admin/cache', { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN}` } })
  t.same(purged.json(), { purged: true, scope: 'all', cacheEnabled: true, entries: { memory: VARIANTS.length, fleet: null } })
  t.same(new Set(await Promise.all(VARIANTS.map(async (variant) => await xCache(proxy.url, variant)))), new Set(['MISS']), 'nothing is cached any more')
  t.equal(await purges(proxy.url, 'all'), 1)
  const again = await call(proxy.url, '/admin/cache', { method: 'DELETE', headers: AS_ADMIN })
  t.equal(again.json().entries.memory, VARIANTS.length, 'what the second round cached')
})

t.test('the admin rules: 401 without the admin key, 404 without ADMIN_API_KEY', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHED })
  await xCache(proxy.url, [YEAR, {}])
  assertProblem(t, await call(proxy.url, '/admin/cache', { method: 'DELETE' }), 401, 'CMU_PROXY_UNAUTHORIZED')
  assertProblem(t, await call(proxy.url, '/admin/cache', { method: 'DELETE', headers: { 'x-api-key': 'not-the-admin-key-0123' } }), 401, 'CMU_PROXY_UNAUTHORIZED')
  t.equal(await xCache(proxy.url, [YEAR, {}]), 'HIT', 'nothing was purged')
  const closed = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true' } })
  assertProblem(t, await call(closed.url, '/admin/cache', { method: 'DELETE', headers: AS_ADMIN }), 404, 'CMU_PROXY_NOT_FOUND')
  t.equal(await purges(proxy.url, 'all'), 0, 'refusals are not purges')
})

t.test('a path outside the prefix, with escapes or a query, or another parameter, is refused and purges nothing', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHED })
  await xCache(proxy.url, [YEAR, {}])
  const refused: Array<[string, string]> = [
    ['path=%2Fother%2Fv2', 'CMU_PROXY_BAD_PATH'],
    ['path=%2Fcmux%2Fv2', 'CMU_PROXY_BAD_PATH'],
    ['path=', 'CMU_PROXY_BAD_PATH'],
    ['path=%2Fcmu%2Fv2%2F..%2F..%2Fadmin', 'CMU_PROXY_BAD_PATH'],
    ['path=%2Fcmu%2Fv2%2F%252e%252e%2Fx', 'CMU_PROXY_BAD_PATH'],
    ['path=%2Fcmu%2Fv2%252Fyear', 'CMU_PROXY_BAD_PATH'],
    ['path=%2Fcmu%2Fv2%5Cyear', 'CMU_PROXY_BAD_PATH'],
    ['path=%2Fcmu%2Fv2%2Fyear%3Fstart%3D1', 'CMU_PROXY_BAD_PATH'],
    ['path=%2Fcmu%2Fv2%2Fyear%23x', 'CMU_PROXY_BAD_PATH'],
    ['path=%2Fcmu%2Fv2&path=%2Fcmu%2Fv2%2Fyear', 'CMU_PROXY_BAD_REQUEST'],
    ['paht=%2Fcmu%2Fv2%2Fyear', 'CMU_PROXY_BAD_REQUEST']
  ]
  for (const [query, code] of refused) {
    const answer = await call(proxy.url, `/admin/cache?${query}`, { method: 'DELETE', headers: AS_ADMIN })
    t.equal(answer.json().code, code, query)
    t.equal(answer.status, 400)
  }
  t.equal(await xCache(proxy.url, [YEAR, {}]), 'HIT', 'nothing was purged')
  t.equal(await purges(proxy.url, 'path') + await purges(proxy.url, 'all'), 0)
})

t.test('with the cache off: a purge answers, with nothing to drop', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { ADMIN_API_KEY: ADMIN } })
  const answer = await call(proxy.url, `/admin/cache?path=${encodeURIComponent(YEAR)}`, { method: 'DELETE', headers: AS_ADMIN })
  t.same(answer.json(), { purged: true, scope: 'path', path: YEAR, cacheEnabled: false, entries: { memory: 0, fleet: null } })
})

t.test('a fetch in flight during a purge answers its caller but is not kept: the purge is not undone', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: CACHED })
  for (const [purge, expected] of [[`?path=${encodeURIComponent(YEAR)}`, 'MISS'], [`?path=${encodeURIComponent(MONTH)}`, 'HIT'], ['', 'MISS']] as const) {
    await call(proxy.url, '/admin/cache', { method: 'DELETE', headers: AS_ADMIN })
    const adobe = heldAnswer()
    t.teardown(adobe.release)
    sandbox.faults.failNext('cmu', 1, { until: adobe.until })
    const first = call(proxy.url, YEAR)
    t.ok(await whenInFlight(proxy.url, 1), 'Adobe is being asked')
    t.equal((await call(proxy.url, `/admin/cache${purge}`, { method: 'DELETE', headers: AS_ADMIN })).status, 200)
    adobe.release()
    const answered = await first
    t.equal(answered.status, 200, 'the caller who asked before the purge gets the answer')
    t.equal(answered.headers['x-cache'], 'MISS')
    t.equal(await xCache(proxy.url, [YEAR, {}]), expected, `purge${purge === '' ? ' of everything' : ` ${decodeURIComponent(purge)}`}: the next request is a ${expected}`)
  }
})
