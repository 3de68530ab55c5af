// `cmu-proxy sandbox` as another team would run it: a separate process,
// scripted over HTTP.
import t from 'tap'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { call } from '../helpers/app.js'
import { runNode, startNode } from '../helpers/processes.js'

async function post (url: string, body: unknown, method = 'POST'): Promise<{ status: number, json: any }> {
  const response = await fetch(url, { method, body: body === undefined ? undefined : JSON.stringify(body), headers: { 'content-type': 'application/json' } })
  return { status: response.status, json: await response.json() }
}

t.test('cmu-proxy sandbox --port 0: DCR, CMU, ESM and the /_sandbox control API', async (t) => {
  const child = startNode(t, 'cli', ['sandbox', '--port', '0', '--token-lifetime', '600'])
  await child.waitForOutput(/ADOBE_ESM_URL=\S+\n/)
  const base = /listening on (http:\/\/\S+)/.exec(child.stdout())?.[1] ?? ''
  t.match(child.stdout(), new RegExp(`ADOBE_CMU_URL=${base}/cmu\n  ADOBE_ESM_URL=${base}/esm\n`))

  const client = await post(`${base}/o/client/register`, { software_statement: makeSoftwareStatement() })
  t.equal(client.status, 201)
  const tokenResponse = await fetch(`${base}/o/client/token`, { method: 'POST', body: new URLSearchParams({ grant_type: 'client_credentials', client_id: client.json.client_id, client_secret: client.json.client_secret }) })
  t.equal(tokenResponse.status, 201)
  const token = ((await tokenResponse.json()) as { access_token: string }).access_token
  const auth = { authorization: `Bearer ${token}` }
  t.equal((await call(base, '/cmu/v2/year.csv', { headers: auth })).status, 200)
  const esm = await call(base, '/esm/v3/year.csv', { headers: auth })
  t.equal(esm.status, 200)
  t.match(esm.text, /^year,authn-attempts,/)

  t.equal((await post(`${base}/_sandbox/faults`, { endpoint: 'cmu', count: 1, status: 503 })).status, 201)
  t.equal((await call(base, '/cmu/v2/year', { headers: auth })).status, 503, 'scripted fault')
  t.equal((await call(base, '/cmu/v2/year', { headers: auth })).status, 200, 'used up')
  t.equal((await post(`${base}/_sandbox/faults`, { endpoint: 'cmu', count: 'forever', status: 500, path: '/v2/tenant' })).status, 201)
  t.equal((await call(base, '/cmu/v2/tenant', { headers: auth })).status, 500)
  t.equal((await post(`${base}/_sandbox/faults`, { endpoint: 'cmu', status: 502, afterMs: 100 })).status, 201)
  const slowStarted = Date.now()
  t.equal((await call(base, '/cmu/v2', { headers: auth })).status, 502, 'a slow failure')
  t.ok(Date.now() - slowStarted >= 90, 'after the delay')
  t.equal((await post(`${base}/_sandbox/faults`, undefined, 'DELETE')).status, 200)
  t.equal((await call(base, '/cmu/v2/tenant', { headers: auth })).status, 200, 'cleared')

  t.equal((await post(`${base}/_sandbox/revoke-tokens`, undefined)).status, 200)
  t.equal((await call(base, '/cmu/v2', { headers: auth })).status, 401, 'revoked token')
  t.equal((await post(`${base}/_sandbox/token-lifetime`, { seconds: 5 })).json.seconds, 5)
  t.equal((await post(`${base}/_sandbox/revoke-clients`, undefined)).status, 200)
  const refused = await fetch(`${base}/o/client/token`, { method: 'POST', body: new URLSearchParams({ grant_type: 'client_credentials', client_id: client.json.client_id, client_secret: client.json.client_secret }) })
  t.same(await refused.json(), { error: 'invalid_client' })
  t.match((await call(base, '/_sandbox/calls')).json(), { register: 1, token: 2, cmu: 7, esm: 1 })

  const invalid: Array<[unknown, RegExp]> = [
    [{ endpoint: 'nope' }, /endpoint/],
    [{ endpoint: 'cmu', count: 0, status: 500 }, /count/],
    [{ endpoint: 'cmu', path: 5, status: 500 }, /path/],
    [{ endpoint: 'cmu' }, /give one of/],
    [{ endpoint: 'cmu', status: 500, afterMs: 'soon' }, /afterMs/],
    // Past setTimeout's range a delay would fire after 1 ms instead.
    [{ endpoint: 'cmu', delayMs: 2 ** 32 }, /delayMs must be a number of milliseconds, at most 3600000/],
    [{ endpoint: 'cmu', status: 500, afterMs: 1e10 }, /afterMs/]
  ]
  for (const [body, error] of invalid) {
    const answer = await post(`${base}/_sandbox/faults`, body)
    t.equal(answer.status, 400)
    t.match(answer.json.error, error)
  }
  t.equal((await post(`${base}/_sandbox/token-lifetime`, { seconds: 0 })).status, 400)
  t.equal((await call(base, '/_sandbox/nothing')).status, 404)
  const notJson = await fetch(`${base}/_sandbox/faults`, { method: 'POST', body: '{' })
  t.equal(notJson.status, 400)
  // JSON, but not an object: a 400, not a crash of the sandbox.
  for (const body of ['null', '[]', '7']) t.equal((await fetch(`${base}/_sandbox/faults`, { method: 'POST', body })).status, 400, body)
  t.equal((await call(base, '/_sandbox/calls')).status, 200, 'still answering')

  t.equal((await child.stop('SIGTERM')).code, 0, 'stops cleanly on SIGTERM')
})

t.test('bad arguments are a usage error', async (t) => {
  for (const args of [['--port', 'abc'], ['--bogus']]) {
    const { code, stderr } = await runNode('cli', ['sandbox', ...args])
    t.equal(code, 64, args.join(' '))
    t.match(stderr, /^cmu-proxy sandbox: /)
  }
  const help = await runNode('cli', ['sandbox', '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /^usage: cmu-proxy sandbox/)
})
