// TokenBroker against a scripted token endpoint over real HTTP, with an
// injected clock: what it schedules, and how re-registration is sequenced.
import type { ServerResponse } from 'node:http'
import t, { type Test } from 'tap'
import { Agent } from 'undici'
import { DcrClient } from '../../src/adobe/dcr-client.js'
import { TokenBroker } from '../../src/adobe/token-broker.js'
import { createLogger } from '../../src/kernel/logger.js'
import { json, startScriptedServer, type ScriptedRequest } from '../helpers/app.js'

const HOUR = 3_600_000
const NOW = Date.parse('2026-01-01T00:00:00Z')

type Handler = (req: ScriptedRequest, res: ServerResponse) => void

/** A broker with a registering statement, talking to `handler`, on a frozen clock. */
async function brokerFor (t: Test, handler: Handler, now: () => number = () => NOW): Promise<{ broker: TokenBroker, requests: ScriptedRequest[] }> {
  const server = await startScriptedServer(t, handler)
  const dispatcher = new Agent()
  const dcr = new DcrClient({ authUrl: server.url, dispatcher, timeoutMs: 2_000, userAgent: 'cmu-proxy/test', now })
  const broker = new TokenBroker({
    dcr,
    logger: createLogger('silent'),
    softwareStatement: 'h.p.s',
    refreshMarginMs: 60_000,
    retryBaseMs: 1_000,
    retryMaxMs: 60_000,
    now,
    random: () => 0.5
  })
  t.teardown(async () => {
    broker.close()
    await dispatcher.close()
  })
  return { broker, requests: server.requests }
}

function dcrAnswers (token: (res: ServerResponse, n: number) => void): Handler {
  let tokens = 0
  let clients = 0
  return (req, res) => {
    if (req.url === '/o/client/register') return json(res, 201, { client_id: `client-${++clients}`, client_secret: 'secret' })
    token(res, ++tokens)
  }
}

const at = (instant: number | undefined): number => instant ?? NaN

t.test('a Retry-After past the timer range is clamped to an hour', async (t) => {
  const { broker } = await brokerFor(t, dcrAnswers((res) => { res.writeHead(429, { 'retry-after': '4294968' }); res.end() }))
  await t.rejects(broker.refreshNow(), { code: 'CMU_PROXY_TOKEN_THROTTLED' })
  const next = at(broker.status().lastError?.nextAttemptAt)
  t.ok(next - NOW <= HOUR, `next attempt in ${(next - NOW) / 1000} s, at most an hour`)
  t.ok(next - NOW >= HOUR - 1_000, 'but not sooner than Adobe asked, up to the clamp')
})

t.test('an Expires date years ahead is clamped to an hour too', async (t) => {
  const { broker } = await brokerFor(t, dcrAnswers((res) => { res.writeHead(429, { expires: 'Fri, 01 Jan 2100 00:00:00 GMT' }); res.end() }))
  await t.rejects(broker.refreshNow())
  t.ok(at(broker.status().lastError?.nextAttemptAt) - NOW <= HOUR)
})

t.test('a token that lives for 4e9 s is refreshed within 24 h', async (t) => {
  const { broker } = await brokerFor(t, dcrAnswers((res) => json(res, 201, { access_token: 'tok', expires_in: 4e9, token_type: 'bearer' })))
  await broker.refreshNow()
  const token = broker.status().token
  t.ok(token !== undefined, 'a token is held')
  const refreshIn = at(token?.refreshAt) - at(token?.obtainedAt)
  t.ok(refreshIn > 0 && refreshIn <= 24 * HOUR, `refresh in ${refreshIn / HOUR} h`)
})

t.test('an absurd expires_in still gives dates the admin view can show', async (t) => {
  const { broker } = await brokerFor(t, dcrAnswers((res) => json(res, 201, { access_token: 'tok', expires_in: 1e300, token_type: 'bearer' })))
  await broker.refreshNow()
  const status = broker.status()
  t.equal(status.ready, true)
  t.ok(at(status.token?.expiresAt) - NOW <= 7 * 24 * HOUR, `expiresAt ${status.token?.expiresAt ?? '?'} within a week`)
  t.ok(at(status.token?.refreshAt) - NOW <= 24 * HOUR)
})

