// Issue 20, first target: a cold fleet of six on a busy host. Three
// busy-loop processes compete for the CPU with the six members (in this one
// process, so every member's event loop stalls too) while they start with
// empty credentials files and take 2 × 200 requests over 5 reports each.
// Redis's timeouts are the defaults: a stalled loop must not be taken for a
// slow Redis (D1), nor a late lock reply leave others waiting (D2).
import t from 'tap'
import { fleetOf, statuses, urlOf } from '../helpers/fleet.js'
import { call, startSandbox } from '../helpers/app.js'
import { startChild } from '../helpers/processes.js'
import { startRedisServer } from '../helpers/redis-server.js'

const MEMBERS = 6
const REQUESTS = 200
const REPORTS = 5

t.test('a cold fleet of 6 beside 3 busy loops: 1 registration, 1 token call, at most 12 Adobe calls for 10 reports, no failure', async (t) => {
  for (let i = 0; i < 3; i++) startChild(t, process.execPath, ['-e', 'for (;;) {}'], { name: 'busy loop', stdout: 'ignore' })
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const fleet = await fleetOf(t, sandbox, redis, MEMBERS, { CACHE_ENABLED: 'true', REDIS_COMMAND_TIMEOUT_MS: '250', REDIS_LOCK_TTL_MS: '5000' })
  for (const round of [0, 1]) {
    const answers = await Promise.all(Array.from({ length: REQUESTS }, async (_, i) =>
      await call(urlOf(fleet, i), `/cmu/v2/year/month?limit=${round * REPORTS + (i % REPORTS) + 1}`)))
    t.same(statuses(answers), [200], `round ${round + 1}: ${REQUESTS} requests, every one answered`)
  }
  t.equal(sandbox.calls.register, 1, 'one registration')
  t.equal(sandbox.calls.token, 1, 'one token call')
  t.ok(sandbox.calls.cmu <= 12, `${sandbox.calls.cmu} Adobe calls for ${2 * REPORTS} reports`)
})
