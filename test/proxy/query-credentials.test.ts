// A credential in the query string (api_key, apikey, key, token,
// access_token, client_secret; any case, any percent-encoding of the name) is
// removed before Adobe and masked in the request log (issue 19 item 5). The
// trace side is in test/telemetry/tracing.test.ts.
import t from 'tap'
import { call, startProxy, startSandbox } from '../helpers/app.js'

const KEY = 'alpha-key-0123456789abcdef'
const SECRETS = ['alpha-query-secret', 'token-secret', 'encoded-secret', 'client-secret', 'upper-secret', 'filter-secret', 'access-secret', 'dash-access-secret', 'x-key-secret', 'password-secret', 'bare-secret']
const QUERY = `?api_key=${KEY}&mvpd=A&Token=token-secret&%6Bey=encoded-secret&client%5Fsecret=client-secret&APIKEY=upper-secret&token!=filter-secret&access_token=access-secret&tenant=keynote&api-key=alpha-query-secret&access-token=dash-access-secret&X-Api-Key=x-key-secret&password=password-secret&secret=bare-secret&start=2026-01`

for (const mode of ['with a key in the header', 'anonymous']) {
  t.test(`${mode}: query credentials never reach Adobe or the log; the rest of the query is untouched`, async (t) => {
    const sandbox = await startSandbox(t)
    const proxy = await startProxy(t, sandbox, { env: mode === 'anonymous' ? {} : { PROXY_API_KEYS: KEY } })
    const response = await call(proxy.url, `/cmu/v2/year${QUERY}`, { headers: mode === 'anonymous' ? {} : { 'x-api-key': KEY } })
    t.equal(response.status, 200)
    t.equal(sandbox.cmuRequests.at(-1)?.url, '/cmu/v2/year?mvpd=A&tenant=keynote&start=2026-01', 'Adobe gets the query without them')
    const log = proxy.logs.join('\n')
    for (const secret of [KEY, ...SECRETS]) t.notOk(log.includes(secret), `not logged: ${secret}`)
    t.match(log, /"url":"\/cmu\/v2\/year\?api_key=\[redacted\]&mvpd=A&Token=\[redacted\]&%6Bey=\[redacted\]/, 'logged masked, in place')
  })
}

t.test('a key only in the query does not authenticate', async (t) => {
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { PROXY_API_KEYS: KEY } })
  t.equal((await call(proxy.url, `/cmu/v2/year?api_key=${KEY}`)).status, 401)
  t.notOk(proxy.logs.join('\n').includes(KEY), 'nor is it logged')
})
