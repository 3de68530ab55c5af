// Adobe's own 5xx: the caller gets it unchanged (status, Retry-After, body),
// and the proxy names it CMU_PROXY_UPSTREAM_5XX in the request line and in
// cmu_proxy_problems_total, on the streamed path and the cached one.
import t from 'tap'
import { call, eventually, startProxy, startSandbox } from '../helpers/app.js'

for (const cache of ['false', 'true']) {
  t.test(`cache ${cache === 'true' ? 'on' : 'off'}: Adobe's 503 crosses unchanged and is counted as CMU_PROXY_UPSTREAM_5XX`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: cache } })
    sandbox.faults.failNext('cmu', 1, { status: 503, body: 'CMU is recomputing', contentType: 'text/plain', headers: { 'retry-after': '7' } })
    const response = await call(proxy.url, '/cmu/v2/year')
    t.equal(response.status, 503, "Adobe's status")
    t.equal(response.text, 'CMU is recomputing', "Adobe's body")
    t.equal(response.headers['retry-after'], '7', "Adobe's Retry-After")
    t.match(response.headers['content-type'], /^text\/plain/, 'not turned into problem+json')
    t.ok(await eventually(() => proxy.logs.some((l) => /"url":"\/cmu\/v2\/year","statusCode":503,[^}]*"code":"CMU_PROXY_UPSTREAM_5XX"/.test(l))), 'the request line names it')
    t.match((await call(proxy.url, '/metrics')).text, /cmu_proxy_problems_total\{route="cmu",code="CMU_PROXY_UPSTREAM_5XX"\} 1\n/, 'counted once')
    // With the cache on, the report rests for Adobe's Retry-After (cache/rests.ts); another report is asked.
    t.equal((await call(proxy.url, cache === 'true' ? '/cmu/v2/year/month' : '/cmu/v2/year')).status, 200, 'the next answer is fine')
    t.notMatch((await call(proxy.url, '/metrics')).text, /CMU_PROXY_UPSTREAM_5XX"\} 2/, 'and not counted')
  })
}
