// The environment's schema: every variable the proxy reads, its type, bounds
// and default, validated by env-schema (the validator behind @fastify/env) in
// load.ts. The raw Config type is derived from it, so the two never drift;
// only config/ sees it: the rest of the code gets typed sections (settings.ts).

// Durations end up in setTimeout, which fires after 1 ms when given more than
// 2^31-1 ms: every one has a ceiling far below that (an hour).
const MAX_DURATION_MS = 3_600_000
const ms = (defaultValue: number, minimum = 1) => ({ type: 'integer', minimum, maximum: MAX_DURATION_MS, default: defaultValue }) as const
// Cache lifetimes end up in instants (ms) and in Redis PX values: a year is
// beyond any report's use, and keeps every sum of them exact and in range.
const MAX_CACHE_SECONDS = 365 * 24 * 3600

export const configSchema = {
  type: 'object',
  properties: {
    HOST: { type: 'string', minLength: 1, default: '127.0.0.1' },
    PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 8080 },
    LOG_LEVEL: { type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },

    ADOBE_SOFTWARE_STATEMENT: { type: 'string', pattern: '^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]*$' },
    ADOBE_SOFTWARE_STATEMENT_FILE: { type: 'string', minLength: 1 },
    ADOBE_CLIENT_ID: { type: 'string', minLength: 1 },
    ADOBE_CLIENT_SECRET: { type: 'string', minLength: 1 },
    ADOBE_CLIENT_SECRET_FILE: { type: 'string', minLength: 1 },
    ADOBE_AUTH_URL: { type: 'string', pattern: '^https?://', default: 'https://api.auth.adobe.com' },
    ADOBE_CMU_URL: { type: 'string', pattern: '^https?://', default: 'https://mgmt.auth.adobe.com/cmu' },
    // Entitlement Service Monitoring, behind the same registration and token: GET /esm/<rest> -> ADOBE_ESM_URL/<rest>.
    ADOBE_ESM_URL: { type: 'string', pattern: '^https?://', default: 'https://mgmt.auth.adobe.com/esm' },
    CREDENTIALS_FILE: { type: 'string', minLength: 1, default: 'data/credentials.json' },
    CMU_PROXY_ENV_FILE: { type: 'string', minLength: 1 },

    // The local path prefix that is forwarded: GET <prefix>/<rest> -> ADOBE_CMU_URL/<rest>.
    PROXY_PATH_PREFIX: { type: 'string', pattern: '^(/[A-Za-z0-9._~-]+)+$', default: '/cmu' },
    UPSTREAM_CONNECT_TIMEOUT_MS: ms(5_000),
    UPSTREAM_HEADERS_TIMEOUT_MS: ms(60_000),
    UPSTREAM_BODY_TIMEOUT_MS: ms(60_000),
    UPSTREAM_CONNECTIONS: { type: 'integer', minimum: 1, maximum: 1024, default: 64 },
    // Requests waiting for Adobe beyond this are refused at once (503 CMU_PROXY_OVERLOADED): undici's queue has no bound.
    UPSTREAM_MAX_PENDING: { type: 'integer', minimum: 1, default: 1000 },
    AUTH_TIMEOUT_MS: ms(10_000),

    // Refresh at about 2/3 of the token's lifetime, and at least this long before expiry.
    TOKEN_REFRESH_MARGIN_SECONDS: { type: 'integer', minimum: 0, maximum: 86_400, default: 60 },
    // Backoff for failed token/registration calls: full jitter between 0 and base * 2^attempt, capped.
    TOKEN_RETRY_BASE_MS: ms(1_000),
    TOKEN_RETRY_MAX_MS: ms(60_000),

    // Response cache of complete 200 answers (cache/): bounded by total and per-entry bytes.
    CACHE_ENABLED: { type: 'boolean', default: true },
    CACHE_MAX_BYTES: { type: 'integer', minimum: 0, default: 64 * 1024 * 1024 },
    CACHE_MAX_ENTRY_BYTES: { type: 'integer', minimum: 0, default: 4 * 1024 * 1024 },
    // What all answers being read into memory for the cache may hold at once; past it they stream uncached.
    CACHE_MAX_INFLIGHT_BYTES: { type: 'integer', minimum: 0, default: 32 * 1024 * 1024 },
    // Caps every TTL: Adobe's explicit freshness (max-age, Expires), else its recompute schedule for the report's granularity.
    CACHE_TTL_MAX_SECONDS: { type: 'integer', minimum: 0, maximum: MAX_CACHE_SECONDS, default: 2 * 24 * 3600 },
    // true: the recompute schedule decides freshness even when Adobe sends max-age, Expires or no-cache
    // (nginx's proxy_ignore_headers Cache-Control Expires); no-store and private are never overridden.
    CACHE_IGNORE_ORIGIN_FRESHNESS: { type: 'boolean', default: false },
    // An expired entry is kept this long to be served when Adobe fails (stale-if-error, RFC 5861).
    CACHE_STALE_IF_ERROR_SECONDS: { type: 'integer', minimum: 0, maximum: MAX_CACHE_SECONDS, default: 24 * 3600 },
    // Past its TTL, an entry answers at once for this long while one background refresh runs
    // (stale-while-revalidate). Unset: 10% of the entry's TTL, at least 30 s. 0 turns it off.
    CACHE_STALE_WHILE_REVALIDATE_SECONDS: { type: 'integer', minimum: 0, maximum: MAX_CACHE_SECONDS },

    // Inbound keys for /cmu (comma-separated, or one per line in the _FILE); unset = open,
    // which is allowed only on a loopback HOST unless PROXY_ALLOW_ANONYMOUS=true.
    PROXY_API_KEYS: { type: 'string' },
    PROXY_API_KEYS_FILE: { type: 'string', minLength: 1 },
    PROXY_ALLOW_ANONYMOUS: { type: 'boolean', default: false },
    // Host names served besides loopback names (localhost, 127.0.0.1, [::1]), comma-separated: in anonymous
    // mode every other Host gets 421 (DNS rebinding); with keys, unset means any Host.
    PROXY_ALLOWED_HOSTS: { type: 'string' },
    // Enables /admin/* when set.
    ADMIN_API_KEY: { type: 'string', minLength: 16 },
    ADMIN_API_KEY_FILE: { type: 'string', minLength: 1 },

    // Per caller: its API key, or its address when no keys are configured. "600/minute", also /second, /hour.
    // Its format is checked where it is parsed (rate-limit-rules.ts).
    RATE_LIMIT: { type: 'string' },
    // Per-key overrides, one "<api key> <rule>" per line (a mounted secret: it holds keys).
    RATE_LIMIT_KEYS: { type: 'string' },
    RATE_LIMIT_KEYS_FILE: { type: 'string', minLength: 1 },

    // Fleet mode: credentials, token, response cache and rate-limit counters shared through Redis.
    // redis:// or rediss:// (TLS); ACL user and password in the URL, or the password in REDIS_PASSWORD(_FILE).
    REDIS_URL: { type: 'string', pattern: '^rediss?://' },
    REDIS_PASSWORD: { type: 'string', minLength: 1 },
    REDIS_PASSWORD_FILE: { type: 'string', minLength: 1 },
    // An ACL user; wins over the one in REDIS_URL (Sentinel has no URL to hold one).
    REDIS_USERNAME: { type: 'string', minLength: 1 },
    // Redis behind Sentinel, instead of REDIS_URL: sentinels as host:port,host:port and the monitored master's name.
    REDIS_SENTINELS: { type: 'string', minLength: 1 },
    REDIS_SENTINEL_NAME: { type: 'string', minLength: 1 },
    // REDIS_URL names one node of a Redis Cluster; every key of the application goes to one hash slot.
    REDIS_CLUSTER: { type: 'boolean', default: false },
    // TLS to Redis (rediss://, or Sentinel with a CA): PEM, each also from a _FILE (read at start).
    REDIS_TLS_CA: { type: 'string', minLength: 1 },
    REDIS_TLS_CA_FILE: { type: 'string', minLength: 1 },
    REDIS_TLS_CERT: { type: 'string', minLength: 1 },
    REDIS_TLS_CERT_FILE: { type: 'string', minLength: 1 },
    REDIS_TLS_KEY: { type: 'string', minLength: 1 },
    REDIS_TLS_KEY_FILE: { type: 'string', minLength: 1 },
    // Every key starts with this, then the statement's fingerprint (or the client id's): applications never share state.
    REDIS_KEY_PREFIX: { type: 'string', pattern: '^[^\\s]*$', maxLength: 64, default: 'cmu-proxy:' },
    // The longest any caller waits on one Redis command; past it, Redis counts as unavailable for that call.
    REDIS_COMMAND_TIMEOUT_MS: ms(250),
    // Fleet-wide locks (one registration, one token call, one upstream call per report) expire after this
    // unless their holder is alive to extend them: how long a crashed holder delays the others.
    REDIS_LOCK_TTL_MS: ms(5_000, 100),
    // Required in fleet mode: 32-byte keys, base64 or hex, comma-separated; the first seals, all open.
    STATE_ENCRYPTION_KEY: { type: 'string' },
    STATE_ENCRYPTION_KEY_FILE: { type: 'string', minLength: 1 },

    // Callers' connections (proxy/front-door.ts), each one of Node's HTTP server settings.
    // The whole request must arrive within this; no route takes a body, so it bounds the head (nginx's client_header_timeout).
    INBOUND_REQUEST_TIMEOUT_MS: ms(60_000),
    // An idle kept-alive connection is closed after this: longer than the 60 s idle timeout of common load balancers, so they close first.
    INBOUND_KEEP_ALIVE_TIMEOUT_MS: ms(72_000),
    // Requests one connection may carry; the last answer says Connection: close (nginx's keepalive_requests). 0: no limit.
    INBOUND_MAX_REQUESTS_PER_CONNECTION: { type: 'integer', minimum: 0, default: 1000 },
    // Open connections; past it, new ones are closed at once. Keep it below the open-files limit.
    INBOUND_MAX_CONNECTIONS: { type: 'integer', minimum: 1, default: 4096 },
    // Requests one connection may have waiting for their answers; past it the connection is not read until one is answered.
    INBOUND_MAX_PIPELINED_REQUESTS: { type: 'integer', minimum: 1, maximum: 1024, default: 16 },

    // On SIGTERM/SIGINT: stop accepting, let in-flight responses finish for this long, then exit.
    SHUTDOWN_GRACE_SECONDS: { type: 'integer', minimum: 0, maximum: MAX_DURATION_MS / 1000, default: 10 },

    // Egress proxy for every call to Adobe; lower-case names are read too (load.ts), decided per origin in egress-proxy.ts.
    HTTPS_PROXY: { type: 'string', pattern: '^https?://[^/?#]' },
    HTTP_PROXY: { type: 'string', pattern: '^https?://[^/?#]' },
    NO_PROXY: { type: 'string' },

    // OpenTelemetry traces (telemetry/tracing.ts), by the standard names: on with an OTLP endpoint or
    // OTEL_TRACES_EXPORTER=otlp, exported over OTLP/HTTP.
    OTEL_EXPORTER_OTLP_ENDPOINT: { type: 'string', pattern: '^https?://' },
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: { type: 'string', pattern: '^https?://' },
    OTEL_EXPORTER_OTLP_HEADERS: { type: 'string' },
    OTEL_EXPORTER_OTLP_TRACES_HEADERS: { type: 'string' },
    OTEL_EXPORTER_OTLP_PROTOCOL: { type: 'string', enum: ['http/json', 'http/protobuf'] },
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: { type: 'string', enum: ['http/json', 'http/protobuf'] },
    OTEL_TRACES_EXPORTER: { type: 'string', enum: ['otlp', 'none'] },
    OTEL_SDK_DISABLED: { type: 'boolean', default: false },
    OTEL_SERVICE_NAME: { type: 'string', minLength: 1, default: 'cmu-proxy' },
    OTEL_RESOURCE_ATTRIBUTES: { type: 'string' },
    OTEL_TRACES_SAMPLER: { type: 'string', enum: ['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'] },
    OTEL_TRACES_SAMPLER_ARG: { type: 'string', pattern: '^(0(\\.[0-9]+)?|1(\\.0+)?)$' },
    // Ended spans waiting for export; beyond this they are dropped (and counted). The SDK's default.
    OTEL_BSP_MAX_QUEUE_SIZE: { type: 'integer', minimum: 1, maximum: 1_000_000, default: 2048 },
    // Send traceparent on to Adobe (a third party: off unless asked for).
    TRACE_PROPAGATE_TO_ADOBE: { type: 'boolean', default: false }
  },
  required: ['HOST', 'PORT']
} as const

type Schema = typeof configSchema
type Props = Schema['properties']
/** The name of a variable of the schema. */
export type Variable = keyof Props
type ValueOf<P> = P extends { enum: ReadonlyArray<infer E> } ? E : P extends { type: 'integer' | 'number' } ? number : P extends { type: 'boolean' } ? boolean : string
type WithDefault = { [K in keyof Props]: Props[K] extends { default: unknown } ? K : never }[keyof Props]

/** The validated configuration: exactly the variables of the schema, with defaults applied. */
export type Config = { readonly [K in WithDefault]: ValueOf<Props[K]> } & { readonly [K in Exclude<keyof Props, WithDefault>]?: ValueOf<Props[K]> }
