// DELETE /admin/cache: an operator drops cached reports (Adobe corrected its
// data, or a bad answer was cached) without a restart or waiting out the
// TTL, as Vault Proxy's cache-clear endpoint does. Without `path`, every
// entry; with `path=<prefix>/...`, one report: every variant of that path,
// whatever its query, Accept, Accept-Language or encoding. In a fleet, the
// shared copies in Redis go too, and every instance drops its memory copies.
import type { FastifyInstance } from 'fastify'
import type { PurgeResult } from '../cache/cache-levels.js'
import { badPath, ProxyError } from '../kernel/errors.js'
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
  /** PROXY_PATH_PREFIX: `path` names a report as callers do, under it. */
  pathPrefix: string
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

/**
 * The upstream path (after the prefix) of one report, or undefined for
 * everything. Only `path` is accepted: a misspelt parameter must not purge
 * everything. The value is URL-decoded once (so a `%` in the report's path
 * is sent as `%25`), and then held to the rules of every forwarded path.
 */
export function purgeTarget (query: Record<string, unknown>, prefix: string): string | undefined {
  const names = Object.keys(query)
  if (names.some((name) => name !== 'path')) throw badPurge('the only parameter is path (without it, everything is purged)')
  if (!('path' in query)) return undefined
  const path = query.path
  if (typeof path !== 'string') throw badPurge('give path once')
  if (path !== prefix && !path.startsWith(`${prefix}/`)) throw badPath(`a purge names a report under ${prefix}/`)
  // One report is its path: every query of it goes (README, "Purging cached reports").
  if (path.includes('?')) throw badPath('a purge names a path without a query; every query of that path is purged')
  return upstreamTarget(path, prefix).path
}

export async function cachePurgeRoute (app: FastifyInstance, { cache, pathPrefix, onPurged }: CachePurgeOptions): Promise<void> {
  app.delete('/admin/cache', async (request) => {
    const path = purgeTarget(request.query as Record<string, unknown>, pathPrefix)
    const scope: PurgeScope = path === undefined ? 'all' : 'path'
    const shown = path === undefined ? undefined : `${pathPrefix}${path}`
    const result: PurgeResult = cache === undefined ? { memory: 0, shared: undefined } : await cache.purge(path)
    onPurged(scope)
    const { memory, shared } = result
    const fleet = shared === undefined ? null : shared === 'unavailable' ? { deleted: null, told: false } : shared
    request.log.info({ scope, path: shown, memory, fleet }, 'cache purged')
    if (shared === 'unavailable') throw purgeIncomplete('this instance\'s memory was purged, but the fleet\'s shared cache could not be reached')
    if (shared !== undefined && !shared.told) throw purgeIncomplete('the fleet\'s shared cache was purged, but the other instances could not be told to drop their copies')
    return { purged: true, scope, ...(shown === undefined ? {} : { path: shown }), cacheEnabled: cache !== undefined, entries: { memory, fleet: fleet?.deleted ?? null } }
  })
}
