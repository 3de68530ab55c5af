// The freshness and validation rules on their own: pure functions, one
// table per RFC clause, one row per case.
import t from 'tap'
import { ageSeconds, boundedWindowSeconds, correctedInitialAgeSeconds, entryTimes, explicitLifetimeSeconds, freshnessLeftSeconds, httpDate, isFresh, isKept, mayServeOnError, mayServeWhileRevalidating, responseDirectives, revalidateWindowSeconds, scheduleSeconds, type ExchangeTimes, type FreshnessSettings } from '../../src/cache/freshness.js'
import { MAX_ENTRY_HEADER_BYTES, headerBytes, oversizedHeaders, refusedStorage, requestDirectives, staleOnArrival } from '../../src/cache/cache-policy.js'
import { confirms, notModifiedFor, notModifiedHeaders, updatedHeaders, validatorsOf } from '../../src/cache/validation.js'

const NOW = Date.parse('2026-11-27T10:00:00Z')
const DATE = new Date(NOW).toUTCString()
const DAY = 86_400
const AT_NOW: ExchangeTimes = { requestedAt: NOW, respondedAt: NOW, respondedAtWall: NOW }
const SETTINGS: FreshnessSettings = { ttlMaxSeconds: 2 * DAY, staleIfErrorSeconds: DAY, staleWhileRevalidateSeconds: undefined, ignoreOriginFreshness: false }

