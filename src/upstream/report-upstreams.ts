// The connections to Adobe's report APIs (CMU, ESM): one Upstream per origin
// and egress proxy, each API with its own base path on it. On Adobe's one
// host (mgmt.auth.adobe.com/cmu and /esm) both share one pool, so
// UPSTREAM_CONNECTIONS and UPSTREAM_MAX_PENDING bound them together; an API
// on another host (a stage setup) gets a pool of its own.
import type { ReportApiName } from './target.js'
import type { Upstream } from './upstream.js'

/** Where one API's requests go: the pool, and the API's base path on that origin. */
export interface ReportRoute<U = Upstream> {
  readonly upstream: U
  readonly basePath: string
}

/** What the origin and the forwarder need: the route of each API. */
export interface ReportRoutes<U = Upstream> {
  route: (api: ReportApiName) => ReportRoute<U>
}

/** An API's base URL (ADOBE_CMU_URL, ADOBE_ESM_URL) and the egress proxy decided for it. */
export interface ReportBase {
  readonly url: string
  readonly proxy: string | undefined
}

export class ReportUpstreams implements ReportRoutes {
  readonly #routes: Record<ReportApiName, ReportRoute>
  /** Each pool once. */
  readonly pools: readonly Upstream[]

  /** `open` makes the pool for a base (its origin and proxy); called once per distinct pair. */
  constructor (bases: Readonly<Record<ReportApiName, ReportBase>>, open: (base: ReportBase) => Upstream) {
    const pools = new Map<string, Upstream>()
    const routeOf = (base: ReportBase): ReportRoute => {
      const url = new URL(base.url)
      const key = `${url.origin} ${base.proxy ?? ''}`
      let upstream = pools.get(key)
      if (upstream === undefined) {
        upstream = open(base)
        pools.set(key, upstream)
      }
      return { upstream, basePath: url.pathname.replace(/\/+$/, '') }
    }
    this.#routes = { cmu: routeOf(bases.cmu), esm: routeOf(bases.esm) }
    this.pools = [...pools.values()]
  }

  route (api: ReportApiName): ReportRoute {
    return this.#routes[api]
  }

  /** Requests waiting for Adobe, and those refused for overload, over every pool (metrics). */
  get load (): { waiting: number, shed: number } {
    let waiting = 0
    let shed = 0
    for (const pool of this.pools) {
      waiting += pool.load.waiting
      shed += pool.load.shed
    }
    return { waiting, shed }
  }

  async close (): Promise<void> {
    await Promise.all(this.pools.map(async (pool) => { await pool.close() }))
  }
}
