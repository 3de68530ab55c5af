// The retry rules and budget on their own, with a pinned clock: which
// failures qualify, how the budget slides, how long the pause is.
import t from 'tap'
import { RetryBudget, RetryPolicy } from '../../src/upstream/retry-policy.js'

const error = (code: string): Error => Object.assign(new Error(code), { code })

t.test('only connections that failed before an answer qualify', async (t) => {
  const policy = new RetryPolicy()
  for (const code of ['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'ECONNREFUSED']) t.ok(policy.retryToken(error(code)), code)
  for (const code of ['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_ABORTED', 'ENOTFOUND', 'CMU_PROXY_CALLER_GONE']) {
    t.notOk(policy.retryReport(error(code), 0), code)
  }
  t.notOk(policy.retryToken(new Error('no code')))
  t.notOk(policy.retryToken(undefined))
  t.same(policy.retries, { reset: 2, closed: 1, refused: 1 })
  t.equal(policy.budgetExhausted, 0)
})

t.test('the budget: at least the floor, then a share of the requests in the window', async (t) => {
  const budget = new RetryBudget(0.1, 3, 10_000)
  t.same([budget.spend(0), budget.spend(1), budget.spend(2), budget.spend(3)], [true, true, true, false], 'the floor with no traffic')
  for (let i = 0; i < 50; i++) budget.record(100)
  t.ok(budget.spend(200), '5 of 50 allowed: a fourth')
  t.ok(budget.spend(200))
  t.notOk(budget.spend(200), 'the sixth is not')
  // 9.9 s later the first slot's retries and requests have left the window.
  t.notOk(budget.spend(9_500), 'still inside the window')
  t.ok(budget.spend(10_100), 'the first second left the window: its three retries are forgotten')
})

t.test('the window forgets everything after a quiet spell longer than itself', async (t) => {
  const budget = new RetryBudget(0.1, 1, 1_000)
  for (let i = 0; i < 100; i++) budget.record(0)
  for (let i = 0; i < 10; i++) t.ok(budget.spend(0))
  t.notOk(budget.spend(0))
  t.ok(budget.spend(60_000), 'the floor again')
  t.notOk(budget.spend(60_000), 'and only the floor')
})

t.test('a spent budget is counted, not retried', async (t) => {
  const policy = new RetryPolicy({ budgetFloor: 1, budgetRatio: 0 })
  t.ok(policy.retryReport(error('ECONNRESET'), 0))
  t.notOk(policy.retryReport(error('ECONNRESET'), 1))
  t.notOk(policy.retryReport(error('UND_ERR_HEADERS_TIMEOUT'), 2), 'a timeout does not touch the budget')
  t.same(policy.retries, { reset: 1, closed: 0, refused: 0 })
  t.equal(policy.budgetExhausted, 1)
  t.ok(policy.retryToken(error('ECONNRESET')), 'token calls are outside the budget')
})

t.test('the pause is jittered below 100 ms', async (t) => {
  // What pause() asks the timer for: the wall clock of a loaded machine (issue 18) says more about the machine than the jitter.
  const original = globalThis.setTimeout
  t.teardown(() => { globalThis.setTimeout = original })
  for (const [random, expected] of [[0, 0], [0.5, 50], [0.999, 99.9]] as const) {
    const asked: unknown[] = []
    globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => { asked.push(args[1]); return original(...args) }) as typeof setTimeout
    const pause = new RetryPolicy({ random: () => random }).pause()
    globalThis.setTimeout = original
    await pause
    t.same(asked, [expected], `random ${random}: a pause of ${expected} ms`)
  }
})
