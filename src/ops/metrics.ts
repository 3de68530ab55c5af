// Prometheus metrics (prom-client), one registry per app. Counters that other
// modules already keep (token broker, cache) are read at scrape time rather
// than duplicated; per-request metrics are plain numbers (hot-metrics.ts).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { getHeapStatistics } from 'node:v8'
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'
import type { TokenStatusSource } from '../adobe/token-status.js'
import type { ResponseCache } from '../cache/response-cache.js'
import type { StateStore } from '../store/state-store.js'
import type { PurgeScope } from './cache-purge.js'
import { FastCounter, FastHistogram } from './hot-metrics.js'
import { readMemoryLimit } from './memory-limit.js'

/** How a reload of the secrets ended (label values of cmu_proxy_config_reloads_total). */
export type ReloadResult = 'ok' | 'rejected' | 'unchanged'

export interface MetricsSources {
  broker: TokenStatusSource
  cache: ResponseCache | undefined
  /** The route table, to label forwarded requests route="cmu" or route="esm" */
  routes: ReadonlyArray<{ readonly name: string, readonly prefix: string }>
  /** UPSTREAM_HEADERS_TIMEOUT_MS, exported so that an alert can compare Adobe's latency with it. */
  upstreamHeadersTimeoutMs: number
  now: () => number
  /** Where /proc and /sys are read for the container's memory limit (tests point it at a fixture). */
  cgroupRoot?: string | undefined
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
/**
 * Adobe's time to headers, up to UPSTREAM_HEADERS_TIMEOUT_MS's ceiling (an
 * hour): with 60 s on top, a p99 could never pass half of a timeout above
 * 120 s, and CmuProxyAdobeSlow could never fire.
 */
const UPSTREAM_BUCKETS = [...LATENCY_BUCKETS, 120, 300, 900, 1800, 3600]
/** Redis answers in well under a millisecond on a LAN; the top buckets catch the command timeout. */
const STORE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]

export class ProxyMetrics {
  readonly registry = new Registry()
  readonly #requests: FastCounter<'route' | 'status_class' | 'cache'>
  readonly #problems: FastCounter<'route' | 'code'>
  readonly #requestDuration: FastHistogram
  readonly #upstreamDuration: FastHistogram
  #storeDuration: FastHistogram | undefined
  #inFlight = 0
  #rateLimited = 0
  readonly #reloads: Record<ReloadResult, number> = { ok: 0, rejected: 0, unchanged: 0 }
  readonly #purges: Record<PurgeScope, number> = { all: 0, path: 0 }
  readonly #routeLabels = new Map<string, string>()
  readonly #routes: MetricsSources['routes']

