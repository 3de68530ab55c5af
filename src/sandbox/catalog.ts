// The sandbox's made-up world: the CMU dimensions, the seven session metrics
// and a small, fixed set of values per non-time dimension.

export const TIME_DIMENSIONS = ['year', 'month', 'day', 'hour', 'minute'] as const
export type TimeDimension = typeof TIME_DIMENSIONS[number]

export const DIMENSION_VALUES: Readonly<Record<string, readonly string[]>> = {
  tenant: ['acme-tv', 'globex-sports', 'initech-news'],
  application: ['Acme Player', 'Globex GO', 'Initech Live'],
  'application-id': ['app-1001', 'app-2002', 'app-3003'],
  channel: ['news', 'sports', 'movies', 'kids'],
  mvpd: ['Comcast_SSO', 'Charter_Direct', 'DTV', 'Cox', 'Verizon'],
  platform: ['iOS', 'Android', 'Web', 'Roku', 'tvOS']
}

export const METRICS = [
  'active-users', 'active-sessions', 'started-sessions', 'completed-sessions',
  'failed-attempts', 'dismissed-sessions', 'killed-sessions'
] as const

/** Typical size of each metric per minute for one dimension value, before the daily/weekly shape. */
export const METRIC_SCALE: Readonly<Record<string, number>> = {
  'active-users': 900,
  'active-sessions': 1100,
  'started-sessions': 160,
  'completed-sessions': 150,
  'failed-attempts': 6,
  'dismissed-sessions': 4,
  'killed-sessions': 2
}

export const RESERVED_PARAMETERS = new Set(['start', 'end', 'limit', 'metrics', 'format', 'access_token'])

export function isTimeDimension (name: string): name is TimeDimension {
  return (TIME_DIMENSIONS as readonly string[]).includes(name)
}

export function isDimension (name: string): boolean {
  return isTimeDimension(name) || name in DIMENSION_VALUES
}
