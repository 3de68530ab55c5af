// The store's idea of "Redis is there" (src/store/redis-health.ts), on an
// injected clock: down takes a span of unanswered time, one line per outage
// start and end; and the sealed store's one line per run of notifications
// that do not open.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { stateKey } from '../../src/store/encryption-keys.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { RedisHealth } from '../../src/store/redis-health.js'
import { SealedStore } from '../../src/store/sealed-store.js'
import { capturedLogger, eventually } from '../helpers/app.js'

const TIMEOUT = { reason: 'no answer within 100 ms', configuration: false }

function healthAt (): { health: RedisHealth, clock: { now: number }, lines: string[] } {
  const clock = { now: 0 }
  const { logger, lines } = capturedLogger('debug')
  const health = new RedisHealth({ target: 'redis://r:6379', commandTimeoutMs: 100, logger, now: () => clock.now })
  return { health, clock, lines }
}

t.test('down takes timeouts over 3 × the command timeout with no answer; any answer ends it', async (t) => {
  const { health, clock } = healthAt()
  health.connected()
  t.equal(health.up, true)
  const rows: Array<[string, () => void, boolean]> = [
    ['a burst of timeouts at one instant', () => { clock.now = 100; for (let i = 0; i < 20; i++) health.timedOut(0, TIMEOUT) }, true],
    ['a timeout 200 ms into the silence', () => { clock.now = 200; health.timedOut(100, TIMEOUT) }, true],
    ['one 300 ms into it', () => { clock.now = 300; health.timedOut(200, TIMEOUT) }, false],
    ['an error reply is an answer', () => { clock.now = 310; health.answered() }, true],
    ['a timeout after a long idle time counts from its own start', () => { clock.now = 10_000; health.timedOut(9_900, TIMEOUT) }, true]
  ]
  for (const [name, step, up] of rows) {
    step()
    t.equal(health.up, up, name)
    t.equal(health.refusal() === undefined, up, `${name}: refused at once while down`)
  }
})

t.test('a hung connection is made anew once per 10 × the command timeout of silence', async (t) => {
  const { health, clock, lines } = healthAt()
  health.connected()
  t.equal(health.reconnectDue(), false, 'not while answering')
  for (const at of [100, 200, 300]) { clock.now = at; health.timedOut(at - 100, TIMEOUT) }
  t.equal(health.hung, true)
  const due: number[] = []
  for (clock.now = 300; clock.now <= 3_000; clock.now += 100) if (health.reconnectDue()) due.push(clock.now)
  t.same(due, [1_000, 2_000, 3_000])
  t.equal(lines.filter((l) => /connecting again/.test(l)).length, 3, 'each at debug level')
  clock.now = 3_000
  health.connected()
  t.equal(health.up, true)
  t.match(JSON.parse(lines.at(-1) ?? '{}'), { msg: 'redis available again', failed: 1, reconnects: 3, unavailableMs: 2_700 })
})

t.test('one warning per outage, one line when it ends; the first connection says "connected"', async (t) => {
  const { health, clock, lines } = healthAt()
  const ups: number[] = []
  const stop = health.onUp(() => { ups.push(clock.now) })
  health.lost({ reason: 'ECONNREFUSED', configuration: false })
  health.lost({ reason: 'ECONNREFUSED', configuration: false })
  health.refusedOne({ reason: 'The client is offline', configuration: false })
  clock.now = 50
  health.connected()
  clock.now = 100
  health.lost({ reason: 'ECONNRESET', configuration: false })
  health.failed({ reason: 'Socket closed unexpectedly', configuration: false })
  for (let i = 0; i < 5; i++) health.refusedOne(undefined)
  clock.now = 400
  health.connected()
  stop()
  health.lost({ reason: 'ECONNRESET', configuration: false })
  health.connected()
  t.same(ups, [50, 400], 'listeners run on every return, until stopped')
  const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  t.match(logged, [
    { level: 40, msg: 'redis unavailable; serving from local state and retrying', reason: 'ECONNREFUSED', redis: 'redis://r:6379' },
    { level: 30, msg: 'redis connected', refused: 1, failed: 0, unavailableMs: 50 },
    { level: 40, msg: 'redis unavailable; serving from local state and retrying', reason: 'ECONNRESET' },
    { level: 30, msg: 'redis available again', refused: 5, failed: 1, unavailableMs: 300 },
    { level: 40 },
    { level: 30, msg: 'redis available again' }
  ])
  t.equal(logged.length, 6)
  t.match({ outages: health.outages, returns: health.returns, refused: health.refused }, { outages: 3, returns: 2, refused: 6 })
  t.same(health.lastProblem, { reason: 'ECONNRESET', configuration: false })
})

t.test('settings Redis refuses (a Cluster node without REDIS_CLUSTER): down for good, one error line, waiting is pointless', async (t) => {
  const { health, lines } = healthAt()
  health.connected()
  const problem = { reason: 'REDIS_URL is a node of a Redis Cluster', configuration: true }
  health.misconfigured(problem)
  health.misconfigured(problem)
  health.connected()
  t.equal(health.up, false)
  t.equal(health.needsOperator, true)
  t.equal(health.refusal(), problem.reason)
  t.equal(lines.filter((l) => /"level":50/.test(l)).length, 1)
  health.close()
  t.equal(health.refusal(), 'the store is closed')
})

t.test('sealed: notifications that do not open are logged once per run, then counted, and the run\'s end says how many', async (t) => {
  const memory = new MemoryStore()
  const { logger, lines } = capturedLogger()
  const fleet = new SealedStore(memory, [stateKey(randomBytes(32))], { logger, quietAfterMs: 100 })
  const stranger = new SealedStore(memory, [stateKey(randomBytes(32))])
  t.teardown(async () => { await fleet.close() })
  const seen: string[] = []
  await fleet.subscribe('events', (m) => { seen.push(m.toString()) })
  for (let i = 0; i < 5; i++) await stranger.publish('events', Buffer.from(`wrong-key-${i}`))
  await fleet.publish('events', Buffer.from('fleet'))
  t.ok(await eventually(() => lines.some((l) => /no more state notifications/.test(l)), 2_000), 'the run ended')
  t.same(seen, ['fleet'], 'only what opens is delivered')
  const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  t.match(logged, [
    { level: 40, code: 'CMU_PROXY_STATE_UNSEALABLE', reason: 'unknown-key', channel: 'events' },
    { level: 30, dropped: 5, reasons: ['unknown-key'] }
  ], 'one warning and one summary, not one line per notification')
  t.equal(logged.length, 2)
  t.equal(fleet.stats().unsealFailures, 5, 'every one counted')
  t.notOk(lines.join('\n').includes('wrong-key'), 'never the content')
})
