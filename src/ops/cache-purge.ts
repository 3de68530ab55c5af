// DELETE /admin/cache: an operator drops cached reports (Adobe corrected its
// data, or a bad answer was cached) without a restart or waiting out the
// TTL, as Vault Proxy's cache-clear endpoint does. Without `path`, every
// entry; with `path=<prefix>/...` (/cmu/... or /esm/...), one report of that
// API: every variant of that path,
// whatever its query, Accept, Accept-Language or encoding. In a fleet, the
// shared copies in Redis go too, and every instance drops its memory copies.
import type { FastifyInstance } from 'fastify'
import type { PurgeResult } from '../cache/cache-levels.js'
import { reportPath } from '../cache/cache-policy.js'
import { badPath, ProxyError } from '../kernel/errors.js'
import type { ReportApi } from '../proxy/report-apis.js'
import { upstreamTarget } from '../upstream/target.js'

/** The cache layer (cache/cache-layer.ts), when the cache is on. */
export interface CachePurger {
  purge: (path: string | undefined) => Promise<PurgeResult>
}

/** Label values of cmu_proxy_cache_purges_total. */
export type PurgeScope = 'all' | 'path'

export interface CachePurgeOptions {
  /** Undefined when CACHE_ENABLED=false: nothing to purge. */
  cache: CachePurger | undefined
  /** The route table: `path` names a report as callers do, under one API's prefix. */
  apis: ReadonlyArray<Pick<ReportApi, 'name' | 'prefix'>>
  /** Counts each purge that ran (metrics). */
  onPurged: (scope: PurgeScope) => void
}

function badPurge (why: string): ProxyError {
  return new ProxyError('CMU_PROXY_BAD_REQUEST', 400, `This purge is not possible: ${why}.`)
}

/** The cache of this instance was purged but the fleet's could not be (Redis down), or the others could not be told. */
function purgeIncomplete (detail: string): ProxyError {
  return new ProxyError('CMU_PROXY_PURGE_INCOMPLETE', 503, `The purge is incomplete: ${detail}; try again once the fleet's Redis answers.`, { headers: { 'retry-after': '5' } })
}

/** One report to purge: as the caller named it, and as the cache keys it (cache-policy.ts: reportPath). */
export interface PurgedReport { shown: string, keyPath: string }

/**
 * The report one purge names, or undefined for everything. Only `path` is
 * accepted: a misspelt parameter must not purge everything. The value is
 * URL-decoded once (so a `%` in the report's path is sent as `%25`), and
 * then held to the rules of every forwarded path, under its API's prefix.
 */
export function purgeTarget (query: Record<string, unknown>, apis: CachePurgeOptions['apis']): PurgedReport | undefined {
  const names = Object.keys(query)
  if (names.some((name) => name !== 'path')) throw badPurge('the only parameter is path (without it, everything is purged)')
  if (!('path' in query)) return undefined
  const path = query.path
  if (typeof path !== 'string') throw badPurge('give path once')
  const api = apis.find(({ prefix }) => path === prefix || path.startsWith(`${prefix}/`))
  if (api === undefined) throw badPath(`a purge names a report under ${apis.map(({ prefix }) => `${prefix}/`).join(' or ')}`)
  // One report is its path: every query of it goes (README, "Purging cached reports").
  if (path.includes('?')) throw badPath('a purge names a path without a query; every query of that path is purged')
  const target = upstreamTarget(path, api.prefix, api.name)
  return { shown: `${api.prefix}${target.path}`, keyPath: reportPath(target) }
}

export async function cachePurgeRoute (app: FastifyInstance, { cache, apis, onPurged }: CachePurgeOptions): Promise<void> {
  app.delete('/admin/cache', async (request) => {
    const report = purgeTarget(request.query as Record<string, unknown>, apis)
    const scope: PurgeScope = report === undefined ? 'all' : 'path'
    const shown = report?.shown
    const result: PurgeResult = cache === undefined ? { memory: 0, shared: undefined } : await cache.purge(report?.keyPath)
    onPurged(scope)
    const { memory, shared } = result
    const fleet = shared === undefined ? null : shared === 'unavailable' ? { deleted: null, told: false } : shared
    request.log.info({ scope, path: shown, memory, fleet }, 'cache purged')
    if (shared === 'unavailable') throw purgeIncomplete('this instance\'s memory was purged, but the fleet\'s shared cache could not be reached')
    if (shared !== undefined && !shared.told) throw purgeIncomplete('the fleet\'s shared cache was purged, but the other instances could not be told to drop their copies')
    return { purged: true, scope, ...(shown === undefined ? {} : { path: shown }), cacheEnabled: cache !== undefined, entries: { memory, fleet: fleet?.deleted ?? null } }
  })
}
