// Reads a report request the way Adobe's CMU and ESM pages both document it:
// the path (version, drill-down dimensions, a format extension), the query
// (filters, bare-name projections, reserved parameters) and the format.
import { RESERVED_PARAMETERS, isDimension, isTimeDimension, type ReportApi } from './catalog.js'

export type Format = 'json' | 'xml' | 'csv' | 'html'
export const FORMATS: readonly Format[] = ['json', 'xml', 'csv', 'html']

export const CONTENT_TYPES: Record<Format, string> = {
  json: 'application/json',
  xml: 'application/xml',
  csv: 'text/csv',
  html: 'text/html'
}

/** A request Adobe would refuse, with the status and the plain-text reason it would send. */
export class ReportError extends Error {
  constructor (readonly status: 400 | 404 | 406, message: string) { super(message) }
}

export interface Filter { in: string[], notIn: string[] }

export interface ReportQuery {
  filters: Map<string, Filter>
  /** Dimensions named without a value, not already in the path, each once */
  projections: string[]
  reserved: Map<string, string>
  /** The filter and projection pairs as received, for the self link */
  filterPairs: string[]
}

const DEFAULT_LIMIT = 1000
const MAX_LIMIT = 50_000

/** The drill-down dimensions and the extension; 404 for a path that is not in the API's tree. */
export function parsePath (api: ReportApi, path: string): { dimensions: string[], extension: Format | undefined } {
  const segments = path.split('/').slice(1)
  if (segments[0] !== api.version && segments[0]?.startsWith(`${api.version}.`) !== true) throw new ReportError(404, 'Not found')
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
  // Adobe: a path with no pre-aggregation in the drill-down tree is 404.
  dimensions.forEach((dim, i) => {
    if (!api.next(dimensions.slice(0, i)).includes(dim)) throw new ReportError(404, 'Not found')
  })
  return { dimensions, extension }
}

/**
 * Filters (`dim=v`, repeated for IN; `dim!=v`, repeated for NOT IN) and bare
 * `dim` projections may name a dimension of the path or one some drill-down
 * below it reaches (the ESM page: "either contained in the current URL path
 * or in any valid subpath"); others are 400.
 */
export function parseQuery (api: ReportApi, query: string, dimensions: readonly string[]): ReportQuery {
  const available = new Set([...dimensions, ...api.below(dimensions)])
  const filters = new Map<string, Filter>()
  const projections = new Set<string>()
  const reserved = new Map<string, string>()
  const filterPairs: string[] = []
  for (const pair of query === '' ? [] : query.split('&')) {
    if (pair === '') continue
    const equals = pair.indexOf('=')
    const key = decode(equals === -1 ? pair : pair.slice(0, equals))
    const value = equals === -1 ? undefined : decode(pair.slice(equals + 1))
    if (RESERVED_PARAMETERS.has(key)) {
      if (value !== undefined) reserved.set(key, value)
      continue
    }
    const negated = key.endsWith('!')
    const dim = negated ? key.slice(0, -1) : key
    if (!isDimension(api, dim)) throw new ReportError(400, `Unknown dimension: ${dim}`)
    if (!available.has(dim)) throw new ReportError(400, `Dimension not available below this path: ${dim}`)
    filterPairs.push(pair)
    if (value === undefined) {
      if (!dimensions.includes(dim) && !isTimeDimension(dim)) projections.add(dim)
      continue
    }
    const filter = filters.get(dim) ?? { in: [], notIn: [] }
    ;(negated ? filter.notIn : filter.in).push(value)
    filters.set(dim, filter)
  }
  return { filters, projections: [...projections], reserved, filterPairs }
}

function decode (text: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '))
  } catch {
    throw new ReportError(400, 'Malformed percent-encoding in query')
  }
}

/** Adobe: the extension beats format=, which beats Accept; JSON by default. */
export function negotiateFormat (extension: Format | undefined, formatParameter: string | undefined, accept: string | undefined): Format {
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

/** `metrics=` picks from what this report carries (`available`); without it, all of those. */
export function parseMetrics (api: ReportApi, value: string | undefined, available: readonly string[]): string[] {
  if (value === undefined) return [...available]
  const metrics = value.split(',').map((m) => m.trim()).filter((m) => m !== '')
  const unknown = metrics.find((m) => !api.metrics.includes(m))
  if (unknown !== undefined) throw new ReportError(400, `Unknown metric: ${unknown}`)
  const absent = metrics.find((m) => !available.includes(m))
  if (absent !== undefined) throw new ReportError(400, `Metric not available in this report: ${absent}`)
  if (metrics.length === 0) throw new ReportError(400, 'metrics is empty')
  return metrics
}

export function parseLimit (value: string | undefined): number {
  if (value === undefined) return DEFAULT_LIMIT
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new ReportError(400, `Invalid limit: ${value}`)
  return Math.min(MAX_LIMIT, Number(value))
}
