// Parses a CMU report request the way Adobe documents it (drill-down path,
// filters, reserved parameters, format negotiation) and generates its rows
// lazily and deterministically: the same request and seed give the same bytes.
import {
  DIMENSION_VALUES, METRICS, METRIC_SCALE, RESERVED_PARAMETERS, TIME_DIMENSIONS,
  isDimension, isTimeDimension, type TimeDimension
} from './catalog.js'

export type Format = 'json' | 'xml' | 'csv' | 'html'
export const FORMATS: readonly Format[] = ['json', 'xml', 'csv', 'html']

export const CONTENT_TYPES: Record<Format, string> = {
  json: 'application/json',
  xml: 'application/xml',
  csv: 'text/csv',
  html: 'text/html'
}

export class ReportError extends Error {
  constructor (readonly status: 400 | 404 | 406, message: string) { super(message) }
}

export interface Link { href: string, name?: string }

export interface Report {
  format: Format
  /** Path dimensions in order, then projected ones: the grouping of each row. */
  columns: string[]
  metrics: string[]
  startText: string
  endText: string
  limit: number
  links: { self: Link, rollUp?: Link, drillDown: Link[] }
  rows: () => Generator<string[]>
}

interface Filter { in: string[], notIn: string[] }

const DEFAULT_LIMIT = 1000
const MAX_LIMIT = 50_000
const ISO_PREFIX = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2}))?)?)?)?)?(Z|[+-]\d{2}:?\d{2})?$/
const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR
/** Default window per finest time dimension (Adobe leaves it unspecified; these keep answers small). */
const DEFAULT_WINDOW: Record<TimeDimension | 'none', (end: Date) => Date> = {
  minute: (end) => new Date(end.getTime() - HOUR),
  hour: (end) => new Date(end.getTime() - DAY),
  day: (end) => new Date(end.getTime() - 30 * DAY),
  month: (end) => new Date(Date.UTC(end.getUTCFullYear() - 1, end.getUTCMonth(), 1)),
  year: (end) => new Date(Date.UTC(end.getUTCFullYear() - 2, 0, 1)),
  none: (end) => new Date(end.getTime() - DAY)
}

export interface ReportRequest {
  /** e.g. '/cmu': links are absolute paths under it */
  basePath: string
  /** the path after basePath, e.g. '/v2/year/month.csv' */
  path: string
  /** raw query without '?' */
  query: string
  accept: string | undefined
  now: number
  seed: number
}

export function buildReport (request: ReportRequest): Report {
  const { dimensions, extension } = parsePath(request.path)
  const { filters, projections, reserved, filterPairs } = parseQuery(request.query)
  const format = negotiateFormat(extension, reserved.get('format'), request.accept)
  const metrics = parseMetrics(reserved.get('metrics'))
  const limit = parseLimit(reserved.get('limit'))
  const finest = [...dimensions].reverse().find(isTimeDimension)
  const now = new Date(Math.floor(request.now / MINUTE) * MINUTE)
  const end = reserved.has('end') ? parseDate('end', reserved.get('end') ?? '') : now
  const start = reserved.has('start') ? parseDate('start', reserved.get('start') ?? '') : DEFAULT_WINDOW[finest ?? 'none'](end)
  if (start.getTime() > end.getTime()) throw new ReportError(400, 'Invalid interval: start is after end')
  const startText = reserved.get('start') ?? isoMinute(start)
  const endText = reserved.get('end') ?? isoMinute(end)

  const groupBy = [...dimensions, ...projections.filter((p) => !dimensions.includes(p) && !isTimeDimension(p))]
  const timeColumns = groupBy.filter(isTimeDimension)
  const otherColumns = groupBy.filter((d) => !isTimeDimension(d))
  const range = `start=${startText}&end=${endText}`
  const base = `${request.basePath}/v2`
  const pathOf = (dims: string[]): string => dims.length === 0 ? base : `${base}/${dims.join('/')}`
  const selfQuery = [...filterPairs, range, `limit=${limit}`, `metrics=${metrics.join(',')}`].join('&')

  return {
    format,
    columns: groupBy,
    metrics,
    startText,
    endText,
    limit,
    links: {
      // As in Adobe's examples: only self carries the (full, effective) query; roll-up and drill-down are bare paths.
      self: { href: `${pathOf(dimensions)}${extension === undefined ? '' : `.${extension}`}?${selfQuery}` },
      ...(dimensions.length === 0 ? {} : { rollUp: { href: pathOf(dimensions.slice(0, -1)) } }),
      drillDown: nextDimensions(dimensions).map((name) => ({ href: pathOf([...dimensions, name]), name }))
    },
    rows: function * () {
      let emitted = 0
      for (const bucket of buckets(finest, start, end)) {
        for (const combination of combinations(otherColumns, filters)) {
          if (emitted++ >= limit) return
          const row = timeColumns.map((d) => timeValue(d, bucket.start))
          row.push(...combination)
          const share = filterShare(filters, otherColumns) / combinationCount(otherColumns, filters)
          for (const metric of metrics) row.push(String(metricValue(request.seed, metric, bucket, combination, share)))
          yield row
        }
      }
    }
  }
}

