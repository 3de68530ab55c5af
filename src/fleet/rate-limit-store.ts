// RATE_LIMIT counters shared by the fleet: a store for @fastify/rate-limit
// (its `store` option) over the state store's atomic INCR + PEXPIRE. The
// plugin's own Redis store needs ioredis; this one uses the fleet's
// connection, its timeouts and its key namespace.
//
// With Redis down, each instance counts on its own (the plugin's LocalStore)
// rather than skipping the limit: a runaway script is then held to the limit
// per instance instead of not at all, exactly when the fleet is degraded, and
// counting locally costs no wait.
import { createRequire } from 'node:module'
import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor, RateLimitPluginOptions } from '@fastify/rate-limit'
import type { Logger } from 'pino'
import { digest, type StateNamespace } from '../store/namespace.js'
import type { StateStore } from '../store/state-store.js'
import type { RecentTrouble } from './fleet-channel.js'
import type { Membership } from './membership.js'

type Callback = Parameters<FastifyRateLimitStore['incr']>[1]
type LocalStoreCtor = new (continueExceeding: boolean, exponentialBackoff: boolean, cache?: number) => FastifyRateLimitStore

// Not exported by name: the plugin's in-memory store, the one it uses without a `store` option.
const LocalStore = createRequire(import.meta.url)('@fastify/rate-limit/store/LocalStore.js') as LocalStoreCtor

export function fleetRateLimitStore (store: StateStore, namespace: StateNamespace, trouble: RecentTrouble, membership: Membership, logger: Logger): FastifyRateLimitStoreCtor {
  let outage = false
  return class FleetRateLimitStore implements FastifyRateLimitStore {
    readonly #local: FastifyRateLimitStore
    readonly #prefix: string

    constructor (_options: RateLimitPluginOptions, prefix = '') {
      this.#local = new LocalStore(false, false)
      this.#prefix = prefix
    }

    incr (key: string, callback: Callback, timeWindow: number, max: number): void {
      // Not a member: it writes nothing to the fleet's store, counters included.
      if (trouble.recent || membership.state === 'not-member') {
        this.#local.incr(key, callback, timeWindow, max)
        return
      }
      store.increment(namespace.key('rate', digest(`${this.#prefix}${key}`)), timeWindow).then(({ count, ttlMs }) => {
        outage = false
        callback(null, { current: count, ttl: ttlMs })
      }, (err: unknown) => {
        trouble.seen()
        if (!outage) logger.warn({ reason: (err as Error).message }, 'rate-limit counters unavailable in the fleet\'s store: counting per instance')
        outage = true
        this.#local.incr(key, callback, timeWindow, max)
      })
    }

    child (routeOptions: Parameters<FastifyRateLimitStore['child']>[0]): FastifyRateLimitStore {
      return new FleetRateLimitStore(routeOptions as RateLimitPluginOptions, `${this.#prefix}${String(routeOptions.method)}${routeOptions.url}-`)
    }
  }
}
