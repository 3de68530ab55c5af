import t from 'tap'
import { clampDelay, monotonicNow } from '../../src/kernel/clock.js'

t.test('monotonicNow reads as epoch milliseconds and never goes back', async (t) => {
  const first = monotonicNow()
  t.ok(Math.abs(first - Date.now()) < 1_000, 'close to the wall clock while it has not stepped')
  let previous = first
  for (let i = 0; i < 1_000; i++) {
    const now = monotonicNow()
    if (now < previous) t.fail(`went back from ${previous} to ${now}`)
    previous = now
  }
  t.ok(previous >= first)
})

t.test('clampDelay keeps a delay within its bounds, NaN included', async (t) => {
  t.equal(clampDelay(5, 1, 10), 5)
  t.equal(clampDelay(-5, 1, 10), 1)
  t.equal(clampDelay(Infinity, 1, 10), 10)
  t.equal(clampDelay(Number.NaN, 1, 10), 1, 'NaN would make setTimeout fire at once')
})
