// The token rules (src/adobe/token-policy.ts), one row per rule of
// shared/DESIGN.md "Token lifecycle" and Adobe's DCR and throttling pages
// (shared/adobe-api.md). Pure functions: the clock is a number each row
// passes in, and so is the random draw.
import t from 'tap'
import type { FleetToken } from '../../src/adobe/coordination.js'
import { CoordinationUnavailable, DcrError, FleetAttemptFailed, NoSoftwareStatement, TokenStepFailed, type FailureNotice } from '../../src/adobe/errors.js'
import {
  FULL_BUCKET, TOKEN_LIMITS, acceptableFromFleet, backoffDelay, believedLifetimeMs, classifyFailure, isUsable, refreshDelay, reregistersAfter, retryDelay,
  takeTokenCall, tokenWindow, worthAdopting, type FleetTokenContext, type TokenCallBucket
} from '../../src/adobe/token-policy.js'

const S = 1_000
const MIN = 60 * S
const HOUR = 60 * MIN
const DAY = 24 * HOUR
const NOW = Date.parse('2026-01-01T00:00:00Z')
/** The defaults: TOKEN_REFRESH_MARGIN_SECONDS=60, TOKEN_RETRY_BASE_MS=1000, TOKEN_RETRY_MAX_MS=60000. */
const SETTINGS = { refreshMarginMs: 60 * S, retryBaseMs: 1 * S, retryMaxMs: 60 * S }

t.test('lifetime: counted from when the token was asked for, believed up to a week, not handed out in its last seconds', async (t) => {
  const rows: Array<[string, number, { expiresAt: number, usableUntil: number }]> = [
    ['Adobe\'s sample, 6 h: handed out until 5 s before expiry', 21_600, { expiresAt: NOW + 6 * HOUR, usableUntil: NOW + 6 * HOUR - 5 * S }],
    ['a 2 s test token: the last tenth of its life is held back, not 5 s', 2, { expiresAt: NOW + 2 * S, usableUntil: NOW + 1_800 }],
    ['expires_in 4e9 s: believed for a week, a real date', 4e9, { expiresAt: NOW + 7 * DAY, usableUntil: NOW + 7 * DAY - 5 * S }],
    ['expires_in 1e300: a week too', 1e300, { expiresAt: NOW + 7 * DAY, usableUntil: NOW + 7 * DAY - 5 * S }]
  ]
  for (const [rule, expiresIn, expected] of rows) {
    t.same(tokenWindow(NOW, believedLifetimeMs(expiresIn)), { obtainedAt: NOW, ...expected }, rule)
  }
  const window = tokenWindow(NOW, 6 * HOUR)
  const usable: Array<[string, number, boolean]> = [
    ['usable just after it was obtained', NOW + 1, true],
    ['usable a millisecond before usableUntil', window.usableUntil - 1, true],
    ['never handed out from usableUntil on (the request must reach Adobe before expiry)', window.usableUntil, false],
    ['never handed out past its expiry', window.expiresAt + 1, false]
  ]
  for (const [rule, now, expected] of usable) t.equal(isUsable(window, now), expected, rule)
  t.equal(isUsable(undefined, NOW), false, 'no token, nothing usable')
})

t.test('refresh: at about two thirds of the lifetime, jittered, never later than the margin before expiry, within [1 s, 24 h]', async (t) => {
  const rows: Array<[string, { lifetimeMs: number, ageMs?: number, random: number, marginMs?: number }, number]> = [
    ['6 h token, no jitter drawn: at two thirds, 4 h', { lifetimeMs: 6 * HOUR, random: 0 }, 4 * HOUR],
    ['6 h token, the most jitter: 10% earlier (replicas spread out)', { lifetimeMs: 6 * HOUR, random: 1 }, 4 * HOUR * 0.9],
    ['a token from the fleet, 1 h old: its refresh is due that much sooner', { lifetimeMs: 6 * HOUR, ageMs: HOUR, random: 0 }, 3 * HOUR],
    ['a token from the fleet older than its refresh point: in a second, not at once', { lifetimeMs: 6 * HOUR, ageMs: 5 * HOUR, random: 0 }, S],
    ['a 1 s token: not sooner than a second (Adobe allows about one call per second)', { lifetimeMs: S, random: 0 }, S],
    ['a week-long token: after a day at most', { lifetimeMs: 7 * DAY, random: 0 }, DAY],
    ['a 3 min token with a 2 min margin: the margin is capped at a third of the lifetime', { lifetimeMs: 3 * MIN, marginMs: 2 * MIN, random: 0 }, 2 * MIN],
    ['a NaN lifetime (never from a parsed answer): the floor, not a 1 ms timer', { lifetimeMs: NaN, random: 0 }, S]
  ]
  for (const [rule, { lifetimeMs, ageMs = 0, random, marginMs }, expected] of rows) {
    const settings = marginMs === undefined ? SETTINGS : { ...SETTINGS, refreshMarginMs: marginMs }
    t.equal(refreshDelay(settings, lifetimeMs, ageMs, random), expected, rule)
  }
  for (const lifetimeMs of [3 * MIN, 10 * MIN, HOUR, 6 * HOUR, DAY]) {
    for (const random of [0, 0.5, 1]) {
      const due = refreshDelay(SETTINGS, lifetimeMs, 0, random)
      t.ok(due <= lifetimeMs - SETTINGS.refreshMarginMs, `a ${lifetimeMs / MIN} min token (random ${random}) refreshes at least 60 s before expiry`)
    }
  }
})

