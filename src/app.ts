// buildApp(config, deps): wires the modules into one Fastify instance. It
// never listens; main.ts does, and tests build the very same app.
import { resolve } from 'node:path'
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { CredentialStore } from './adobe/credential-store.js'
import { DcrClient } from './adobe/dcr-client.js'
import { TokenBroker } from './adobe/token-broker.js'
import { CacheLayer } from './cache/cache-layer.js'
import { ResponseCache } from './cache/response-cache.js'
import { monotonicNow } from './kernel/clock.js'
import { cleartextAdobeUrls, type Config } from './config/load.js'
import { usesRedis } from './config/redis-settings.js'
import { PROBLEM_HEADERS, ProxyError, badPath, describeCause, internalError, notFound, problemBody, unauthorized } from './kernel/errors.js'
import { adminRoutes } from './ops/admin.js'
import { healthRoutes } from './ops/health.js'
import { ProxyMetrics, metricsRoute } from './ops/metrics.js'
import { endAbandonedSpan, startTracing, traceIds } from './telemetry/tracing.js'
import { ApiKeys, parseKeyList, presentedKey } from './proxy/api-keys.js'
import { CmuForwarder, type CacheResult } from './proxy/forwarder.js'
import { cmuRoutes } from './proxy/routes.js'
import { adobeEgress, createDispatcher, describeAdobeEgress } from './upstream/dispatchers.js'
import { rateLimitSettings } from './config/rate-limit-rules.js'
import { Upstream, callerGone, wasRetried } from './upstream/upstream.js'
import { requestId } from './kernel/request-id.js'
import { RequestLogController, requestLine } from './kernel/request-log.js'
import { RetryPolicy } from './upstream/retry-policy.js'
import { USER_AGENT } from './kernel/version.js'

export interface AppDependencies {
  logger: Logger
  /** Deadline clock (token broker, cache; default monotonicNow) and randomness (token broker, retry pauses); tests pin them. */
  now?: () => number
  random?: () => number
  /** Fleet mode: how often each instance looks at the shared state without a notice (tests shorten it). */
  fleetReconcileIntervalMs?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    broker: TokenBroker
    /** Undefined when CACHE_ENABLED=false. */
    responseCache: ResponseCache | undefined
  }
  interface FastifyRequest {
    /** The CMU_PROXY_* code of the problem answered, for the request log line (request-log.ts). */
    problemCode: string | null
    /** How the cache answered, for metrics and the request log. */
    cacheResult: CacheResult | null
    /** The Cache-Status of a stale answer (why it was served), for the request log. */
    cacheStatus: string | null
    /** performance.now() when the request arrived (for a caller that leaves: no reply timing then). */
    arrivedAt: number
    /** The caller left before its answer was complete: logged and counted once, as 499. */
    callerLeft: boolean
    /** A dropped upstream connection was retried for this request (the `retried` field of its log line). */
    upstreamRetried: boolean
  }
}

const CALLER_GONE = callerGone()

