// The two Adobe Pass DCR calls, each a request plus a strict parse. No state.
// Adobe docs: "Retrieve client credentials" (POST /o/client/register) and
// "Retrieve access token" (POST /o/client/token).
import type { Dispatcher } from 'undici'
import { RetryPolicy } from '../upstream/retry-policy.js'
import { retryAfter } from '../kernel/retry-after.js'
import { DcrError } from './errors.js'

export interface ClientCredentials {
  client_id: string
  client_secret: string
  /** ms epoch, when Adobe says so */
  client_id_issued_at?: number
  /**
   * ms epoch, when this proxy registered them: their generation. Kept with
   * every copy (the file, the fleet's sealed copy, notices), so that newer
   * credentials are never traded for older ones put back or replayed.
   * Absent on copies written before generations were kept: those are never
   * compared by age (see credential-store.ts, newerThan).
   */
  generation?: number
}

export interface AccessToken {
  access_token: string
  /** seconds */
  expires_in: number
}

export interface DcrClientOptions {
  /** Base URL of /o/client/*, e.g. https://api.auth.adobe.com */
  authUrl: string
  dispatcher: Dispatcher
  timeoutMs: number
  userAgent: string
  /** Wall clock (default Date.now): an HTTP date in Retry-After or Expires is a wall-clock instant. */
  now?: () => number
  /** Which dropped connections the token call retries once (shared with the report calls for the metrics). */
  retry?: RetryPolicy | undefined
}

export class DcrClient {
  readonly #options: DcrClientOptions
  readonly #now: () => number
  readonly #retry: RetryPolicy

  constructor (options: DcrClientOptions) {
    this.#options = options
    this.#now = options.now ?? Date.now
    this.#retry = options.retry ?? new RetryPolicy()
  }

  async registerClient (softwareStatement: string): Promise<ClientCredentials> {
    const body = await this.#post('register', 'application/json', JSON.stringify({ software_statement: softwareStatement }))
    const clientId = body.client_id
    const clientSecret = body.client_secret
    if (typeof clientId !== 'string' || clientId === '' || typeof clientSecret !== 'string' || clientSecret === '') {
      throw new DcrError('protocol', 'registration answer lacks client_id or client_secret')
    }
    const issuedAt = body.client_id_issued_at
    return { client_id: clientId, client_secret: clientSecret, ...(typeof issuedAt === 'number' ? { client_id_issued_at: issuedAt } : {}) }
  }

  async requestToken (credentials: ClientCredentials): Promise<AccessToken> {
    // The form body keeps the secret out of URLs and access logs (Adobe also accepts the query string).
    const form = new URLSearchParams({ grant_type: 'client_credentials', client_id: credentials.client_id, client_secret: credentials.client_secret })
    const body = await this.#post('token', 'application/x-www-form-urlencoded', form.toString())
    const token = body.access_token
    const expiresIn = typeof body.expires_in === 'string' ? Number(body.expires_in) : body.expires_in
    if (typeof token !== 'string' || token === '' || /\s/.test(token)) {
      throw new DcrError('protocol', 'token answer lacks a usable access_token')
    }
    // Under a second, a token would expire before it reached Adobe (and be fetched again at once).
    if (typeof expiresIn !== 'number' || !Number.isFinite(expiresIn) || expiresIn < 1) {
      throw new DcrError('protocol', 'token answer lacks a numeric expires_in of at least one second')
    }
    if (body.token_type !== undefined && String(body.token_type).toLowerCase() !== 'bearer') {
      throw new DcrError('protocol', `token answer has token_type ${JSON.stringify(String(body.token_type).slice(0, 20))}, expected bearer`)
    }
    return { access_token: token, expires_in: expiresIn }
  }

  async #post (endpoint: 'register' | 'token', contentType: string, payload: string): Promise<Record<string, unknown>> {
    const url = new URL(`o/client/${endpoint}`, this.#options.authUrl.endsWith('/') ? this.#options.authUrl : `${this.#options.authUrl}/`)
    const send = async (): Promise<Dispatcher.ResponseData> => await this.#options.dispatcher.request({
      origin: url.origin,
      path: `${url.pathname}${url.search}`,
      method: 'POST',
      headers: { 'content-type': contentType, accept: 'application/json', 'user-agent': this.#options.userAgent },
      body: payload,
      headersTimeout: this.#options.timeoutMs,
      bodyTimeout: this.#options.timeoutMs
    })
    let response: Dispatcher.ResponseData
    try {
      try {
        response = await send()
      } catch (err) {
        // A token request is idempotent: one more try when the connection dropped before any answer,
        // inside the broker's backoff. Registration is not (it would mint a second client): never.
        // The broker makes one call at a time, so the connection that failed was the only one in
        // the pool, and the retry necessarily opens a fresh one.
        if (endpoint !== 'token' || !this.#retry.retryToken(err)) throw err
        await this.#retry.pause()
        response = await send()
      }
    } catch (err) {
      throw new DcrError('unreachable', `${endpoint} endpoint unreachable (${errorCode(err)})`, { cause: err })
    }
    const { statusCode, headers } = response
    let text: string
    try {
      text = await response.body.text()
    } catch (err) {
      throw new DcrError('unreachable', `${endpoint} answer was cut off (${errorCode(err)})`, { cause: err })
    }
    if (statusCode === 429) {
      const retryAfterMs = retryAfter(headers, this.#now())
      throw new DcrError('throttled', `${endpoint} endpoint throttled the proxy (429)`, { status: 429, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) })
    }
    const json = parseObject(text)
    if (statusCode >= 400 && statusCode < 500 && typeof json?.error === 'string') {
      const oauthError = json.error.slice(0, 64)
      throw new DcrError('oauth', `${endpoint} refused: ${oauthError}`, { oauthError, status: statusCode })
    }
    if (statusCode !== 200 && statusCode !== 201) {
      throw new DcrError('http', `${endpoint} endpoint answered HTTP ${statusCode}`, { status: statusCode })
    }
    if (json === undefined) throw new DcrError('protocol', `${endpoint} answer is not a JSON object`, { status: statusCode })
    return json
  }
}

function parseObject (text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

function errorCode (err: unknown): string {
  return String((err as { code?: unknown }).code ?? (err as Error).name ?? 'error')
}