function parsePath (path: string): { dimensions: string[], extension: Format | undefined } {
  const segments = path.split('/').slice(1)
  if (segments[0] !== 'v2' && !segments[0]?.startsWith('v2.')) throw new ReportError(404, 'Not found')
  let extension: Format | undefined
  const last = segments[segments.length - 1] ?? ''
  const dot = last.lastIndexOf('.')
  if (dot !== -1) {
    const ext = last.slice(dot + 1)
    if (!(FORMATS as readonly string[]).includes(ext)) throw new ReportError(404, 'Not found')
    extension = ext as Format
    segments[segments.length - 1] = last.slice(0, dot)
  }
  const dimensions = segments.slice(1)
  if (dimensions.length > 0 && dimensions[dimensions.length - 1] === '') dimensions.pop() // trailing slash
  const seen = new Set<string>()
  let nextTime = 0
  for (const dim of dimensions) {
    if (!isDimension(dim) || seen.has(dim)) throw new ReportError(404, 'Not found')
    if (isTimeDimension(dim)) {
      // Time dimensions drill down in order: year, then month, then day...
      if (TIME_DIMENSIONS[nextTime] !== dim) throw new ReportError(404, 'Not found')
      nextTime++
    }
    seen.add(dim)
  }
  return { dimensions, extension }
}

/** Where a report can drill down to: the next time dimension, and any unused other dimension. */
function nextDimensions (dimensions: string[]): string[] {
  const timeDepth = dimensions.filter(isTimeDimension).length
  const next: string[] = []
  const nextTime = TIME_DIMENSIONS[timeDepth]
  if (nextTime !== undefined) next.push(nextTime)
  for (const dim of Object.keys(DIMENSION_VALUES)) if (!dimensions.includes(dim)) next.push(dim)
  return next
}

function parseQuery (query: string): { filters: Map<string, Filter>, projections: string[], reserved: Map<string, string>, filterPairs: string[] } {
  const filters = new Map<string, Filter>()
  const projections: string[] = []
  const reserved = new Map<string, string>()
  const filterPairs: string[] = []
  for (const pair of query === '' ? [] : query.split('&')) {
    if (pair === '') continue
    const equals = pair.indexOf('=')
    const rawKey = equals === -1 ? pair : pair.slice(0, equals)
    const key = decode(rawKey)
    const value = equals === -1 ? undefined : decode(pair.slice(equals + 1))
    if (RESERVED_PARAMETERS.has(key)) {
      if (value !== undefined) reserved.set(key, value)
      continue
    }
    const negated = key.endsWith('!')
    const dim = negated ? key.slice(0, -1) : key
    if (!isDimension(dim)) throw new ReportError(400, `Unknown dimension: ${dim}`)
    filterPairs.push(pair)
    if (value === undefined) {
      projections.push(dim)
      continue
    }
    const filter = filters.get(dim) ?? { in: [], notIn: [] }
    ;(negated ? filter.notIn : filter.in).push(value)
    filters.set(dim, filter)
  }
  return { filters, projections, reserved, filterPairs }
}

function decode (text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '))
  } catch {
    throw new ReportError(400, 'Malformed percent-encoding in query')
  }
}