t.test('the report schedule (the heuristic, RFC 9111 §4.2.2): the finest time dimension, capped; a report that ended before the last recompute keeps the cap', async (t) => {
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

t.test('§5.2: Cache-Control response directives', async (t) => {
  const rows: Array<[string | string[] | undefined, Partial<ReturnType<typeof responseDirectives>>]> = [
    [undefined, { noStore: false, noCache: false, maxAge: undefined }],
    ['max-age=60', { maxAge: 60 }],
    ['MAX-AGE=60, Public', { maxAge: 60 }],
    ['max-age="60"', { maxAge: 60 }],
    ['max-age=60, max-age=10', { maxAge: 60 }],
    [['max-age=60', 's-maxage=5'], { maxAge: 60, sMaxage: 5 }],
    // Present but invalid is the most restrictive reading (§4.2.1), never "absent" (which would let the heuristic decide).
    ['max-age=abc', { maxAge: 0 }],
    ['max-age=-1', { maxAge: 0 }],
    ['max-age=1.5', { maxAge: 0 }],
    ['max-age', { maxAge: 0 }],
    ['max-age=, public', { maxAge: 0 }],
    ['max-age=abc, max-age=60', { maxAge: 0 }],
    ['s-maxage=soon, max-age=60', { sMaxage: 0, maxAge: 60, mustRevalidate: true }],
    ['s-maxage=60', { sMaxage: 60, mustRevalidate: true }],
    ['stale-while-revalidate=-1, stale-if-error=x', { staleWhileRevalidate: 0, staleIfError: 0 }],
    ['max-age=99999999999', { maxAge: 2_147_483_648 }],
    ['no-store', { noStore: true }],
    ['private="set-cookie"', { private: true }],
    ['no-cache', { noCache: true }],
    ['no-cache="set-cookie", max-age=10000', { noCache: true, maxAge: 10000 }],
    ['must-revalidate', { mustRevalidate: true }],
    ['proxy-revalidate', { mustRevalidate: true }],
    ['stale-while-revalidate=30, stale-if-error=600', { staleWhileRevalidate: 30, staleIfError: 600 }]
  ]
  for (const [value, expected] of rows) t.match(responseDirectives(value), expected, JSON.stringify(value))
})

t.test('RFC 9110 §5.6.7: HTTP dates in their three forms, and nothing else', async (t) => {
  const rows: Array<[string, number | undefined]> = [
    ['Sun, 06 Nov 1994 08:49:37 GMT', Date.UTC(1994, 10, 6, 8, 49, 37)],
    ['Sunday, 06-Nov-94 08:49:37 GMT', Date.UTC(1994, 10, 6, 8, 49, 37)],
    ['Sun Nov  6 08:49:37 1994', Date.UTC(1994, 10, 6, 8, 49, 37)],
    ['0', undefined],
    ['-1', undefined],
    ['2026-11-27', undefined],
    ['tomorrow', undefined]
  ]
  for (const [value, expected] of rows) t.equal(httpDate(value), expected, value)
})

t.test('§4.2.1: explicit freshness is s-maxage, else max-age, else Expires − Date; an invalid Expires is already past', async (t) => {
  const at = (offsetSeconds: number): string => new Date(NOW + offsetSeconds * 1000).toUTCString()
  const rows: Array<[Record<string, string>, number | undefined]> = [
    [{}, undefined],
    [{ 'cache-control': 'max-age=60' }, 60],
    [{ 'cache-control': 's-maxage=5, max-age=60' }, 5],
    [{ 'cache-control': 'max-age=60', expires: at(3600), date: DATE }, 60],
    [{ expires: at(3600), date: DATE }, 3600],
    [{ expires: at(3600), date: at(600) }, 3000],
    [{ expires: at(3600) }, 3600],
    [{ expires: at(-60), date: DATE }, 0],
    [{ expires: '0', date: DATE }, 0],
    [{ 'cache-control': 'no-cache' }, undefined],
    [{ 'cache-control': 'max-age=abc' }, 0],
    [{ 'cache-control': 's-maxage=1.5, max-age=600' }, 0],
    [{ 'cache-control': 'max-age=-1', expires: at(3600), date: DATE }, 0]
  ]
  for (const [headers, expected] of rows) t.equal(explicitLifetimeSeconds(headers, responseDirectives(headers['cache-control']), NOW), expected, JSON.stringify(headers))
})

t.test('§4.2.3: the corrected initial age is Age plus the response delay (the apparent age, a measure of clock skew, left out)', async (t) => {
  const rows: Array<[Record<string, string>, ExchangeTimes, number]> = [
    [{}, AT_NOW, 0],
    [{}, { requestedAt: NOW - 2_000, respondedAt: NOW, respondedAtWall: NOW }, 2],
    [{ age: '30' }, AT_NOW, 30],
    [{ age: '30' }, { requestedAt: NOW - 1_000, respondedAt: NOW, respondedAtWall: NOW }, 31],
    [{ date: new Date(NOW - 100_000).toUTCString() }, AT_NOW, 0],
    [{ date: new Date(NOW - 100_000).toUTCString(), age: '2000' }, AT_NOW, 2000],
    [{ date: new Date(NOW + 100_000).toUTCString() }, AT_NOW, 0],
    [{ age: 'soon' }, AT_NOW, 0],
    [{ age: '-5' }, AT_NOW, 0],
    [{ age: '30, 40' }, AT_NOW, 30],
    [{ age: '99999999999' }, AT_NOW, 2_147_483_648],
    [{ age: '2147483648' }, { requestedAt: NOW - 10_000, respondedAt: NOW, respondedAtWall: NOW }, 2_147_483_648]
  ]
  for (const [headers, times, expected] of rows) t.equal(correctedInitialAgeSeconds(headers, times), expected, JSON.stringify(headers))
})

t.test('stale windows: ours by default, the origin\'s (RFC 5861) within ours', async (t) => {
  t.same([revalidateWindowSeconds(3600, undefined), revalidateWindowSeconds(60, undefined), revalidateWindowSeconds(3600, 0), revalidateWindowSeconds(3600, 5)], [360, 30, 0, 5])
  t.same([boundedWindowSeconds(undefined, 600), boundedWindowSeconds(60, 600), boundedWindowSeconds(6000, 600), boundedWindowSeconds(60, 0)], [600, 60, 600, 0])
})

t.test('§4.2: the instants an answer is stored under', async (t) => {
  // Instants in seconds from the arrival: fresh until, served while revalidating until, served on error until.
  interface Row { headers: Record<string, string>, settings?: Partial<FreshnessSettings>, fresh: number, revalidate: number, onError: number, noCache?: boolean, why: string }
  const rows: Row[] = [
    { headers: {}, fresh: 3600, revalidate: 3960, onError: 3600 + DAY, why: 'no explicit freshness: the schedule (§4.2.2)' },
    { headers: { 'cache-control': 'max-age=1' }, fresh: 1, revalidate: 31, onError: 1 + DAY, why: 'max-age=1 is kept for 1 s, not the schedule' },
    { headers: { 'cache-control': 'max-age=86400' }, fresh: 86400, revalidate: 95040, onError: 86400 + DAY, why: 'max-age=86400 outlives the 1 h schedule' },
    { headers: { 'cache-control': 'max-age=999999' }, fresh: 2 * DAY, revalidate: 190080, onError: 3 * DAY, why: 'capped by CACHE_TTL_MAX_SECONDS' },
    { headers: { 'cache-control': 'max-age=1500', age: '2000' }, fresh: -500, revalidate: -350, onError: DAY - 500, why: 'already stale on arrival (Age past max-age)' },
    { headers: { 'cache-control': 'max-age=600, age=x', age: '30' }, fresh: 570, revalidate: 630, onError: DAY + 570, why: 'Age counts against the lifetime' },
    { headers: { 'cache-control': 'max-age=10000, no-cache' }, fresh: 10000, revalidate: 0, onError: 0, noCache: true, why: 'no-cache: never served without validation (§5.2.2.4): both windows closed at arrival' },
    { headers: { 'cache-control': 'max-age=abc' }, fresh: 0, revalidate: 30, onError: DAY, why: 'an invalid max-age is stale at once, not the schedule' },
    { headers: { 'cache-control': 'max-age=abc, max-age=600' }, fresh: 0, revalidate: 30, onError: DAY, why: 'the first of a repeated directive wins, even when invalid' },
    { headers: { 'cache-control': 's-maxage=x, max-age=600' }, fresh: 0, revalidate: 0, onError: 0, why: 'an invalid s-maxage: stale at once, and never served stale (proxy-revalidate)' },
    { headers: { 'cache-control': 'max-age=60, must-revalidate' }, fresh: 60, revalidate: 60, onError: 60, why: 'must-revalidate: never stale (§4.2.4)' },
    { headers: { 'cache-control': 'max-age=60, proxy-revalidate' }, fresh: 60, revalidate: 60, onError: 60, why: 'proxy-revalidate: never stale' },
    { headers: { 'cache-control': 's-maxage=60' }, fresh: 60, revalidate: 60, onError: 60, why: 's-maxage implies proxy-revalidate (§5.2.2.10)' },
    { headers: { 'cache-control': 'max-age=600, stale-while-revalidate=5, stale-if-error=20' }, fresh: 600, revalidate: 605, onError: 620, why: "the origin's windows when shorter" },
    { headers: { 'cache-control': 'max-age=600, stale-if-error=999999' }, fresh: 600, revalidate: 660, onError: 600 + DAY, why: 'bounded by ours' },
    { headers: { 'cache-control': 'max-age=600, stale-while-revalidate=30' }, settings: { staleWhileRevalidateSeconds: 0 }, fresh: 600, revalidate: 600, onError: 600 + DAY, why: 'our 0 turns the origin\'s off' },
    { headers: { 'cache-control': 'no-cache, max-age=5, must-revalidate' }, settings: { ignoreOriginFreshness: true }, fresh: 3600, revalidate: 3960, onError: 3600 + DAY, why: 'CACHE_IGNORE_ORIGIN_FRESHNESS: the schedule, whatever the origin says' },
    { headers: { expires: new Date(NOW + 120_000).toUTCString(), date: DATE }, fresh: 120, revalidate: 150, onError: 120 + DAY, why: 'Expires − Date' }
  ]
  for (const row of rows) {
    const times = entryTimes(row.headers, 3600, AT_NOW, { ...SETTINGS, ...row.settings })
    const seconds = (at: number): number => (at - NOW) / 1000
    t.same({ fresh: seconds(times.freshUntil), noCache: times.noCache }, { fresh: row.fresh, noCache: row.noCache ?? false }, `${row.why}: lifetime`)
    t.equal(seconds(times.revalidateUntil), row.revalidate, `${row.why}: stale-while-revalidate`)
    t.equal(seconds(times.errorUntil), row.onError, `${row.why}: stale-if-error`)
    t.ok(times.staleUntil >= Math.max(times.revalidateUntil, times.errorUntil), `${row.why}: kept at least as long as it may be served`)
  }
})

t.test('an entry is fresh, then served while revalidating, then only on error, then dead; a no-cache one is never served unvalidated', async (t) => {
  const times = (headers: Record<string, string>): ReturnType<typeof entryTimes> => entryTimes(headers, 60, { requestedAt: 0, respondedAt: 0, respondedAtWall: 0 }, { ...SETTINGS, staleIfErrorSeconds: 600, staleWhileRevalidateSeconds: 30 })
  const entry = times({ age: '0' })
  const rows: Array<[number, boolean, boolean, boolean, boolean, number, number]> = [
    // at (s), fresh, while revalidating, on error, kept, Age, ttl
    [0, true, true, true, true, 0, 60],
    [59.9, true, true, true, true, 59, 0],
    [60, false, true, true, true, 60, 0],
    [89.9, false, true, true, true, 89, -29],
    [90, false, false, true, true, 90, -30],
    [659.9, false, false, true, true, 659, -599],
    [660, false, false, false, false, 660, -600]
  ]
  for (const [at, fresh, revalidating, onError, kept, age, ttl] of rows) {
    const now = at * 1000
    t.same([isFresh(entry, now), mayServeWhileRevalidating(entry, now), mayServeOnError(entry, now), isKept(entry, now), ageSeconds(entry, now), freshnessLeftSeconds(entry, now)], [fresh, revalidating, onError, kept, age, ttl], `at ${at} s`)
  }
  const noCache = times({ 'cache-control': 'no-cache' })
  t.same([isFresh(noCache, 0), mayServeWhileRevalidating(noCache, 0), mayServeOnError(noCache, 0), isKept(noCache, 0)], [false, false, false, true], 'no-cache: kept to be revalidated, never served as it is')
  t.equal(ageSeconds(times({ age: '30' }), 5_000), 35, 'Age: the initial age plus the resident time')
  t.equal(ageSeconds(times({ age: '2147483648' }), 86_400_000), 2_147_483_648, 'Age never past 2^31 (§1.2.2)')
})

t.test('§3: what may be stored at all, and what is not worth storing', async (t) => {
  const rows: Array<[Record<string, string>, string | undefined]> = [
    [{}, undefined],
    [{ 'cache-control': 'no-store' }, 'no-store'],
    [{ 'cache-control': 'max-age=60, private' }, 'private'],
    [{ 'cache-control': 'max-age=60, PRIVATE="x"' }, 'private'],
    [{ 'set-cookie': 'a=b' }, 'set-cookie'],
    [{ vary: 'Accept, User-Agent' }, 'vary'],
    [{ vary: '*' }, 'vary'],
    [{ vary: 'Accept, Accept-Encoding, Accept-Language' }, undefined],
    [{ 'cache-control': 'no-cache' }, undefined]
  ]
  for (const [headers, expected] of rows) t.equal(refusedStorage(headers), expected, JSON.stringify(headers))
  const entry = (headers: Record<string, string>): ReturnType<typeof entryTimes> => entryTimes(headers, 3600, AT_NOW, SETTINGS)
  t.equal(staleOnArrival(entry({ 'cache-control': 'max-age=0' }), false, NOW), 'stale-on-arrival')
  t.equal(staleOnArrival(entry({ 'cache-control': 'max-age=0' }), true, NOW), undefined, 'with a validator it is kept to be revalidated')
  t.equal(staleOnArrival(entry({ 'cache-control': 'no-cache' }), true, NOW), 'no-cache')
  t.equal(staleOnArrival(entry({}), false, NOW), undefined)
})

t.test('RFC 9110 §13.1, RFC 9111 §4.3.2: a conditional request answered from a stored answer', async (t) => {
  const stored = { etag: '"v1"', 'last-modified': 'Tue, 24 Nov 2026 10:00:00 GMT', 'content-type': 'text/csv', 'cache-control': 'max-age=60', vary: 'Accept' }
  const rows: Array<[Record<string, string>, boolean]> = [
    [{ 'if-none-match': '"v1"' }, true],
    [{ 'if-none-match': 'W/"v1"' }, true],
    [{ 'if-none-match': '"v0", "v1"' }, true],
    [{ 'if-none-match': '*' }, true],
    [{ 'if-none-match': '"v2"' }, false],
    [{ 'if-none-match': '"v2"', 'if-modified-since': 'Tue, 24 Nov 2026 11:00:00 GMT' }, false],
    [{ 'if-modified-since': 'Tue, 24 Nov 2026 10:00:00 GMT' }, true],
    [{ 'if-modified-since': 'Tue, 24 Nov 2026 09:59:59 GMT' }, false],
    [{ 'if-modified-since': 'yesterday' }, false]
  ]
  for (const [request, expected] of rows) t.equal(notModifiedFor(request, stored), expected, JSON.stringify(request))
  t.equal(notModifiedFor({ 'if-none-match': '"v1"' }, { 'content-type': 'text/csv' }), false, 'no ETag stored: no match')
  t.same(notModifiedHeaders(stored), { 'cache-control': 'max-age=60', etag: '"v1"', vary: 'Accept' }, 'a 304 carries the fields of RFC 9110 §15.4.5')
  t.same(notModifiedHeaders({ ...stored, date: DATE }), { 'cache-control': 'max-age=60', date: DATE, etag: '"v1"', vary: 'Accept' }, "Date too: Adobe's, as stored")
  t.same(validatorsOf(stored), { etag: '"v1"', lastModified: 'Tue, 24 Nov 2026 10:00:00 GMT' })
  t.equal(validatorsOf({ 'content-type': 'text/csv' }), undefined)
  t.same(updatedHeaders(stored, { 'cache-control': 'max-age=600', etag: '"v1"', 'content-length': '0', 'content-type': 'text/plain' }), { ...stored, 'cache-control': 'max-age=600' }, '§4.3.4: a 304 updates the stored fields, never those of the body')
})

t.test('RFC 9111 §4.3.4: a 304 updates the stored answer only when its validator is that answer\'s', async (t) => {
  const LM = 'Tue, 24 Nov 2026 10:00:00 GMT'
  const rows: Array<[Record<string, string>, Record<string, string>, boolean, string]> = [
    [{ etag: '"v1"', 'last-modified': LM }, { etag: '"v1"' }, true, 'the same strong ETag'],
    [{ etag: '"v1"', 'last-modified': LM }, { etag: 'W/"v1"' }, true, 'a weak ETag that matches weakly'],
    [{ etag: '"v1"', 'last-modified': LM }, { etag: '"v2"' }, false, 'another strong ETag'],
    [{ etag: '"v1"', 'last-modified': LM }, { etag: 'W/"v2"' }, false, 'another weak ETag'],
    [{ etag: '"v1"', 'last-modified': LM }, { etag: '"v1"', 'last-modified': 'Wed, 25 Nov 2026 10:00:00 GMT' }, true, 'the strong ETag decides'],
    [{ etag: 'W/"v1"' }, { etag: '"v1"' }, false, 'a strong ETag is not a weak stored one (strong comparison)'],
    [{ etag: 'W/"v1"' }, { etag: 'W/"v1"' }, true, 'weak and weak'],
    [{ 'last-modified': LM }, { etag: '"v1"' }, false, 'an ETag where none was stored'],
    [{ 'last-modified': LM }, { 'last-modified': LM }, true, 'the same Last-Modified'],
    [{ 'last-modified': LM }, { 'last-modified': 'Tuesday, 24-Nov-26 10:00:00 GMT' }, true, 'the same date in another form'],
    [{ 'last-modified': LM }, { 'last-modified': 'Wed, 25 Nov 2026 10:00:00 GMT' }, false, 'another Last-Modified'],
    [{ etag: '"v1"' }, { 'last-modified': LM }, false, 'a Last-Modified where none was stored'],
    [{ etag: '"v1"' }, {}, true, 'no validator at all: the answer to the one stored answer asked about']
  ]
  for (const [stored, notModified, expected, why] of rows) t.equal(confirms(stored, notModified), expected, why)
})

t.test('RFC 9111 §5.2.1: what a caller\'s request asks of the cache', async (t) => {
  const rows: Array<[Record<string, string>, { noCache: boolean, noStore: boolean }]> = [
    [{}, { noCache: false, noStore: false }],
    [{ 'cache-control': 'no-cache' }, { noCache: true, noStore: false }],
    [{ 'cache-control': 'No-Cache, max-stale=5' }, { noCache: true, noStore: false }],
    [{ 'cache-control': 'max-age=0' }, { noCache: true, noStore: false }],
    [{ 'cache-control': 'max-age="0"' }, { noCache: true, noStore: false }],
    [{ 'cache-control': 'max-age=60' }, { noCache: false, noStore: false }],
    [{ 'cache-control': 'no-store' }, { noCache: false, noStore: true }],
    [{ 'cache-control': 'no-cache, no-store' }, { noCache: true, noStore: true }],
    [{ 'cache-control': 'no-cachex' }, { noCache: false, noStore: false }],
    [{ pragma: 'no-cache' }, { noCache: true, noStore: false }],
    [{ pragma: 'no-cache', 'cache-control': 'max-age=60' }, { noCache: false, noStore: false }]
  ]
  for (const [headers, expected] of rows) t.same(requestDirectives(headers), expected, JSON.stringify(headers))
})

t.test('the header bytes an entry keeps, and the bound on them', async (t) => {
  t.equal(headerBytes({ etag: '"v1"', vary: ['Accept', 'Accept-Encoding'] }), 'etag'.length + 4 + 4 + 2 * ('vary'.length + 4) + 'Accept'.length + 'Accept-Encoding'.length)
  t.equal(oversizedHeaders({ 'content-disposition': 'x'.repeat(MAX_ENTRY_HEADER_BYTES) }), 'large-headers')
  t.equal(oversizedHeaders({ 'content-disposition': 'x'.repeat(1_000) }), undefined)
})