t.test('back-off: exponential with full jitter, 1 s base, 60 s cap', async (t) => {
  const rows: Array<[string, number, number, number]> = [
    ['first failure: uniform below the base', 1, 0.5, 500],
    ['second: below twice the base', 2, 0.5, 1_000],
    ['third: below four times the base', 3, 0.5, 2_000],
    ['the tenth: below the cap', 10, 1, 60_000],
    ['the thousandth: no overflow, still below the cap', 1_000, 0.5, 30_000],
    ['a zero draw: a tenth of the base, never an immediate retry', 1, 0, 100]
  ]
  for (const [rule, attempts, random, expected] of rows) t.equal(backoffDelay(SETTINGS, attempts, random), expected, rule)
})

t.test('retry: the back-off, a 429 floor, a slow pace for what only a human can fix, at most an hour', async (t) => {
  const notice = (overrides: Partial<FailureNotice>): FailureNotice => ({ code: 'CMU_PROXY_TOKEN_ENDPOINT_ERROR', detail: 'x', minDelayMs: 0, slow: false, ...overrides })
  const rows: Array<[string, FailureNotice, { attempts?: number, random?: number, retryMaxMs?: number }, number]> = [
    ['a token endpoint error: the back-off', notice({}), { attempts: 2, random: 0.5 }, 1_000],
    ['a 429 without Retry-After: at least a second', notice({ code: 'CMU_PROXY_TOKEN_THROTTLED', minDelayMs: S }), { random: 0 }, S],
    ['a 429 with Retry-After: 30 s: at least that', notice({ code: 'CMU_PROXY_TOKEN_THROTTLED', minDelayMs: 30 * S }), {}, 30 * S],
    ['a Retry-After beyond an hour: an hour (a timer past 2^31-1 ms would fire at once)', notice({ minDelayMs: 4_294_968 * S }), {}, HOUR],
    ['a rejected statement: the slowest pace, whatever the attempt count', notice({ code: 'CMU_PROXY_STATEMENT_REJECTED', slow: true }), { attempts: 1, random: 0 }, 60 * S],
    ['the slowest pace is clamped to an hour too', notice({ slow: true }), { retryMaxMs: 10 * DAY }, HOUR]
  ]
  for (const [rule, failure, { attempts = 1, random = 0.5, retryMaxMs }, expected] of rows) {
    const settings = retryMaxMs === undefined ? SETTINGS : { ...SETTINGS, retryMaxMs }
    t.equal(retryDelay(settings, failure, attempts, random), expected, rule)
  }
  t.equal(TOKEN_LIMITS.maxRetryDelayMs, HOUR)
})

