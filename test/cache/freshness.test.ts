// The freshness rules on their own: pure functions, one table row per rule.
import t from 'tap'
import { ageSeconds, entryTimes, freshnessLeftSeconds, isFresh, mayServeOnError, mayServeWhileRevalidating, revalidateWindowSeconds, scheduleSeconds } from '../../src/cache/freshness.js'

const NOW = Date.parse('2026-11-27T10:00:00Z')
const DAY = 86_400

t.test('the report schedule: the finest time dimension, capped; a report that ended before the last recompute keeps the cap', async (t) => {
  const rows: Array<[string, string, number, number]> = [
    ['/v2/year/month/day/hour/minute', '', DAY * 2, 60],
    ['/v2/year/month/day/hour', '', DAY * 2, 3600],
    ['/v2/year/month/day.csv', '', DAY * 2, 3 * 3600],
    ['/v2/year/month', '', DAY * 2, 2 * DAY],
    ['/v2/tenant/mvpd', '', DAY * 2, DAY],
    ['/v2/year/month/day', '', 600, 600],
    ['/v2/year/month/day/hour/minute', 'start=2026-01-01&end=2026-01-01T01:00', 600, 600],
    ['/v2/year/month/day/hour/minute', 'end=2026-11-27T09:59:30', 600, 60],
    ['/v2/year', 'end=%E0%A4%A', 600, 600]
  ]
  for (const [path, query, max, expected] of rows) t.equal(scheduleSeconds({ path, query }, NOW, max), expected, `${path}?${query} (cap ${max})`)
})

t.test('the stale-while-revalidate window: the setting, or 10% of the lifetime and at least 30 s', async (t) => {
  const rows: Array<[number, number | undefined, number]> = [[3600, undefined, 360], [60, undefined, 30], [3600, 0, 0], [3600, 5, 5]]
  for (const [lifetime, setting, expected] of rows) t.equal(revalidateWindowSeconds(lifetime, setting), expected, `${lifetime} s, setting ${String(setting)}`)
})

t.test('an entry is fresh, then served while revalidating, then only on error, then dead', async (t) => {
  const entry = entryTimes(0, 60, 30, 600)
  const rows: Array<[number, boolean, boolean, boolean, number, number]> = [
    // at (s), fresh, while revalidating, on error, Age, ttl
    [0, true, true, true, 0, 60],
    [59.9, true, true, true, 59, 0],
    [60, false, true, true, 60, 0],
    [89.9, false, true, true, 89, -29],
    [90, false, false, true, 90, -30],
    [659.9, false, false, true, 659, -599],
    [660, false, false, false, 660, -600]
  ]
  for (const [at, fresh, revalidating, onError, age, ttl] of rows) {
    const now = at * 1000
    t.same([isFresh(entry, now), mayServeWhileRevalidating(entry, now), mayServeOnError(entry, now), ageSeconds(entry, now), freshnessLeftSeconds(entry, now)], [fresh, revalidating, onError, age, ttl], `at ${at} s`)
  }
})
