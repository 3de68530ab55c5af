// DcrClient against a scripted server: what it sends, and how it reads every answer.
import t, { type Test } from 'tap'
import { Agent } from 'undici'
import { DcrClient } from '../../src/adobe/dcr-client.js'
import { DcrError } from '../../src/adobe/errors.js'
import { retryAfter } from '../../src/kernel/retry-after.js'
import { json, startScriptedServer } from '../helpers/app.js'

const CREDENTIALS = { client_id: 'client-1', client_secret: 'secret-1' }

async function client (t: Test, handler: Parameters<typeof startScriptedServer>[1]): Promise<{ dcr: DcrClient, requests: Awaited<ReturnType<typeof startScriptedServer>>['requests'] }> {
  const server = await startScriptedServer(t, handler)
  const dispatcher = new Agent()
  t.teardown(async () => { await dispatcher.close() })
  return { dcr: new DcrClient({ authUrl: server.url, dispatcher, timeoutMs: 500, userAgent: 'cmu-proxy/test', now: () => Date.parse('2026-01-01T00:00:00Z') }), requests: server.requests }
}

t.test('register sends the statement as JSON and reads the 201 answer', async (t) => {
  const { dcr, requests } = await client(t, (_req, res) => json(res, 201, { client_id: 'c', client_secret: 's', client_id_issued_at: 1700000000000, redirect_uris: [], grant_types: ['client_credentials'], scopes: [] }))
  t.same(await dcr.registerClient('h.p.s'), { client_id: 'c', client_secret: 's', client_id_issued_at: 1700000000000 })
  t.equal(requests[0]?.url, '/o/client/register')
  t.equal(requests[0]?.headers['content-type'], 'application/json')
  t.same(JSON.parse(requests[0]?.body ?? ''), { software_statement: 'h.p.s' })
})

t.test('token sends a form body (never the query string) and checks every field', async (t) => {
  const { dcr, requests } = await client(t, (_req, res) => json(res, 201, { id: 'x', access_token: 'tok', created_at: 1, expires_in: '3600', token_type: 'bearer' }))
  t.same(await dcr.requestToken(CREDENTIALS), { access_token: 'tok', expires_in: 3600 })
  t.equal(requests[0]?.url, '/o/client/token', 'no query string')
  t.equal(requests[0]?.headers['content-type'], 'application/x-www-form-urlencoded')
  t.equal(requests[0]?.body, 'grant_type=client_credentials&client_id=client-1&client_secret=secret-1')
  t.equal(requests[0]?.headers['user-agent'], 'cmu-proxy/test')
})

t.test('answers are classified into typed failures without leaking bodies', async (t) => {
  const cases: Array<[string, (res: import('node:http').ServerResponse) => void, Partial<DcrError>]> = [
    ['OAuth error', (res) => json(res, 400, { error: 'invalid_client' }), { failure: 'oauth', oauthError: 'invalid_client', status: 400 }],
    ['429 without Retry-After', (res) => { res.writeHead(429, { 'content-type': 'text/html' }); res.end('<html>slow down</html>') }, { failure: 'throttled', retryAfterMs: undefined }],
    ['429 with Retry-After', (res) => { res.writeHead(429, { 'retry-after': '7' }); res.end() }, { failure: 'throttled', retryAfterMs: 7000 }],
    ['500', (res) => json(res, 500, 'secret-looking body'), { failure: 'http', status: 500 }],
    ['400 without an error field', (res) => json(res, 400, { message: 'x' }), { failure: 'http', status: 400 }],
    ['not JSON', (res) => json(res, 201, 'not json'), { failure: 'protocol' }],
    ['JSON array', (res) => json(res, 201, [1]), { failure: 'protocol' }],
    ['no access_token', (res) => json(res, 201, { expires_in: 10, token_type: 'bearer' }), { failure: 'protocol' }],
    ['token with spaces', (res) => json(res, 201, { access_token: 'a b', expires_in: 10 }), { failure: 'protocol' }],
    ['negative expires_in', (res) => json(res, 201, { access_token: 'a', expires_in: -1 }), { failure: 'protocol' }],
    ['wrong token_type', (res) => json(res, 201, { access_token: 'a', expires_in: 10, token_type: 'mac' }), { failure: 'protocol' }],
    ['hang', () => {}, { failure: 'unreachable' }]
  ]
  for (const [name, answer, expected] of cases) {
    const { dcr } = await client(t, (_req, res) => { answer(res) })
    const error = await dcr.requestToken(CREDENTIALS).then(() => undefined, (err: unknown) => err)
    t.type(error, DcrError, name)
    t.match(error, expected, name)
    t.notMatch((error as Error).message, /secret|slow down/, `${name}: no body or secret in the message`)
  }
})

t.test('registration answers are checked too', async (t) => {
  const { dcr } = await client(t, (_req, res) => json(res, 201, { client_id: 'c' }))
  t.match(await dcr.registerClient('h.p.s').catch((err: unknown) => err), { failure: 'protocol' })
  const down = new DcrClient({ authUrl: 'http://127.0.0.1:1/', dispatcher: new Agent(), timeoutMs: 500, userAgent: 'x' })
  t.match(await down.registerClient('h.p.s').catch((err: unknown) => err), { failure: 'unreachable' })
})

t.test('retryAfter reads seconds, HTTP dates and Expires', async (t) => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  t.equal(retryAfter({ 'retry-after': '3' }, now), 3000)
  t.equal(retryAfter({ 'retry-after': 'Thu, 01 Jan 2026 00:00:05 GMT' }, now), 5000)
  t.equal(retryAfter({ expires: ['Thu, 01 Jan 2026 00:00:02 GMT'] }, now), 2000)
  t.equal(retryAfter({ expires: 'Wed, 31 Dec 2025 00:00:00 GMT' }, now), 0, 'past dates mean now')
  t.equal(retryAfter({ 'retry-after': 'soon' }, now), undefined)
  t.equal(retryAfter({}, now), undefined)
})

t.test('retryAfter never asks for more than an hour', async (t) => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  t.equal(retryAfter({ 'retry-after': '4294968' }, now), 3_600_000, 'seconds past the timer range')
  t.equal(retryAfter({ 'retry-after': '9'.repeat(400) }, now), 3_600_000, 'a number too large for a double')
  t.equal(retryAfter({ expires: 'Fri, 01 Jan 2100 00:00:00 GMT' }, now), 3_600_000, 'a date decades ahead')
})