t.test('failure classes: what each failure means for the caller, /readyz and the next attempt', async (t) => {
  const oauth = (error: string): DcrError => new DcrError('oauth', `refused: ${error}`, { oauthError: error, status: 400 })
  const atRegister = (err: unknown): TokenStepFailed => new TokenStepFailed('register', err)
  const atToken = (err: unknown): TokenStepFailed => new TokenStepFailed('token', err)
  const fleetNotice: FailureNotice = { code: 'CMU_PROXY_TOKEN_THROTTLED', detail: 'told by the fleet', minDelayMs: 7_000, slow: false }
  const rows: Array<[string, unknown, boolean, object]> = [
    ['invalid_software_statement at registration: statement rejected, slow', atRegister(oauth('invalid_software_statement')), true, { code: 'CMU_PROXY_STATEMENT_REJECTED', slow: true }],
    ['unapproved_software_statement: statement rejected, slow', atRegister(oauth('unapproved_software_statement')), true, { code: 'CMU_PROXY_STATEMENT_REJECTED', slow: true }],
    ['invalid_request at registration: statement rejected, slow', atRegister(oauth('invalid_request')), true, { code: 'CMU_PROXY_STATEMENT_REJECTED', slow: true }],
    ['invalid_redirect_uri at registration: statement rejected, slow', atRegister(oauth('invalid_redirect_uri')), true, { code: 'CMU_PROXY_STATEMENT_REJECTED', slow: true }],
    ['invalid_request on a token call: a token endpoint error, not the statement', atToken(oauth('invalid_request')), true, { code: 'CMU_PROXY_TOKEN_ENDPOINT_ERROR', slow: false }],
    ['registration unreachable: not registered, backed off', atRegister(new DcrError('unreachable', 'register endpoint unreachable (ECONNREFUSED)')), true, { code: 'CMU_PROXY_NOT_REGISTERED', slow: false, detail: 'registration failed: register endpoint unreachable (ECONNREFUSED)' }],
    ['registration answering 500: not registered', atRegister(new DcrError('http', 'register endpoint answered HTTP 500', { status: 500 })), true, { code: 'CMU_PROXY_NOT_REGISTERED' }],
    ['429 on a token call: throttled, at least a second', atToken(new DcrError('throttled', 'throttled', { status: 429 })), true, { code: 'CMU_PROXY_TOKEN_THROTTLED', minDelayMs: S }],
    ['429 with Retry-After 5 s: throttled, at least 5 s', atToken(new DcrError('throttled', 'throttled', { status: 429, retryAfterMs: 5 * S })), true, { code: 'CMU_PROXY_TOKEN_THROTTLED', minDelayMs: 5 * S }],
    ['429 at registration: throttled too', atRegister(new DcrError('throttled', 'throttled', { status: 429 })), true, { code: 'CMU_PROXY_TOKEN_THROTTLED' }],
    ['invalid_client with a statement (after registering again): client rejected, slow', atToken(oauth('invalid_client')), true, { code: 'CMU_PROXY_CLIENT_REJECTED', slow: true, detail: 'Adobe rejected freshly registered client credentials (invalid_client)' }],
    ['invalid_client with pre-provisioned credentials only: client rejected, says why', atToken(oauth('invalid_client')), false, { code: 'CMU_PROXY_CLIENT_REJECTED', slow: true, detail: /ADOBE_CLIENT_ID\/ADOBE_CLIENT_SECRET .* no software statement/ }],
    ['a registration needed with no statement: client rejected', atRegister(new NoSoftwareStatement()), false, { code: 'CMU_PROXY_CLIENT_REJECTED', slow: true }],
    ['token endpoint unreachable', atToken(new DcrError('unreachable', 'token endpoint unreachable (ETIMEDOUT)')), true, { code: 'CMU_PROXY_TOKEN_ENDPOINT_UNREACHABLE', detail: 'token endpoint unreachable (ETIMEDOUT)' }],
    ['an answer that cannot be trusted', atToken(new DcrError('protocol', 'token answer lacks a usable access_token')), true, { code: 'CMU_PROXY_TOKEN_ENDPOINT_ERROR' }],
    ['the fleet\'s state unreadable with no credentials held: not registered, never a second client', atRegister(new CoordinationUnavailable('the fleet\'s store cannot be read')), true, { code: 'CMU_PROXY_NOT_REGISTERED', detail: 'the fleet\'s store cannot be read', slow: false }],
    ['not a member of the fleet (another key list): not registered, at the slowest pace (an operator must act)', atToken(new CoordinationUnavailable('not a member', true)), true, { code: 'CMU_PROXY_NOT_REGISTERED', slow: true }],
    ['another instance\'s attempt failed: its notice, as told', new FleetAttemptFailed(fleetNotice), true, fleetNotice],
    ['another instance\'s registration failed: its notice, as told', atRegister(new FleetAttemptFailed(fleetNotice)), true, fleetNotice],
    ['anything else: a token endpoint error that names no secret', new Error('boom: secret'), true, { code: 'CMU_PROXY_TOKEN_ENDPOINT_ERROR', detail: 'unexpected failure' }]
  ]
  for (const [rule, err, canRegister, expected] of rows) t.match(classifyFailure(err, canRegister), expected, rule)
})