  constructor ({ broker, cache, routes, upstreamHeadersTimeoutMs, now, cgroupRoot }: MetricsSources) {
    const registers = [this.registry]
    this.#routes = routes
    collectDefaultMetrics({ register: this.registry })
    this.#requests = new FastCounter('cmu_proxy_requests_total', 'Requests answered, by route, status class and cache result', ['route', 'status_class', 'cache'], this.registry)
    this.#problems = new FastCounter('cmu_proxy_problems_total', 'Problem answers (application/problem+json) by route and stable CMU_PROXY_* code, 499 CMU_PROXY_CALLER_GONE included, and Adobe\'s own 5xx passed through (CMU_PROXY_UPSTREAM_5XX)', ['route', 'code'], this.registry)
    this.#requestDuration = new FastHistogram('cmu_proxy_request_duration_seconds', 'Time from request to the end of the response', 'route', LATENCY_BUCKETS, this.registry)
    this.#upstreamDuration = new FastHistogram('cmu_proxy_upstream_duration_seconds', 'Time from sending a request to Adobe to its response headers (status_class="timeout": none came in time)', 'status_class', UPSTREAM_BUCKETS, this.registry)
    const metrics = this
    new Gauge({ name: 'cmu_proxy_requests_in_flight', help: 'Requests being answered now', registers, collect () { this.set(metrics.#inFlight) } })
    new Counter({ name: 'cmu_proxy_rate_limited_total', help: 'Requests refused with 429 CMU_PROXY_RATE_LIMITED (over RATE_LIMIT)', registers, collect () { this.reset(); this.inc(metrics.#rateLimited) } })
    const byLabel = <L extends string>(name: string, help: string, label: string, counts: Record<L, number>): void => {
      new Counter({
        name, help, labelNames: [label], registers,
        collect () {
          this.reset()
          for (const [value, count] of Object.entries<number>(counts)) this.inc({ [label]: value }, count)
        }
      })
    }
    byLabel('cmu_proxy_config_reloads_total', 'Reloads of the secrets (SIGHUP or a changed *_FILE), by result: ok (applied), rejected (the old values stay), unchanged', 'result', this.#reloads)
    byLabel('cmu_proxy_cache_purges_total', 'Operator purges of the response cache (DELETE /admin/cache), by scope: all, or one report\'s path', 'scope', this.#purges)

    const byResult = (name: string, help: string, read: () => { total: number, failed: number }): void => {
      new Counter({
        name, help, labelNames: ['result'], registers,
        collect () {
          const { total, failed } = read()
          this.reset()
          this.inc({ result: 'success' }, total - failed)
          this.inc({ result: 'failure' }, failed)
        }
      })
    }
    byResult('cmu_proxy_token_requests_total', 'Access token requests to Adobe, by result', () => {
      const { tokenRequests, tokenFailures } = broker.status().counts
      return { total: tokenRequests, failed: tokenFailures }
    })
    byResult('cmu_proxy_registrations_total', 'Client registrations with Adobe, by result', () => {
      const { registrations, registrationFailures } = broker.status().counts
      return { total: registrations, failed: registrationFailures }
    })
    // The V8 heap ceiling, so that an alert can compare nodejs_heap_size_used_bytes with it.
    new Gauge({ name: 'cmu_proxy_heap_limit_bytes', help: 'The V8 heap size limit of this process', registers, collect () { this.set(getHeapStatistics().heap_size_limit) } })
    // The container's limit, for process_resident_memory_bytes (cached bodies are Buffers outside the heap); no series without one.
    new Gauge({
      name: 'cmu_proxy_memory_limit_bytes', help: 'The memory limit of the container (cgroup v2 memory.max or v1 memory.limit_in_bytes); absent when there is none', labelNames: ['source'], registers,
      async collect () {
        const limit = await readMemoryLimit(cgroupRoot)
        this.reset()
        if (limit !== undefined) this.set({ source: limit.source }, limit.bytes)
      }
    })
    new Gauge({ name: 'cmu_proxy_upstream_headers_timeout_seconds', help: 'UPSTREAM_HEADERS_TIMEOUT_MS: how long Adobe may take to send response headers', registers }).set(upstreamHeadersTimeoutMs / 1000)
    new Gauge({
      name: 'cmu_proxy_token_expires_in_seconds', help: 'Seconds until the current access token expires (0 without one)', registers,
      collect () {
        const expiresAt = broker.status().token?.expiresAt
        this.set(expiresAt === undefined ? 0 : Math.max(0, (expiresAt - now()) / 1000))
      }
    })
    // Expiry is alerted on relative to it: a 5-minute token and a 6-hour one are refreshed at the same fraction of their life.
    new Gauge({
      name: 'cmu_proxy_token_lifetime_seconds', help: 'The lifetime Adobe gave the current access token (expires_in; 0 without one)', registers,
      collect () {
        const token = broker.status().token
        this.set(token === undefined ? 0 : (token.expiresAt - token.obtainedAt) / 1000)
      }
    })
    if (cache !== undefined) this.#cacheMetrics(cache)
  }

  #cacheMetrics (cache: ResponseCache): void {
    const registers = [this.registry]
    const counter = (name: string, help: string, read: () => number): void => {
      new Counter({ name, help, registers, collect () { this.reset(); this.inc(read()) } })
    }
    counter('cmu_proxy_cache_hits_total', 'Requests answered from the response cache', () => cache.stats().hits)
    counter('cmu_proxy_cache_misses_total', 'Cacheable requests not found in the cache', () => cache.stats().misses)
    counter('cmu_proxy_cache_bypasses_total', 'Requests that bypassed the cache (no-cache, conditional)', () => cache.stats().bypasses)
    counter('cmu_proxy_cache_evictions_total', 'Entries evicted to stay within CACHE_MAX_BYTES', () => cache.stats().evictions)
    new Counter({
      name: 'cmu_proxy_cache_stale_total', help: 'Stale copies served, by reason (revalidating: stale-while-revalidate; the others: stale-if-error)', labelNames: ['reason'], registers,
      collect () {
        this.reset()
        for (const [reason, count] of Object.entries(cache.stats().stale)) this.inc({ reason }, count)
      }
    })
    new Counter({
      name: 'cmu_proxy_cache_uncacheable_total', help: "Adobe's answers its directives kept out of the cache (no-store, private, set-cookie, vary, large-headers, stale-on-arrival) or made every use revalidate (no-cache), by reason", labelNames: ['reason'], registers,
      collect () {
        this.reset()
        for (const [reason, count] of Object.entries(cache.stats().uncacheable)) this.inc({ reason }, count)
      }
    })
    new Gauge({ name: 'cmu_proxy_cache_bytes', help: 'Bytes held by the response cache', registers, collect () { this.set(cache.stats().bytes) } })
    new Gauge({ name: 'cmu_proxy_cache_entries', help: 'Entries held by the response cache', registers, collect () { this.set(cache.stats().entries) } })
  }

  /** Admission control and buffering, read at scrape time. */
  watchLoad (upstream: { readonly load: { waiting: number, shed: number } }, cache: { readonly bufferingBytes: number } | undefined): void {
    const registers = [this.registry]
    new Gauge({ name: 'cmu_proxy_upstream_pending', help: 'Requests waiting for Adobe (sent or queued, no response headers yet)', registers, collect () { this.set(upstream.load.waiting) } })
    new Counter({ name: 'cmu_proxy_requests_shed_total', help: 'Requests refused at once with 503 CMU_PROXY_OVERLOADED because UPSTREAM_MAX_PENDING were waiting for Adobe', registers, collect () { this.reset(); this.inc(upstream.load.shed) } })
    if (cache !== undefined) {
      new Gauge({ name: 'cmu_proxy_cache_buffering_bytes', help: 'Bytes held by answers being read into memory for the cache (bounded by CACHE_MAX_INFLIGHT_BYTES)', registers, collect () { this.set(cache.bufferingBytes) } })
    }
  }

  /** Fleet mode: the shared store's health, errors and latency. */
  watchStore (store: StateStore): void {
    const registers = [this.registry]
    this.#storeDuration = new FastHistogram('cmu_proxy_redis_operation_duration_seconds', 'Time of each operation on the fleet\'s Redis, answered or failed', 'operation', STORE_BUCKETS, this.registry)
    new Gauge({ name: 'cmu_proxy_redis_up', help: 'The fleet\'s Redis is connected and answering (1) or not (0)', registers, collect () { this.set(store.stats().up ? 1 : 0) } })
    const counter = (name: string, help: string, read: (stats: ReturnType<StateStore['stats']>) => number): void => {
      new Counter({ name, help, registers, collect () { this.reset(); this.inc(read(store.stats())) } })
    }
    counter('cmu_proxy_redis_errors_total', 'Redis operations that failed (timeouts, disconnects, error replies)', (stats) => stats.errors)
    counter('cmu_proxy_redis_timeouts_total', 'Redis operations that got no answer within REDIS_COMMAND_TIMEOUT_MS', (stats) => stats.timeouts)
    counter('cmu_proxy_redis_reconnects_total', 'Connections to Redis re-established after a loss', (stats) => stats.reconnects)
    counter('cmu_proxy_state_unseal_failures_total', 'Values in Redis that did not open with STATE_ENCRYPTION_KEY', (stats) => stats.unsealFailures ?? 0)
  }

  /** Tracing on: spans that never reached the collector, read at scrape time. */
  watchTracing (tracing: { readonly spansDropped: Readonly<Record<string, number>> }): void {
    new Counter({
      name: 'cmu_proxy_trace_spans_dropped_total', help: 'Spans not exported, by reason: queue_full (OTEL_BSP_MAX_QUEUE_SIZE spans were waiting) or export_failed (the collector refused or did not answer)', labelNames: ['reason'], registers: [this.registry],
      collect () {
        this.reset()
        for (const [reason, count] of Object.entries(tracing.spansDropped)) this.inc({ reason }, count)
      }
    })
  }

  /** For the state store: one observation per operation. */
  observeStoreOperation (operation: string, seconds: number, _ok: boolean): void {
    this.#storeDuration?.observe(operation, seconds)
  }

  countReload (result: ReloadResult): void {
    this.#reloads[result]++
  }

  countPurge (scope: PurgeScope): void {
    this.#purges[scope]++
  }

  /** A caller over its RATE_LIMIT (answered 429, never sent to Adobe). */
  countRateLimited (): void {
    this.#rateLimited++
  }

  /** Retries of dropped connections to Adobe, read at scrape time. */
  watchRetries (retry: { readonly retries: Readonly<Record<string, number>>, readonly budgetExhausted: number }): void {
    const registers = [this.registry]
    new Counter({
      name: 'cmu_proxy_upstream_retries_total', help: 'Calls to Adobe (reports, token) sent once more on a fresh connection after the connection failed before any answer, by reason', labelNames: ['reason'], registers,
      collect () {
        this.reset()
        for (const [reason, count] of Object.entries(retry.retries)) this.inc({ reason }, count)
      }
    })
    new Counter({ name: 'cmu_proxy_upstream_retry_budget_exhausted_total', help: 'Report calls not retried after a dropped connection because retries already used their budget (10% of requests over 10 s, at least 3)', registers, collect () { this.reset(); this.inc(retry.budgetExhausted) } })
  }

  /** For Upstream: one observation per response from Adobe. */
  observeUpstream (seconds: number, status: number): void {
    this.#upstreamDuration.observe(statusClass(status), seconds)
  }

  /** For Upstream: a call that got no headers within the connect or headers timeout, at the time it took (status_class="timeout"). */
  observeUpstreamTimeout (seconds: number): void {
    this.#upstreamDuration.observe('timeout', seconds)
  }

  requestStarted (): void {
    this.#inFlight++
  }

  /** `route`: one of the labels #routeLabel gives ('cmu' for forwarded requests); `problem`: the CMU_PROXY_* code answered, if any. */
  requestFinished (route: string, status: number, cacheResult: string | null, seconds: number, problem: string | null): void {
    this.#inFlight--
    this.#requests.inc(route, statusClass(status), cacheResult ?? 'NONE')
    this.#requestDuration.observe(route, seconds)
    if (problem !== null) this.#problems.inc(route, problem)
  }

  /** A Fastify request whose caller left before its answer was complete (counted as 499). */
  requestAbandoned (routePattern: string | undefined, cacheResult: string | null, seconds: number, problem: string): void {
    this.requestFinished(this.#routeLabel(routePattern), 499, cacheResult, seconds, problem)
  }

  /**
   * A root-level onResponse hook: counts every request that finished,
   * including 404s and health checks (requestStarted is called by app.ts's
   * one onRequest hook; a caller that left is counted by requestAbandoned).
   */
  instrument (app: FastifyInstance): void {
    // Callback-style: no promise per request on the hot path.
    app.addHook('onResponse', (request: FastifyRequest, reply: FastifyReply, done) => {
      if (!request.callerLeft) this.requestFinished(this.#routeLabel(request.routeOptions.url), reply.statusCode, request.cacheResult, reply.elapsedTime / 1000, request.problemCode)
      done()
    })
  }

  /** A small, fixed label set: the route pattern, never the raw URL. */
  #routeLabel (pattern: string | undefined): string {
    const key = pattern ?? ''
    let label = this.#routeLabels.get(key)
    if (label === undefined) {
      const api = this.#routes.find(({ prefix }) => key === prefix || key.startsWith(`${prefix}/`))
      if (api !== undefined) label = api.name
      else if (key.startsWith('/admin/')) label = 'admin'
      else if (['/healthz', '/readyz', '/metrics'].includes(key)) label = key.slice(1)
      else label = 'not_found'
      this.#routeLabels.set(key, label)
    }
    return label
  }
}

export async function metricsRoute (app: FastifyInstance, { metrics }: { metrics: ProxyMetrics }): Promise<void> {
  app.get('/metrics', { config: { otel: false } }, async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType).header('cache-control', 'no-store')
    return await metrics.registry.metrics()
  })
}

function statusClass (status: number): string {
  return `${Math.floor(status / 100)}xx`
}