export async function buildApp (config: Config, deps: AppDependencies): Promise<FastifyInstance> {
  const now = deps.now ?? monotonicNow
  const startedAt = now()
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    logController: new RequestLogController({ requestIdLogLabel: 'reqId' }),
    genReqId: (raw) => requestId(raw.headers),
    return503OnClosing: true,
    // A URL Fastify cannot decode (FST_ERR_BAD_URL): our problem format, like every other refusal.
    // (Routing fails before the onRequest hook that sets X-Request-Id.)
    frameworkErrors: (_error, request, reply) => { void sendProblem(badPath('the URL is not valid percent-encoding'), request, reply.header('x-request-id', request.id)) },
    // Node cuts a head that trickles in for longer than headersTimeout, but only checks every
    // 30 s by default: a slow-loris connection would then hold a socket up to 30 s longer.
    http: { connectionsCheckingInterval: 1_000 }
  })

  const egress = adobeEgress(config)
  if (egress.auth !== undefined || egress.cmu !== undefined) deps.logger.info({ egress: describeAdobeEgress(egress) }, 'calls to Adobe go through an egress proxy')
  const retry = new RetryPolicy(deps.random === undefined ? {} : { random: deps.random })
  const authDispatcher = createDispatcher(new URL(config.ADOBE_AUTH_URL).origin, egress.auth, { connectTimeoutMs: config.AUTH_TIMEOUT_MS, keepAliveTimeoutMs: 10_000 })
  // HTTP dates (Retry-After, Expires) and report end dates are wall-clock times; deadlines are not.
  const wallNow = deps.now ?? Date.now
  const dcr = new DcrClient({ authUrl: config.ADOBE_AUTH_URL, dispatcher: authDispatcher, timeoutMs: config.AUTH_TIMEOUT_MS, userAgent: USER_AGENT, now: wallNow, retry })
  const statement = config.ADOBE_SOFTWARE_STATEMENT
  // Fleet mode (REDIS_URL or REDIS_SENTINELS): the same modules, with the fleet's side plugged in; the metrics observe its store.
  // Loaded only then: a lone instance does not carry the Redis client.
  const fleet = !usesRedis(config) ? undefined : (await import('./fleet/fleet.js')).createFleet(config, {
    logger: deps.logger,
    wallNow,
    onOperation: (operation, seconds, ok) => { metrics.observeStoreOperation(operation, seconds, ok) },
    ...(deps.fleetReconcileIntervalMs === undefined ? {} : { reconcileIntervalMs: deps.fleetReconcileIntervalMs })
  })
  const tracing = await startTracing(config)
  const broker = new TokenBroker({
    dcr,
    tracer: tracing?.tracer,
    logger: deps.logger,
    softwareStatement: statement,
    store: fleet?.credentials ?? (statement === undefined ? undefined : new CredentialStore(resolve(config.CREDENTIALS_FILE), statement)),
    coordination: fleet?.coordination,
    wallNow,
    staticCredentials: config.ADOBE_CLIENT_ID !== undefined && config.ADOBE_CLIENT_SECRET !== undefined
      ? { client_id: config.ADOBE_CLIENT_ID, client_secret: config.ADOBE_CLIENT_SECRET }
      : undefined,
    refreshMarginMs: config.TOKEN_REFRESH_MARGIN_SECONDS * 1000,
    retryBaseMs: config.TOKEN_RETRY_BASE_MS,
    retryMaxMs: config.TOKEN_RETRY_MAX_MS,
    now,
    ...(deps.random === undefined ? {} : { random: deps.random })
  })
  const cache = config.CACHE_ENABLED
    ? new ResponseCache({ maxBytes: config.CACHE_MAX_BYTES, maxEntryBytes: config.CACHE_MAX_ENTRY_BYTES, now })
    : undefined
  const metrics = new ProxyMetrics({ broker, cache, pathPrefix: config.PROXY_PATH_PREFIX, now })
  const upstream = new Upstream({
    baseUrl: config.ADOBE_CMU_URL,
    connections: config.UPSTREAM_CONNECTIONS,
    connectTimeoutMs: config.UPSTREAM_CONNECT_TIMEOUT_MS,
    headersTimeoutMs: config.UPSTREAM_HEADERS_TIMEOUT_MS,
    bodyTimeoutMs: config.UPSTREAM_BODY_TIMEOUT_MS,
    maxPending: config.UPSTREAM_MAX_PENDING,
    proxy: egress.cmu,
    retry,
    onResponse: (seconds, status) => { metrics.observeUpstream(seconds, status) },
    spans: tracing?.upstreamSpans(config.ADOBE_CMU_URL)
  })
  const cacheLayer = cache === undefined
    ? undefined
    : new CacheLayer({
      cache,
      shared: fleet?.cache,
      ttlMaxSeconds: config.CACHE_TTL_MAX_SECONDS,
      staleIfErrorSeconds: config.CACHE_STALE_IF_ERROR_SECONDS,
      staleWhileRevalidateSeconds: config.CACHE_STALE_WHILE_REVALIDATE_SECONDS,
      bufferingMaxBytes: config.CACHE_MAX_INFLIGHT_BYTES,
      logger: deps.logger.child({ component: 'cache' }),
      now,
      wallNow,
      tracer: tracing?.tracer
    })
  const forwarder = new CmuForwarder({ broker, upstream, cache: cacheLayer, tracer: tracing?.tracer })
  metrics.watchLoad(upstream, cacheLayer)
  metrics.watchRetries(retry)
  if (fleet !== undefined) metrics.watchStore(fleet.store)
  const apiKeys = new ApiKeys(parseKeyList(config.PROXY_API_KEYS))
  for (const variable of cleartextAdobeUrls(config)) {
    deps.logger.warn({ variable, url: config[variable] }, `${variable} is plain http:// to a non-loopback host: the access token and client credentials would cross the network in clear`)
  }

  app.decorate('broker', broker)
  app.decorate('responseCache', cache)
  app.decorateRequest('problemCode', null)
  app.decorateRequest('cacheResult', null)
  app.decorateRequest('cacheStatus', null)
  app.decorateRequest('arrivedAt', 0)
  app.decorateRequest('callerLeft', false)
  app.decorateRequest('upstreamRetried', false)
  app.addHook('onReady', async () => {
    await fleet?.start()
    broker.start()
  })
  app.addHook('onClose', async () => {
    broker.close()
    cacheLayer?.close()
    await Promise.all([upstream.close(), authDispatcher.close(), fleet?.close()])
    await tracing?.shutdown()
  })
  // The server span of every request, before any other hook or route.
  if (tracing !== undefined) await app.register(tracing.plugin)

  // One callback-style hook for what every request needs first: no promise, one hook call.
  app.addHook('onRequest', (request, reply, done) => {
    request.arrivedAt = performance.now()
    reply.header('x-request-id', request.id)
    metrics.requestStarted()
    done()
  })
  if (tracing !== undefined) {
    // Every line the request logs (its request line included) carries its trace and span ids.
    app.addHook('onRequest', (request, _reply, done) => {
      const ids = traceIds(request)
      if (ids !== undefined) request.log = request.log.child(ids)
      done()
    })
  }
  // Fastify runs onResponse (and so the request line and metrics) only for a
  // response that finished; a caller that left gets its line and count here.
  app.addHook('onRequestAbort', (request, done) => {
    request.callerLeft = true
    request.problemCode = CALLER_GONE.code
    const durationMs = performance.now() - request.arrivedAt
    metrics.requestAbandoned(request.routeOptions.url, request.cacheResult, durationMs / 1000, CALLER_GONE.code)
    request.log.info(requestLine(request, CALLER_GONE.statusCode, durationMs), 'request')
    // Fastify ends the server span in onResponse, which an abandoned request never reaches.
    if (tracing !== undefined) endAbandonedSpan(request, CALLER_GONE.statusCode)
    done()
  })
  metrics.instrument(app)
  app.setErrorHandler(sendProblem)
  app.setNotFoundHandler(async (request, reply) => await sendProblem(notFound(), request, reply))

  await app.register(healthRoutes, { broker })
  await app.register(metricsRoute, { metrics })
  if (config.ADMIN_API_KEY !== undefined) {
    await app.register(adminRoutes, {
      adminKey: config.ADMIN_API_KEY,
      broker,
      cache,
      softwareStatement: statement,
      upstreams: { authUrl: config.ADOBE_AUTH_URL, cmuUrl: config.ADOBE_CMU_URL },
      state: fleet === undefined ? undefined : () => fleet.status(),
      startedAt,
      now
    })
  }
  await app.register(async (cmu) => {
    if (apiKeys.size > 0) {
      cmu.decorateRequest('apiKeyId', null)
      cmu.addHook('onRequest', async (request, reply) => {
        request.apiKeyId = apiKeys.identify(presentedKey(request.headers)) ?? null
        if (request.apiKeyId === null) {
          reply.header('www-authenticate', 'Bearer realm="cmu-proxy"')
          throw unauthorized()
        }
      })
    }
    const rateLimit = rateLimitSettings(config.RATE_LIMIT, config.RATE_LIMIT_KEYS)
    if (rateLimit !== undefined) {
      // Loaded only when a limit is set: a proxy without one does not carry the plugin in memory.
      const { registerRateLimit } = await import('./proxy/rate-limit.js')
      await registerRateLimit(cmu, { ...rateLimit, byApiKey: apiKeys.size > 0, store: fleet?.rateLimitStore, onLimited: () => { metrics.countRateLimited() } })
    }
    await cmu.register(cmuRoutes, { pathPrefix: config.PROXY_PATH_PREFIX, forwarder })
  })
  return app
}

/** RFC 9457 problem details with a stable `code`; never a stack, never an upstream body. */
async function sendProblem (error: FastifyError | ProxyError, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  let problem: ProxyError
  if (error instanceof ProxyError) {
    problem = error
  } else if (typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500) {
    problem = new ProxyError('CMU_PROXY_BAD_REQUEST', error.statusCode, error.message)
  } else {
    request.log.error({ err: error }, 'unhandled error')
    problem = internalError()
  }
  if (problem.statusCode >= 500 && problem.cause !== undefined) {
    request.log.warn({ code: problem.code, cause: describeCause(problem.cause) }, problem.message)
  }
  request.problemCode = problem.code
  if (wasRetried(problem)) request.upstreamRetried = true
  if (reply.sent || reply.raw.headersSent) return reply
  return await reply
    .code(problem.statusCode)
    .headers({ ...problem.headers, ...PROBLEM_HEADERS })
    .send(problemBody(problem, request.id))
}
