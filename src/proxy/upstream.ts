// The keep-alive connection pool to the CMU origin, and the one boundary where
// transport failures become caller-facing 502/504 problems.
import { Pool, type Dispatcher } from 'undici'
import { upstreamTimeout, upstreamUnreachable, type ProxyError } from '../errors.js'

export interface UpstreamOptions {
  /** ADOBE_CMU_URL: origin plus an optional base path, e.g. https://mgmt.auth.adobe.com/cmu */
  baseUrl: string
  connections: number
  connectTimeoutMs: number
  headersTimeoutMs: number
  bodyTimeoutMs: number
  /** Called with the time to response headers, for metrics. */
  onResponse?: ((seconds: number, status: number) => void) | undefined
}

export interface UpstreamRequest {
  method: 'GET'
  /** Path after the base path, starting with '/' (or empty) */
  path: string
  /** Raw query without '?', '' when none */
  query: string
  headers: Record<string, string>
  signal: AbortSignal
}

export class Upstream {
  readonly #pool: Pool
  readonly #basePath: string
  readonly #onResponse: ((seconds: number, status: number) => void) | undefined

  constructor (options: UpstreamOptions) {
    const base = new URL(options.baseUrl)
    this.#basePath = base.pathname.replace(/\/+$/, '')
    this.#onResponse = options.onResponse
    // Pool (not fetch): keep-alive sockets, streaming bodies, and redirects are never followed.
    this.#pool = new Pool(base.origin, {
      connections: options.connections,
      connectTimeout: options.connectTimeoutMs,
      headersTimeout: options.headersTimeoutMs,
      bodyTimeout: options.bodyTimeoutMs,
      keepAliveTimeout: 30_000
    })
  }

  /** Sends one request; resolves when the response headers arrive. Rejects with a ProxyError. */
  async request ({ method, path, query, headers, signal }: UpstreamRequest): Promise<Dispatcher.ResponseData> {
    const fullPath = `${this.#basePath}${path === '' && this.#basePath === '' ? '/' : path}${query === '' ? '' : `?${query}`}`
    const started = performance.now()
    try {
      const response = await this.#pool.request({ method, path: fullPath, headers, signal })
      this.#onResponse?.((performance.now() - started) / 1000, response.statusCode)
      return response
    } catch (err) {
      // The caller went away (see cmu-route): nobody is left to answer.
      if (signal.aborted) throw err
      throw transportError(err)
    }
  }

  async close (): Promise<void> {
    await this.#pool.close()
  }
}

/** undici error codes: lib/core/errors.js */
export function transportError (err: unknown): ProxyError {
  const code = (err as { code?: string }).code
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT': return withCause(upstreamTimeout('connect'), err)
    case 'UND_ERR_HEADERS_TIMEOUT': return withCause(upstreamTimeout('response headers'), err)
    case 'UND_ERR_BODY_TIMEOUT': return withCause(upstreamTimeout('response body'), err)
    default: return withCause(upstreamUnreachable(), err)
  }
}

function withCause (error: ProxyError, cause: unknown): ProxyError {
  Object.defineProperty(error, 'cause', { value: cause, enumerable: false })
  return error
}
