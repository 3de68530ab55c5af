// Concurrency Monitoring's usage API (/cmu/v2) as the sandbox plays it: the
// documented dimensions, the seven session metrics and a small, fixed set of
// values per non-time dimension (summarised in /work/shared/adobe-api.md).
import { remainingTime, type ReportApi } from './catalog.js'

const VALUES: Readonly<Record<string, readonly string[]>> = {
  tenant: ['acme-tv', 'globex-sports', 'initech-news'],
  application: ['Acme Player', 'Globex GO', 'Initech Live'],
  'application-id': ['app-1001', 'app-2002', 'app-3003'],
  channel: ['news', 'sports', 'movies', 'kids'],
  mvpd: ['Comcast_SSO', 'Charter_Direct', 'DTV', 'Cox', 'Verizon'],
  platform: ['iOS', 'Android', 'Web', 'Roku', 'tvOS']
}

export const CMU_METRICS = [
  'active-users', 'active-sessions', 'started-sessions', 'completed-sessions',
  'failed-attempts', 'dismissed-sessions', 'killed-sessions'
] as const

const OTHERS = Object.keys(VALUES)

/** Every dimension not yet used, except that time dimensions come in order. */
function unused (path: readonly string[]): string[] {
  return [...remainingTime(path), ...OTHERS.filter((d) => !path.includes(d))]
}

export const CMU: ReportApi = {
  name: 'cmu',
  version: 'v2',
  links: 'full',
  // Adobe: CMU's Last-Modified does not tell when the data changed, so the sandbox sends none.
  sendsLastModified: false,
  values: VALUES,
  metrics: CMU_METRICS,
  scale: {
    'active-users': 900,
    'active-sessions': 1100,
    'started-sessions': 160,
    'completed-sessions': 150,
    'failed-attempts': 6,
    'dismissed-sessions': 4,
    'killed-sessions': 2
  },
  gauges: new Set(['active-users', 'active-sessions']),
  // Any unused dimension may follow, the next time dimension only: /tenant/year is as valid as /year/tenant.
  next: (path) => {
    const [nextTime] = remainingTime(path)
    const others = OTHERS.filter((d) => !path.includes(d))
    return nextTime === undefined ? others : [nextTime, ...others]
  },
  below: unused,
  metricsFor: () => CMU_METRICS
}
