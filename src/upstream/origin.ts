// The origin as the cache sees it: one exchange with Adobe for a caller's
// request, with the header policy (which request headers cross, which
// encodings a caller may get) and the token policy (authorized-fetch.ts)
// applied. The cache holds an Origin and asks it; it never builds the call.
import type { Readable } from 'node:stream'
import type { Tracer } from '@opentelemetry/api'
import { upstreamBadEncoding } from '../kernel/errors.js'
import { withTokenRetry, type RequestWarnings, type TokenSource } from './authorized-fetch.js'
import { encodingAcceptable, upstreamRequestHeaders, type CallerRequest, type Validators } from './header-policy.js'
import type { UpstreamTarget } from './target.js'
import { UNAUTHORIZED } from './stream-handler.js'
import { wasRetried } from './transport-errors.js'
import type { ReportRoutes } from './report-upstreams.js'
import type { Upstream } from './upstream.js'

export interface OriginRequest extends CallerRequest {
  target: UpstreamTarget
  /** The caller's request logger, for warnings about this exchange (a rejected token). */
  log?: RequestWarnings | undefined
}

/** Adobe's answer: status and headers as received, the body still to be read. */
export interface OriginResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Readable
  /** The exchange was retried after a dropped connection (for the request log line). */
  retried: boolean
  /**
   * When the request that got this answer was handed to the connection pool,
   * on the clock the origin was given: after any wait for a token and any
   * retry after a 401, so the response delay of RFC 9111 §4.2.3 counts this
   * exchange only (a wait in the pool's queue still counts: it only ever
   * makes an answer older).
   */
  dispatchedAt: number
}

export interface Origin {
  /**
   * Resolves when Adobe's headers arrive; rejects with a ProxyError
   * (UpstreamUnavailable when no answer could be had). With `validators`, the
   * request is conditional on them (a stored answer's), not on the caller's.
   */
  fetch: (request: OriginRequest, signal: AbortSignal, validators?: Validators) => Promise<OriginResponse>
}

export interface AuthorizedOriginOptions {
  tokens: TokenSource
  /** Each API's pool and base path (report-upstreams.ts). */
  upstreams: ReportRoutes<Pick<Upstream, 'request'>>
  /** When tracing is on: the token wait becomes a span. */
  tracer?: Tracer | undefined
  /** The deadline clock of dispatchedAt: the cache layer's (required: an instant on another clock would make every answer look ages old). */
  now: () => number
}

/** Adobe with our token: a 401 invalidates it and is tried once more with a fresh one. */
export class AuthorizedOrigin implements Origin {
  readonly #options: AuthorizedOriginOptions

  constructor (options: AuthorizedOriginOptions) {
    this.#options = options
  }

  async fetch (request: OriginRequest, signal: AbortSignal, validators?: Validators): Promise<OriginResponse> {
    const { tokens, upstreams, tracer, now } = this.#options
    const { upstream, basePath } = upstreams.route(request.target.api)
    const headers = upstreamRequestHeaders(request, validators)
    let dispatchedAt = now()
    const response = await withTokenRetry(tokens, async (authorization) => {
      dispatchedAt = now()
      const response = await upstream.request({ path: request.target.path, basePath, query: request.target.query, headers: { ...headers, authorization }, signal })
      if (response.statusCode !== 401) return response
      await response.body.dump()
      return UNAUTHORIZED
    }, tracer, request.log)
    if (!encodingAcceptable(response.headers['content-encoding'], request.gzipAccepted)) {
      response.body.on('error', () => {}).destroy()
      throw upstreamBadEncoding()
    }
    return { status: response.statusCode, headers: response.headers, body: response.body, retried: wasRetried(response), dispatchedAt }
  }
}
