// Entitlement Service Monitoring (/esm/v3) as the sandbox plays it, from
// Adobe's pages:
//   https://experienceleague.adobe.com/en/docs/pass/authentication/integration-guide-programmers/features-premium/esm/entitlement-service-monitoring-overview
//     (the metrics and dimensions, for programmers and for MVPDs)
//   https://experienceleague.adobe.com/en/docs/pass/authentication/integration-guide-programmers/features-premium/esm/entitlement-service-monitoring-api
//     (the grammar, links, formats, status codes, Last-Modified)
// The sandbox plays a programmer: it serves the programmers' dimension table
// (a superset of the MVPDs' except `sdk-type`) and the programmers' metrics.
import { isTimeDimension, remainingTime, type ReportApi, type TimeDimension } from './catalog.js'

/**
 * The programmers' dimensions besides time. The values are made up; the docs
 * name some: `eap` (N/A, Apple), `cdt` (N/A, Unknown, xbox, appletv, roku...),
 * `nsdk` (android, fireTV, js, iOS, tvOS, non-sdk), `sso-type`
 * (platform/passive/adobe), `platform` (Android, FireTV, Roku, iOS, tvOS...),
 * `proxy` ("Direct" for direct integrations).
 */
const VALUES: Readonly<Record<string, readonly string[]>> = {
  'media-company': ['acme-media', 'globex-media'],
  dc: ['us-east', 'us-west'],
  proxy: ['Direct', 'Synacor'],
  mvpd: ['Comcast_SSO', 'Charter_Direct', 'DTV', 'Cox', 'Verizon'],
  'requestor-id': ['acme-tv', 'globex-sports', 'initech-news'],
  channel: ['news', 'sports', 'movies', 'kids'],
  'resource-id': ['Evening News', 'Derby Live', 'Feature Film'],
  device: ['PC', 'mobile', 'console', 'settop'],
  eap: ['N/A', 'Apple'],
  'os-family': ['Windows', 'Mac OS X', 'Android', 'iOS'],
  'browser-family': ['Chrome', 'Safari', 'Firefox'],
  cdt: ['N/A', 'Unknown', 'xbox', 'appletv', 'roku'],
  'platform-version': ['N/A', '3.5'],
  'os-type': ['N/A'],
  'browser-version': ['121', '17'],
  nsdk: ['android', 'fireTV', 'js', 'iOS', 'tvOS', 'non-sdk'],
  'nsdk-version': ['3.7.0', '4.2.1'],
  event: ['authn', 'authz', 'logout'],
  reason: ['N/A', 'timeout'],
  'sso-type': ['platform', 'passive', 'adobe'],
  platform: ['Android', 'FireTV', 'Roku', 'iOS', 'tvOS'],
  'application-name': ['Acme Player', 'Globex GO'],
  'application-version': ['1.0', '2.3'],
  'customer-app': ['acme-app', 'globex-app'],
  'content-category': ['news', 'sports', 'movies']
}

/** Available in every report. */
const COMMON_METRICS = [
  'authn-attempts', 'authn-successful', 'authn-pending', 'authn-failed',
  'clientless-tokens', 'clientless-failures',
  'authz-attempts', 'authz-successful', 'authz-failed', 'authz-rejected', 'authz-latency',
  'media-tokens'
]
/** The docs: only with daily values, and only when the `dc` dimension is requested. */
const UNIQUE_METRICS = ['unique-accounts', 'unique-sessions']
/** The docs: "a simple counter used in the event-oriented reports"; the sandbox adds it where `event` is grouped (the docs are silent on which reports those are). */
const EVENT_METRICS = ['count']

export const ESM_METRICS = [...COMMON_METRICS, ...UNIQUE_METRICS, ...EVENT_METRICS]

/*
 * The drill-down tree. Adobe's page draws it only as images (programmers' Day,
 * Hour and Minute trees, and the MVPDs' tree), so the shape below is the
 * sandbox's own, built from what the text says:
 * - roots: the time drill-down itself (`/esm/v3/year/month` in the HAL
 *   example), the media company (`/esm/v3/media-company/year/month/day.xml` in
 *   "Data Formats") and the MVPD (the MVPDs' tree); a root that is not time
 *   drills into time (`/dimensionA/year/month/day/dimensionX` in the walk-through);
 * - time drills down in order, and at day, hour and minute (the three
 *   programmers' trees) into any other dimension, then one more
 *   (`dimensionX` links on to `dimensionY` and `dimensionZ`), and no further.
 * Everything else is not pre-aggregated: 404, as the docs say.
 */
const ROOTS = ['year', 'media-company', 'mvpd']
const BRANCH_LEVELS: ReadonlySet<string> = new Set<TimeDimension>(['day', 'hour', 'minute'])
const BRANCH_DEPTH = 2
const OTHERS = Object.keys(VALUES)

/** How many non-time dimensions follow the last time dimension of `path` (undefined: no time yet). */
function branchDepth (path: readonly string[]): number | undefined {
  const lastTime = path.findLastIndex(isTimeDimension)
  return lastTime === -1 ? undefined : path.length - 1 - lastTime
}

function unusedOthers (path: readonly string[]): string[] {
  return OTHERS.filter((d) => !path.includes(d))
}

export const ESM: ReportApi = {
  name: 'esm',
  version: 'v3',
  // The overview's links: <link rel="drill-down" href="/v3/dimensionA"/>
  links: 'short',
  // "Data Freshness": Last-Modified is when the report in the body was last updated.
  sendsLastModified: true,
  values: VALUES,
  metrics: ESM_METRICS,
  scale: {
    'authn-attempts': 40,
    'authn-successful': 28,
    'authn-pending': 30,
    'authn-failed': 1,
    'clientless-tokens': 6,
    'clientless-failures': 1,
    'authz-attempts': 220,
    'authz-successful': 190,
    'authz-failed': 8,
    'authz-rejected': 1,
    // total milliseconds spent at the MVPD: about 300 ms per authorization
    'authz-latency': 66_000,
    'media-tokens': 180,
    'unique-accounts': 25,
    'unique-sessions': 30,
    count: 260
  },
  gauges: new Set(),
  next: (path) => {
    if (path.length === 0) return ROOTS
    const depth = branchDepth(path)
    if (depth === undefined) return ['year']
    if (depth >= BRANCH_DEPTH) return []
    if (depth > 0) return unusedOthers(path)
    const [nextTime] = remainingTime(path)
    const branches = BRANCH_LEVELS.has(path[path.length - 1] ?? '') ? unusedOthers(path) : []
    return nextTime === undefined ? branches : [nextTime, ...branches]
  },
  below: (path) => {
    const depth = branchDepth(path)
    if (depth !== undefined && depth >= BRANCH_DEPTH) return []
    // Every time path reaches minute, a branch level, so every dimension not used is still below it.
    return depth === undefined || depth === 0 ? [...remainingTime(path), ...unusedOthers(path)] : unusedOthers(path)
  },
  metricsFor: (columns, finest) => [
    ...COMMON_METRICS,
    ...(finest === 'day' && columns.includes('dc') ? UNIQUE_METRICS : []),
    ...(columns.includes('event') ? EVENT_METRICS : [])
  ]
}
