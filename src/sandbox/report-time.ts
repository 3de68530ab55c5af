// Time in a report: `start`/`end` as ISO-8601 prefixes, default windows,
// buckets per granularity, and when Adobe recomputes a report.
import { TIME_DIMENSIONS, type TimeDimension } from './catalog.js'
import { ReportError } from './report-query.js'

export const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR
const ISO_PREFIX = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2}))?)?)?)?)?(Z|[+-]\d{2}:?\d{2})?$/

/** The finest time dimension of a report, or `none` when it has no time dimension. */
export type Granularity = TimeDimension | 'none'

/** Default window per granularity (Adobe leaves it unspecified; these keep answers small). */
export const DEFAULT_WINDOW: Record<Granularity, (end: Date) => Date> = {
  minute: (end) => new Date(end.getTime() - HOUR),
  hour: (end) => new Date(end.getTime() - DAY),
  day: (end) => new Date(end.getTime() - 30 * DAY),
  month: (end) => new Date(Date.UTC(end.getUTCFullYear() - 1, end.getUTCMonth(), 1)),
  year: (end) => new Date(Date.UTC(end.getUTCFullYear() - 2, 0, 1)),
  none: (end) => new Date(end.getTime() - DAY)
}

/**
 * How often a report is recomputed: CMU's documented schedule (year/month
 * every 2 days, day every 3 hours, hour hourly, minute every minute). ESM's
 * page only says coarse data is updated less often than fine data, so the
 * sandbox uses the same; a report without time dimensions, hourly.
 */
export const REFRESH_MS: Record<Granularity, number> = {
  minute: MINUTE,
  hour: HOUR,
  day: 3 * HOUR,
  month: 2 * DAY,
  year: 2 * DAY,
  none: HOUR
}

/** The shortest length of a bucket: enough to bound how many buckets a window holds. */
const SHORTEST_BUCKET_MS: Record<TimeDimension, number> = { minute: MINUTE, hour: HOUR, day: DAY, month: 28 * DAY, year: 365 * DAY }

export function parseDate (name: string, text: string): Date {
  const m = ISO_PREFIX.exec(text)
  if (m === null) throw new ReportError(400, `Invalid date for ${name}: ${text}`)
  const [, y, mo = '01', d = '01', h = '00', mi = '00', s = '00', zone] = m
  const fields = [Number(mo), Number(d), Number(h), Number(mi), Number(s)]
  const [month = 1, day = 1, hour = 0, minute = 0, second = 0] = fields
  let ms = Date.UTC(Number(y), month - 1, day, hour, minute, second)
  const check = new Date(ms)
  if (month > 12 || month < 1 || check.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59) {
    throw new ReportError(400, `Invalid date for ${name}: ${text}`)
  }
  if (zone !== undefined && zone !== 'Z') {
    const sign = zone.startsWith('-') ? -1 : 1
    const digits = zone.slice(1).replace(':', '')
    ms -= sign * (Number(digits.slice(0, 2)) * HOUR + Number(digits.slice(2)) * MINUTE)
  }
  return new Date(ms)
}

export function isoMinute (date: Date): string {
  return date.toISOString().slice(0, 16)
}

export interface Bucket { start: Date, minutes: number }

export function * buckets (finest: TimeDimension | undefined, start: Date, end: Date): Generator<Bucket> {
  if (finest === undefined) {
    yield { start, minutes: Math.max(1, (end.getTime() - start.getTime()) / MINUTE) }
    return
  }
  let cursor = floorTo(finest, start)
  while (cursor.getTime() < end.getTime()) {
    const next = step(finest, cursor)
    yield { start: cursor, minutes: (next.getTime() - cursor.getTime()) / MINUTE }
    cursor = next
  }
}

/** At least as many as buckets() yields. */
export function bucketCountBound (finest: TimeDimension | undefined, start: Date, end: Date): number {
  if (finest === undefined) return 1
  return Math.max(0, Math.ceil((end.getTime() - floorTo(finest, start).getTime()) / SHORTEST_BUCKET_MS[finest]))
}

function floorTo (unit: TimeDimension, date: Date): Date {
  const parts = [date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate(), date.getUTCHours(), date.getUTCMinutes()]
  const keep = TIME_DIMENSIONS.indexOf(unit) + 1
  const [y = 1970, mo = 0, d = 1, h = 0, mi = 0] = parts.map((v, i) => i < keep ? v : (i === 2 ? 1 : 0))
  return new Date(Date.UTC(y, mo, d, h, mi))
}

function step (unit: TimeDimension, date: Date): Date {
  const next = new Date(date)
  switch (unit) {
    case 'year': next.setUTCFullYear(next.getUTCFullYear() + 1); break
    case 'month': next.setUTCMonth(next.getUTCMonth() + 1); break
    case 'day': next.setUTCDate(next.getUTCDate() + 1); break
    case 'hour': next.setUTCHours(next.getUTCHours() + 1); break
    case 'minute': next.setUTCMinutes(next.getUTCMinutes() + 1); break
  }
  return next
}

export function timeValue (unit: TimeDimension, date: Date): string {
  switch (unit) {
    case 'year': return String(date.getUTCFullYear())
    case 'month': return String(date.getUTCMonth() + 1)
    case 'day': return String(date.getUTCDate())
    case 'hour': return String(date.getUTCHours())
    case 'minute': return String(date.getUTCMinutes())
  }
}