/** Adobe: the extension beats format=, which beats Accept; JSON by default. */
function negotiateFormat (extension: Format | undefined, formatParameter: string | undefined, accept: string | undefined): Format {
  if (extension !== undefined) return extension
  if (formatParameter !== undefined) {
    if ((FORMATS as readonly string[]).includes(formatParameter)) return formatParameter as Format
    throw new ReportError(406, `Unsupported format: ${formatParameter}`)
  }
  if (accept === undefined || accept.trim() === '') return 'json'
  const ranges = accept.split(',').map((part) => {
    const [type = '', ...params] = part.trim().split(';')
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='))
    return { type: type.trim().toLowerCase(), q: q === undefined ? 1 : Number(q.slice(2)) }
  }).filter((r) => r.q > 0).sort((a, b) => b.q - a.q)
  for (const range of ranges) {
    if (range.type === '*/*' || range.type === 'application/*' || range.type === 'application/hal+json') return 'json'
    const match = FORMATS.find((f) => CONTENT_TYPES[f] === range.type || (f === 'xml' && range.type === 'text/xml'))
    if (match !== undefined) return match
    if (range.type === 'text/*') return 'csv'
  }
  throw new ReportError(406, 'None of the accepted media types is available (json, xml, csv, html)')
}

function parseMetrics (value: string | undefined): string[] {
  if (value === undefined) return [...METRICS]
  const metrics = value.split(',').map((m) => m.trim()).filter((m) => m !== '')
  const unknown = metrics.find((m) => !(METRICS as readonly string[]).includes(m))
  if (unknown !== undefined) throw new ReportError(400, `Unknown metric: ${unknown}`)
  if (metrics.length === 0) throw new ReportError(400, 'metrics is empty')
  return metrics
}

function parseLimit (value: string | undefined): number {
  if (value === undefined) return DEFAULT_LIMIT
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new ReportError(400, `Invalid limit: ${value}`)
  return Math.min(MAX_LIMIT, Number(value))
}

function parseDate (name: string, text: string): Date {
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

function isoMinute (date: Date): string {
  return date.toISOString().slice(0, 16)
}

interface Bucket { start: Date, minutes: number }

function * buckets (finest: TimeDimension | undefined, start: Date, end: Date): Generator<Bucket> {
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

function timeValue (unit: TimeDimension, date: Date): string {
  switch (unit) {
    case 'year': return String(date.getUTCFullYear())
    case 'month': return String(date.getUTCMonth() + 1)
    case 'day': return String(date.getUTCDate())
    case 'hour': return String(date.getUTCHours())
    case 'minute': return String(date.getUTCMinutes())
  }
}

function allowedValues (dim: string, filters: Map<string, Filter>): readonly string[] {
  const all = DIMENSION_VALUES[dim] ?? []
  const filter = filters.get(dim)
  if (filter === undefined) return all
  return all.filter((v) => (filter.in.length === 0 || filter.in.includes(v)) && !filter.notIn.includes(v))
}

function * combinations (dims: string[], filters: Map<string, Filter>, prefix: string[] = []): Generator<string[]> {
  if (prefix.length === dims.length) {
    yield prefix
    return
  }
  for (const value of allowedValues(dims[prefix.length] ?? '', filters)) yield * combinations(dims, filters, [...prefix, value])
}

function combinationCount (dims: string[], filters: Map<string, Filter>): number {
  return dims.reduce((n, d) => n * Math.max(1, allowedValues(d, filters).length), 1) || 1
}

/** Filters on dimensions that are not grouped shrink the totals proportionally. */
function filterShare (filters: Map<string, Filter>, grouped: string[]): number {
  let share = 1
  for (const dim of filters.keys()) {
    if (grouped.includes(dim) || isTimeDimension(dim)) continue
    const all = DIMENSION_VALUES[dim]?.length ?? 1
    share *= allowedValues(dim, filters).length / all
  }
  return share
}

const GAUGES = new Set(['active-users', 'active-sessions'])

/** Daily peak in the evening, a busier weekend, a little deterministic noise. */
function metricValue (seed: number, metric: string, bucket: Bucket, combination: string[], share: number): number {
  const hour = bucket.start.getUTCHours() + bucket.start.getUTCMinutes() / 60
  const daily = 0.35 + 0.65 * Math.sin(Math.PI * (((hour + 4) % 24) / 24)) ** 2
  const weekday = bucket.start.getUTCDay()
  const weekly = weekday === 0 || weekday === 6 ? 1.2 : 1
  const noise = 0.9 + 0.2 * (hash(`${seed}|${metric}|${bucket.start.getTime()}|${combination.join('|')}`) / 0xffffffff)
  const perMinute = (METRIC_SCALE[metric] ?? 1) * share * (bucket.minutes >= 60 * 24 ? 1 : daily) * weekly * noise
  // Gauges (concurrent users/sessions) are levels; the others are counts that add up over the bucket.
  return Math.round(GAUGES.has(metric) ? perMinute * 10 : perMinute * bucket.minutes)
}

/** FNV-1a, 32 bit. */
function hash (text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}
