// buildApp(settings, deps): wires the modules into one Fastify instance,
// handing each its section of the settings (config/settings.ts). It never
// listens; main.ts does, and tests build the very same app.
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { CredentialStore } from './adobe/credential-store.js'
import { DcrClient } from './adobe/dcr-client.js'
import { TokenBroker } from './adobe/token-broker.js'
import { CacheLayer } from './cache/cache-layer.js'
import { ResponseCache } from './cache/response-cache.js'
import { monotonicNow } from './kernel/clock.js'
import type { Settings } from './config/settings.js'
import { PROBLEM_HEADERS, ProxyError, badPath, describeCause, internalError, notFound, problemBody, unauthorized } from './kernel/errors.js'
import { adminRoutes } from './ops/admin.js'
import { LiveSecrets } from './ops/live-secrets.js'
import { SwitchableBroker, type BrokerGeneration } from './ops/switchable-broker.js'
import { healthRoutes } from './ops/health.js'
import { ProxyMetrics, metricsRoute } from './ops/metrics.js'
import { startTracing } from './telemetry/tracing.js'
import { ApiKeys, presentedKey } from './proxy/api-keys.js'
import { hostCheck } from './proxy/allowed-hosts.js'
import { frontDoorServer, refuseBodies } from './proxy/front-door.js'
import type { RateLimitRules } from './proxy/rate-limit.js'
import type { TokenSide } from './fleet/fleet.js'
import { CmuForwarder, type CacheResult } from './proxy/forwarder.js'
import { cmuRoutes } from './proxy/routes.js'
import { reportApis } from './proxy/report-apis.js'
import { ReportOrigin } from './proxy/report-origin.js'
import { ReportUpstreams } from './upstream/report-upstreams.js'
import type { ReportApiName } from './upstream/target.js'
import { createDispatcher, describeAdobeEgress } from './upstream/dispatchers.js'
import { Upstream } from './upstream/upstream.js'
import { callerGone, wasRetried } from './upstream/transport-errors.js'
import { AuthorizedOrigin } from './upstream/origin.js'
import { callerResponseHeaders } from './upstream/header-policy.js'
import { requestId } from './kernel/request-id.js'
import { RequestLogController, requestLine } from './kernel/request-log.js'
import { RetryPolicy } from './upstream/retry-policy.js'
import { USER_AGENT } from './kernel/version.js'
import { isLoopbackHost } from './kernel/loopback.js'

export interface AppDependencies {
  logger: Logger
  /** Deadline clock (token broker, cache; default monotonicNow) and randomness (token broker, retry pauses); tests pin them. */
  now?: () => number
  random?: () => number
  /** Fleet mode: how often each instance looks at the shared state without a notice (tests shorten it). */
  fleetReconcileIntervalMs?: number
  /** Where /proc and /sys are read for the container's memory limit metric (tests point it at a fixture). */
  cgroupRoot?: string
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The broker of the software statement in use (a reload may switch it). */
    broker: SwitchableBroker
    /** What a reload of the secrets applies to (main.ts hands it to config/reload.ts). */
    liveSecrets: LiveSecrets
    /** Undefined when CACHE_ENABLED=false. */
    responseCache: ResponseCache | undefined
  }
  interface FastifyRequest {
    /** The CMU_PROXY_* code of the problem answered, for the request log line (kernel/request-log.ts). */
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
    /** The report API a forwarded request is for (its log line's `api`, its span's cmu_proxy.api). */
    reportApi: ReportApiName | null
  }
}

const CALLER_GONE = callerGone()

