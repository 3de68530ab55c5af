// The report engine: one request to one of Adobe's WOLAP APIs (described by
// its ReportApi) becomes a report whose rows are generated lazily and
// deterministically: the same request, clock and seed give the same bytes.
import { isTimeDimension, type ApiName, type ReportApi } from './catalog.js'
import { ReportError, negotiateFormat, parseLimit, parseMetrics, parsePath, parseQuery, type Filter, type Format } from './report-query.js'
import { DEFAULT_WINDOW, MINUTE, REFRESH_MS, bucketCountBound, buckets, isoMinute, parseDate, timeValue, type Bucket } from './report-time.js'

export interface Link { href: string, name?: string }

export interface Report {
  api: ApiName
  format: Format
  /** Path dimensions in order, then projected ones: the grouping of each row. */
  columns: string[]
  metrics: string[]
  startText: string
  endText: string
  limit: number
  links: { self: Link, rollUp?: Link, drillDown: Link[] }
  /** When the data was computed (ms), for APIs whose Last-Modified means that. */
  lastModified?: number
  rows: () => Generator<string[]>
}

export interface ReportRequest {
  api: ReportApi
  /** Where links start, e.g. '/cmu/v2' or '/v3' (see LinkForm) */
  linkBase: string
  /** the path after the API's base path, e.g. '/v2/year/month.csv' */
  path: string
  /** raw query without '?' */
  query: string
  accept: string | undefined
  now: number
  seed: number
}

/**
 * Time buckets times combinations of grouped values beyond which a query is
 * refused with 400, as Adobe refuses "queries that require a massive volume of
 * data to be returned or aggregated on the fly" (a year by the minute, or a
 * day by the minute grouped by five dimensions, is refused).
 */
export const MAX_CELLS = 500_000

export function buildReport (request: ReportRequest): Report {
  const { api } = request
  const { dimensions, extension } = parsePath(api, request.path)
  const { filters, projections, reserved, filterPairs } = parseQuery(api, request.query, dimensions)
  const format = negotiateFormat(extension, reserved.get('format'), request.accept)
  const limit = parseLimit(reserved.get('limit'))
  const groupBy = [...dimensions, ...projections]
  const finest = [...dimensions].reverse().find(isTimeDimension)
  const metrics = parseMetrics(api, reserved.get('metrics'), api.metricsFor(groupBy, finest))
  // An API whose Last-Modified is meaningful serves data as of its last recomputation.
  const refresh = api.sendsLastModified ? REFRESH_MS[finest ?? 'none'] : MINUTE
  const asOf = Math.floor(request.now / refresh) * refresh
  const now = new Date(asOf)
  const end = reserved.has('end') ? parseDate('end', reserved.get('end') ?? '') : now
  const start = reserved.has('start') ? parseDate('start', reserved.get('start') ?? '') : DEFAULT_WINDOW[finest ?? 'none'](end)
  if (start.getTime() > end.getTime()) throw new ReportError(400, 'Invalid interval: start is after end')
  const startText = reserved.get('start') ?? isoMinute(start)
  const endText = reserved.get('end') ?? isoMinute(end)

  const timeColumns = groupBy.filter(isTimeDimension)
  const otherColumns = groupBy.filter((d) => !isTimeDimension(d))
  if (bucketCountBound(finest, start, end) * combinationCount(api, otherColumns, filters) > MAX_CELLS) {
    throw new ReportError(400, 'Query too large: narrow the interval (start, end) or group by fewer dimensions')
  }
  const range = `start=${startText}&end=${endText}`
  const pathOf = (dims: string[]): string => dims.length === 0 ? request.linkBase : `${request.linkBase}/${dims.join('/')}`
  const selfQuery = [...filterPairs, range, `limit=${limit}`, `metrics=${metrics.join(',')}`].join('&')

  return {
    api: api.name,
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
      drillDown: api.next(dimensions).map((name) => ({ href: pathOf([...dimensions, name]), name }))
    },
    ...(api.sendsLastModified ? { lastModified: asOf } : {}),
    rows: function * () {
      let emitted = 0
      const share = filterShare(api, filters, otherColumns) / combinationCount(api, otherColumns, filters)
      for (const bucket of buckets(finest, start, end)) {
        for (const combination of combinations(api, otherColumns, filters)) {
          if (emitted++ >= limit) return
          const row = timeColumns.map((d) => timeValue(d, bucket.start))
          row.push(...combination)
          for (const metric of metrics) row.push(String(metricValue(api, request.seed, metric, bucket, combination, share)))
          yield row
        }
      }
    }
  }
}

function allowedValues (api: ReportApi, dim: string, filters: Map<string, Filter>): readonly string[] {
  const all = api.values[dim] ?? []
  const filter = filters.get(dim)
  if (filter === undefined) return all
  return all.filter((v) => (filter.in.length === 0 || filter.in.includes(v)) && !filter.notIn.includes(v))
}

function * combinations (api: ReportApi, dims: string[], filters: Map<string, Filter>, prefix: string[] = []): Generator<string[]> {
  if (prefix.length === dims.length) {
    yield prefix
    return
  }
  for (const value of allowedValues(api, dims[prefix.length] ?? '', filters)) yield * combinations(api, dims, filters, [...prefix, value])
}

function combinationCount (api: ReportApi, dims: string[], filters: Map<string, Filter>): number {
  return dims.reduce((n, d) => n * Math.max(1, allowedValues(api, d, filters).length), 1)
}

/** Filters on dimensions that are not grouped shrink the totals proportionally. */
function filterShare (api: ReportApi, filters: Map<string, Filter>, grouped: string[]): number {
  let share = 1
  for (const dim of filters.keys()) {
    if (grouped.includes(dim) || isTimeDimension(dim)) continue
    const all = api.values[dim]?.length ?? 1
    share *= allowedValues(api, dim, filters).length / all
  }
  return share
}

/** Daily peak in the evening, a busier weekend, a little deterministic noise. */
function metricValue (api: ReportApi, seed: number, metric: string, bucket: Bucket, combination: string[], share: number): number {
  const hour = bucket.start.getUTCHours() + bucket.start.getUTCMinutes() / 60
  const daily = 0.35 + 0.65 * Math.sin(Math.PI * (((hour + 4) % 24) / 24)) ** 2
  const weekday = bucket.start.getUTCDay()
  const weekly = weekday === 0 || weekday === 6 ? 1.2 : 1
  const noise = 0.9 + 0.2 * (hash(`${seed}|${metric}|${bucket.start.getTime()}|${combination.join('|')}`) / 0xffffffff)
  const perMinute = (api.scale[metric] ?? 1) * share * (bucket.minutes >= 60 * 24 ? 1 : daily) * weekly * noise
  // Gauges (concurrent users/sessions) are levels; the others are counts that add up over the bucket.
  return Math.round(api.gauges.has(metric) ? perMinute * 10 : perMinute * bucket.minutes)
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