t.test('invalid_client on a token call, and only that, makes the proxy register again, when a statement allows it', async (t) => {
  const invalidClient = new DcrError('oauth', 'token refused: invalid_client', { oauthError: 'invalid_client', status: 400 })
  const rows: Array<[string, unknown, boolean, boolean]> = [
    ['invalid_client on a token call, statement configured: register again', new TokenStepFailed('token', invalidClient), true, true],
    ['no statement to register with: no', new TokenStepFailed('token', invalidClient), false, false],
    ['invalid_client answered to a registration: no (that would loop)', new TokenStepFailed('register', invalidClient), true, false],
    ['another OAuth error: no', new TokenStepFailed('token', new DcrError('oauth', 'x', { oauthError: 'unauthorized_client' })), true, false],
    ['a throttle: no, never register to get a token', new TokenStepFailed('token', new DcrError('throttled', 'x')), true, false]
  ]
  for (const [rule, err, canRegister, expected] of rows) t.equal(reregistersAfter(err, canRegister), expected, rule)
})

t.test('tokens from the fleet: never an older, refused, replaced or spent one', async (t) => {
  const token = (name: string, expiresAt: number, usableUntil = expiresAt - 5 * S): FleetToken => ({ access_token: name, obtained_at: expiresAt - 6 * HOUR, expires_at: expiresAt, usable_until: usableUntil })
  const replaced = token('old', NOW + HOUR)
  const context = (overrides: Partial<FleetTokenContext>): FleetTokenContext => ({ registering: false, replaced, rejected: undefined, wallNow: NOW, ...overrides })
  const attempt: Array<[string, FleetToken, FleetTokenContext, boolean]> = [
    ['a newer token ends the attempt', token('new', NOW + 6 * HOUR), context({}), true],
    ['with none held, any usable one', token('new', NOW + 6 * HOUR), context({ replaced: undefined }), true],
    ['a registration was asked for: only a token fetched with the new credentials', token('new', NOW + 6 * HOUR), context({ registering: true }), false],
    ['the token being replaced', token('old', NOW + 6 * HOUR), context({}), false],
    ['the token Adobe refused', token('refused', NOW + 6 * HOUR), context({ rejected: 'refused' }), false],
    ['one past its usable life', token('new', NOW + 6 * HOUR, NOW), context({}), false],
    ['one that expires no later than the one it replaces (put back, or replayed)', token('new', NOW + HOUR), context({}), false]
  ]
  for (const [rule, shared, ctx, expected] of attempt) t.equal(acceptableFromFleet(shared, ctx), expected, rule)

  const adopt: Array<[string, FleetToken, FleetToken | undefined, string | undefined, boolean]> = [
    ['none held: taken', token('new', NOW + HOUR), undefined, undefined, true],
    ['outlives the one held: taken', token('new', NOW + 2 * HOUR), replaced, undefined, true],
    ['the same token: not taken again', token('old', NOW + 2 * HOUR), replaced, undefined, false],
    ['expires no later than the one held: kept the one held', token('new', NOW + HOUR), replaced, undefined, false],
    ['the token Adobe refused: never', token('refused', NOW + 2 * HOUR), undefined, 'refused', false],
    ['past its usable life: never', token('new', NOW + 2 * HOUR, NOW), undefined, undefined, false]
  ]
  for (const [rule, shared, held, rejected, expected] of adopt) t.equal(worthAdopting(shared, held, rejected, NOW), expected, rule)
})

t.test('token calls: a burst of five, then one a second (Adobe: 1/s, burst 10)', async (t) => {
  // Each row is one token call, at `at` ms: how long it waits for its turn.
  const rows: Array<[string, number, number]> = [
    ['1st of the burst goes at once', 0, 0],
    ['2nd', 0, 0],
    ['3rd', 0, 0],
    ['4th', 0, 0],
    ['5th', 0, 0],
    ['6th, the burst spent: waits a second', 0, S],
    ['7th, asked as the 6th goes: waits another full second (one a second, not two)', S, S],
    ['8th, half a second after the 7th went: waits the other half', 2.5 * S, 0.5 * S],
    ['9th, after 10 s of quiet: the burst is back', 13 * S, 0],
    ['10th', 13 * S, 0],
    ['11th', 13 * S, 0],
    ['12th', 13 * S, 0],
    ['13th', 13 * S, 0],
    ['14th: quiet refills the burst, never beyond it', 13 * S, S]
  ]
  let bucket: TokenCallBucket = FULL_BUCKET
  for (const [rule, at, expectedWait] of rows) {
    const taken = takeTokenCall(bucket, at)
    t.equal(taken.waitMs, expectedWait, rule)
    bucket = taken.bucket
  }
})