export async function buildApp (settings: Settings, deps: AppDependencies): Promise<FastifyInstance> {
  const { adobe, token, upstream: upstreamSettings, cache: cacheSettings, inbound, frontDoor } = settings
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
    // Node's server with the front door's limits; what its parser refuses is answered there too.
    ...frontDoorServer(frontDoor, deps.logger)
  })

  const { egress } = upstreamSettings
  if (egress.auth !== undefined || egress.cmu !== undefined || egress.esm !== undefined) deps.logger.info({ egress: describeAdobeEgress(egress) }, 'calls to Adobe go through an egress proxy')
  const retry = new RetryPolicy(deps.random === undefined ? {} : { random: deps.random })
  const authDispatcher = createDispatcher(new URL(adobe.authUrl).origin, egress.auth, { connectTimeoutMs: adobe.authTimeoutMs, keepAliveTimeoutMs: 10_000 })
  // HTTP dates (Retry-After, Expires) and report end dates are wall-clock times; deadlines are not.
  const wallNow = deps.now ?? Date.now
  const dcr = new DcrClient({ authUrl: adobe.authUrl, dispatcher: authDispatcher, timeoutMs: adobe.authTimeoutMs, userAgent: USER_AGENT, now: wallNow, retry })
  const statement = adobe.softwareStatement
  // Fleet mode (REDIS_URL or REDIS_SENTINELS): the same modules, with the fleet's side plugged in; the metrics observe its store.
  // Loaded only then: a lone instance does not carry the Redis client.
  const fleet = settings.fleet === undefined ? undefined : (await import('./fleet/fleet.js')).createFleet({ fleet: settings.fleet, adobe, upstream: upstreamSettings, cache: cacheSettings }, {
    logger: deps.logger,
    wallNow,
    onOperation: (operation, seconds, ok) => { metrics.observeStoreOperation(operation, seconds, ok) },
    ...(deps.fleetReconcileIntervalMs === undefined ? {} : { reconcileIntervalMs: deps.fleetReconcileIntervalMs })
  })
  const tracing = await startTracing(settings.tracing)
  // One statement's broker; a reload that changes the statement starts another beside it (ops/switchable-broker.ts).
  const brokerFor = (softwareStatement: string | undefined, side: TokenSide | undefined = fleet): TokenBroker => new TokenBroker({
    dcr,
    tracer: tracing?.tracer,
    logger: deps.logger,
    softwareStatement,
    store: side?.credentials ?? (softwareStatement === undefined ? undefined : new CredentialStore(adobe.credentialsFile, softwareStatement)),
    coordination: side?.coordination,
    // In a fleet, the sealed copy in Redis keeps the credentials: CREDENTIALS_FILE is a second copy there.
    durableElsewhere: fleet !== undefined,
    wallNow,
    staticCredentials: adobe.staticCredentials,
    refreshMarginMs: token.refreshMarginMs,
    retryBaseMs: token.retryBaseMs,
    retryMaxMs: token.retryMaxMs,
    now,
    ...(deps.random === undefined ? {} : { random: deps.random })
  })
  const broker = new SwitchableBroker({
    initial: { statement, broker: brokerFor(statement) },
    build: (next): BrokerGeneration => {
      const side = fleet?.tokenSideFor(next)
      return { statement: next, broker: brokerFor(next, side), start: side?.start, close: side?.close }
    },
    logger: deps.logger
  })
  const cache = cacheSettings.enabled
    ? new ResponseCache({ maxBytes: cacheSettings.maxBytes, maxEntryBytes: cacheSettings.maxEntryBytes, now })
    : undefined
  const apis = reportApis(inbound)
  const metrics = new ProxyMetrics({ broker, cache, routes: apis, upstreamHeadersTimeoutMs: upstreamSettings.headersTimeoutMs, now, cgroupRoot: deps.cgroupRoot })
  // CMU and ESM on one host share one pool (report-upstreams.ts).
  const upstreams = new ReportUpstreams({ cmu: { url: adobe.cmuUrl, proxy: egress.cmu }, esm: { url: adobe.esmUrl, proxy: egress.esm } }, ({ url, proxy }) => new Upstream({
    baseUrl: url,
    connections: upstreamSettings.connections,
    connectTimeoutMs: upstreamSettings.connectTimeoutMs,
    headersTimeoutMs: upstreamSettings.headersTimeoutMs,
    bodyTimeoutMs: upstreamSettings.bodyTimeoutMs,
    maxPending: upstreamSettings.maxPending,
    proxy,
    retry,
    onResponse: (seconds, status) => { metrics.observeUpstream(seconds, status) },
    onTimeout: (seconds) => { metrics.observeUpstreamTimeout(seconds) },
    spans: tracing?.upstreamSpans(url)
  }))
  const origin = new ReportOrigin({
    origin: new AuthorizedOrigin({ tokens: broker, upstreams, tracer: tracing?.tracer, now }),
    apis,
    maxBodyBytes: cacheSettings.maxEntryBytes,
    maxInflightBytes: cacheSettings.maxInflightBytes
  })
  const cacheLayer = cache === undefined
    ? undefined
    : new CacheLayer({
      cache,
      shared: fleet?.cache,
      origin,
      callerHeaders: callerResponseHeaders,
      ttlMaxSeconds: cacheSettings.ttlMaxSeconds,
      staleIfErrorSeconds: cacheSettings.staleIfErrorSeconds,
      staleWhileRevalidateSeconds: cacheSettings.staleWhileRevalidateSeconds,
      ignoreOriginFreshness: cacheSettings.ignoreOriginFreshness,
      bufferingMaxBytes: cacheSettings.maxInflightBytes,
      logger: deps.logger.child({ component: 'cache' }),
      now,
      wallNow,
      tracer: tracing?.tracer
    })
  const forwarder = new CmuForwarder({ broker, upstreams, origin, cache: cacheLayer, tracer: tracing?.tracer })
  metrics.watchLoad(upstreams, cacheLayer)
  metrics.watchRetries(retry)
  if (fleet !== undefined) metrics.watchStore(fleet.store)
  if (tracing !== undefined) metrics.watchTracing(tracing)
  const apiKeys = new ApiKeys(inbound.apiKeys)
  const adminKeys = inbound.adminKey === undefined ? undefined : new ApiKeys([inbound.adminKey])
  for (const { variable, url } of adobe.cleartextUrls) {
    deps.logger.warn({ variable, url }, `${variable} is plain http:// to a non-loopback host: the access token and client credentials would cross the network in clear`)
  }
  if (frontDoor.allowedHosts?.size === 0 && !isLoopbackHost(settings.server.host)) {
    deps.logger.warn('no inbound keys: /cmu and /esm answer only requests addressed to localhost, 127.0.0.1 or [::1]; list the names callers use in PROXY_ALLOWED_HOSTS')
  }

  app.decorate('broker', broker)
  app.decorate('responseCache', cache)
  app.decorateRequest('problemCode', null)
  app.decorateRequest('cacheResult', null)
  app.decorateRequest('cacheStatus', null)
  app.decorateRequest('arrivedAt', 0)
  app.decorateRequest('callerLeft', false)
  app.decorateRequest('upstreamRetried', false)
  app.decorateRequest('reportApi', null)
  app.addHook('onReady', async () => {
    await fleet?.start()
    // Rejects (CredentialsNotWritable) before any call to Adobe when CREDENTIALS_FILE cannot be written.
    await broker.start()
  })
  app.addHook('onClose', async () => {
    cacheLayer?.close()
    await broker.close()
    await Promise.all([upstreams.close(), authDispatcher.close(), fleet?.close()])
    await tracing?.shutdown()
  })
  // The server span of every request, before any other hook or route (its recorded requests' log lines carry its ids).
  tracing?.instrument(app)

  // One callback-style hook for what every request needs first: no promise, one hook call.
  app.addHook('onRequest', (request, reply, done) => {
    request.arrivedAt = performance.now()
    reply.header('x-request-id', request.id)
    metrics.requestStarted()
    done()
  })
  // Fastify runs onResponse (and so the request line and metrics) only for a
  // response that finished; a caller that left gets its line and count here.
  app.addHook('onRequestAbort', (request, done) => {
    request.callerLeft = true
    request.problemCode = CALLER_GONE.code
    const durationMs = performance.now() - request.arrivedAt
    metrics.requestAbandoned(request.routeOptions.url, request.cacheResult, durationMs / 1000, CALLER_GONE.code)
    request.log.info(requestLine(request, CALLER_GONE.statusCode, durationMs), 'request')
    done()
  })
  // After the hook above: a refused body still gets its X-Request-Id, log line and count.
  refuseBodies(app)
  metrics.instrument(app)
  app.setErrorHandler(sendProblem)
  app.setNotFoundHandler(async (request, reply) => await sendProblem(notFound(), request, reply))

  await app.register(healthRoutes, { broker, gate: fleet })
  await app.register(metricsRoute, { metrics })
  if (adminKeys !== undefined) {
    await app.register(adminRoutes, {
      adminKeys,
      broker,
      cache,
      softwareStatement: () => broker.statement,
      purge: { cache: cacheLayer, apis, onPurged: (scope) => { metrics.countPurge(scope) } },
      upstreams: { authUrl: adobe.authUrl, cmuUrl: adobe.cmuUrl, esmUrl: adobe.esmUrl },
      state: fleet === undefined ? undefined : () => fleet.status(),
      startedAt,
      now
    })
  }
  let rateLimitRules: RateLimitRules | undefined
  await app.register(async (cmu) => {
    if (frontDoor.allowedHosts !== undefined) cmu.addHook('onRequest', hostCheck(frontDoor.allowedHosts))
    cmu.decorateRequest('apiKeyId', null)
    // Always there: a reload may bring keys to a proxy started without (never the reverse: config/reload.ts).
    cmu.addHook('onRequest', (request, reply, done) => {
      if (apiKeys.size === 0) { done(); return }
      request.apiKeyId = apiKeys.identify(presentedKey(request.headers)) ?? null
      if (request.apiKeyId !== null) { done(); return }
      reply.header('www-authenticate', 'Bearer realm="cmu-proxy"')
      done(unauthorized())
    })
    // Fleet mode: an instance that cannot open the fleet's sealed values answers 503 at once (fleet/membership.ts).
    if (fleet !== undefined) {
      cmu.addHook('onRequest', async () => {
        const refusal = fleet.refusal()
        if (refusal !== undefined) throw refusal
      })
    }
    const { rateLimit } = settings
    if (rateLimit !== undefined) {
      // Loaded only when a limit is set: a proxy without one does not carry the plugin in memory.
      const { registerRateLimit } = await import('./proxy/rate-limit.js')
      rateLimitRules = await registerRateLimit(cmu, { ...rateLimit, store: fleet?.rateLimitStore, onLimited: () => { metrics.countRateLimited() } })
    }
    for (const api of apis) await cmu.register(cmuRoutes, { pathPrefix: api.prefix, api: api.name, forwarder })
  })
  app.decorate('liveSecrets', new LiveSecrets({ apiKeys, adminKeys, rateLimitRules, broker, fleet, metrics }))
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
