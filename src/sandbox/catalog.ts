// What the report engine (report.ts) knows about one of Adobe's WOLAP
// reporting APIs. CMU (/cmu/v2) and ESM (/esm/v3) share one grammar (a path
// of dimensions in a drill-down tree, filters, reserved parameters, formats,
// status codes) and differ in their dimensions, metrics and tree: each is a
// ReportApi (cmu-catalog.ts, esm-catalog.ts), and one engine serves both.

export const TIME_DIMENSIONS = ['year', 'month', 'day', 'hour', 'minute'] as const
export type TimeDimension = typeof TIME_DIMENSIONS[number]

export type ApiName = 'cmu' | 'esm'

/**
 * How drill-down, roll-up and self links start: `full` is the API's whole path
 * (`/cmu/v2/...`, as in Adobe's CMU examples), `short` starts at the version
 * (`/v3/...`, relative to `/esm`, as in Adobe's ESM overview).
 */
export type LinkForm = 'full' | 'short'

/** Query parameters with a meaning of their own: never dimension filters (both APIs' pages list the same ones). */
export const RESERVED_PARAMETERS = new Set(['start', 'end', 'limit', 'metrics', 'format', 'access_token'])

export interface ReportApi {
  readonly name: ApiName
  /** The version segment after the base path, e.g. `v2` */
  readonly version: string
  readonly links: LinkForm
  /** Whether answers carry Last-Modified (the time the report's data was computed) */
  readonly sendsLastModified: boolean
  /** The made-up values of each non-time dimension */
  readonly values: Readonly<Record<string, readonly string[]>>
  /** Every metric, in report order */
  readonly metrics: readonly string[]
  /** Typical size of each metric per minute for one dimension value, before the daily/weekly shape */
  readonly scale: Readonly<Record<string, number>>
  /** Metrics that are levels (concurrent users), not counts that add up over time */
  readonly gauges: ReadonlySet<string>
  /** The dimensions a report at `path` drills down to: the drill-down tree, one level at a time */
  next: (path: readonly string[]) => readonly string[]
  /** Every dimension some drill-down below `path` reaches (what a filter or a bare projection may name) */
  below: (path: readonly string[]) => readonly string[]
  /** The metrics a report grouped by `columns`, at `finest` granularity, carries */
  metricsFor: (columns: readonly string[], finest: TimeDimension | undefined) => readonly string[]
}

export function isTimeDimension (name: string): name is TimeDimension {
  return (TIME_DIMENSIONS as readonly string[]).includes(name)
}

export function isDimension (api: ReportApi, name: string): boolean {
  return isTimeDimension(name) || Object.hasOwn(api.values, name)
}

/** The time dimensions still below `path` (they drill down in order: year, then month...). */
export function remainingTime (path: readonly string[]): TimeDimension[] {
  return TIME_DIMENSIONS.slice(path.filter(isTimeDimension).length)
}