/** A DCR server whose token answers wait while `held` is true; `release()` lets them through. */
function holdableDcr (): { handler: Handler, hold: () => void, release: () => void, waiting: () => number } {
  let held = false
  const queue: ServerResponse[] = []
  const answer = dcrAnswers((res, n) => json(res, 201, { access_token: `token-${n}`, expires_in: 21_600, token_type: 'bearer' }))
  return {
    handler: (req, res) => {
      if (req.url === '/o/client/token' && held) return void queue.push(res)
      answer(req, res)
    },
    hold: () => { held = true },
    release: () => {
      held = false
      for (const res of queue.splice(0)) answer({ method: 'POST', url: '/o/client/token', headers: {}, body: '' }, res)
    },
    waiting: () => queue.length
  }
}

async function until (condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5))
}

t.test('reregister() registers even when a refresh starts while it waits for the one in flight', async (t) => {
  const dcr = holdableDcr()
  const { broker } = await brokerFor(t, dcr.handler)
  await broker.refreshNow()
  t.equal(broker.status().counts.registrations, 1)

  dcr.hold()
  const inflight = broker.refreshNow()
  // Someone (a caller after an upstream 401, a timer) refreshes as soon as that attempt settles,
  // which is while reregister() is still waiting for it.
  const next = inflight.then(async () => { await broker.refreshNow() })
  const reregistered = broker.reregister()
  await until(() => dcr.waiting() === 1)
  dcr.release()
  await Promise.all([inflight, next, reregistered])

  t.equal(broker.status().counts.registrations, 2, 'reregister() registered')
  t.equal(broker.status().clientId, 'client-2', 'and the new client is in use')
  await broker.refreshNow()
  t.equal(broker.status().counts.registrations, 2, 'a later refresh does not register again')
})

t.test('concurrent reregister() calls share one registration and leave nothing behind', async (t) => {
  const dcr = holdableDcr()
  const { broker } = await brokerFor(t, dcr.handler)
  await broker.refreshNow()
  await Promise.all([broker.reregister(), broker.reregister()])
  t.equal(broker.status().counts.registrations, 2, 'one registration for both')
  await broker.refreshNow()
  t.equal(broker.status().counts.registrations, 2, 'a later refresh uses the new credentials')
  t.equal(broker.status().counts.tokenRequests, 3)
})

t.test('token calls are paced: a burst of five, then one a second, whatever asks for them', async (t) => {
  const { broker, requests } = await brokerFor(t, dcrAnswers((res, n) => json(res, 201, { access_token: `tok-${n}`, expires_in: 3600, token_type: 'bearer' })))
  for (let i = 0; i < 5; i++) await broker.refreshNow()
  t.equal(requests.filter((r) => r.url === '/o/client/token').length, 5, 'the burst goes at once')
  const started = performance.now()
  await broker.refreshNow()
  const waited = performance.now() - started
  t.ok(waited >= 900, `the sixth waited ${Math.round(waited)} ms for its turn`)
  t.equal(requests.filter((r) => r.url === '/o/client/token').length, 6)
})

t.test('a token that would expire within a second is refused as a protocol error, not fetched again and again', async (t) => {
  const { broker, requests } = await brokerFor(t, dcrAnswers((res) => json(res, 201, { access_token: 'tok', expires_in: 0.02, token_type: 'bearer' })))
  await t.rejects(broker.refreshNow(), { code: 'CMU_PROXY_TOKEN_ENDPOINT_ERROR' })
  t.match(broker.status().lastError?.detail, /expires_in of at least one second/)
  t.equal(requests.filter((r) => r.url === '/o/client/token').length, 1, 'one call, then the back-off')
})

t.test('a token that arrives past its usable life is never handed out: the caller gets a 503 problem, not an expired token', async (t) => {
  const dcr = holdableDcr()
  let now = NOW
  const { broker } = await brokerFor(t, dcr.handler, () => now)
  dcr.hold()
  const asked = broker.getToken()
  await until(() => dcr.waiting() === 1)
  // Adobe answers a 6 h token after 7 h: its life counts from the ask, so it is spent on arrival.
  now += 7 * HOUR
  dcr.release()
  await t.rejects(asked, { code: 'CMU_PROXY_TOKEN_ENDPOINT_ERROR', statusCode: 503, message: /past its usable life/ })
  t.equal(broker.currentToken(), undefined, 'nor is it held as usable')
  t.equal(await broker.getToken(), 'token-2', 'the next caller gets a fresh one')
})
