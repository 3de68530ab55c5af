// An in-process fake Adobe: DCR under /o/client/*, the CMU API under
// <basePath>/v2/... and the ESM API under <esmBasePath>/v3/..., over real
// HTTP. It records what it received (so tests can assert what crossed the
// proxy) and misbehaves on request (faults, 403s, the other link form).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Readable, pipeline } from 'node:stream'
import { createGzip } from 'node:zlib'
import type { ApiName, LinkForm, ReportApi } from './catalog.js'
import { CMU } from './cmu-catalog.js'
import { CONTROL_PREFIX, handleControl } from './control.js'
import { SandboxDcr, type DcrAnswer } from './dcr.js'
import { ESM } from './esm-catalog.js'
import { Faults, type Endpoint } from './faults.js'
import { csvFileName, render } from './render.js'
import { buildReport } from './report.js'
import { CONTENT_TYPES, ReportError } from './report-query.js'
import { notModified, reportFields, type ReportHeaders } from './report-headers.js'

export interface SandboxOptions {
  /** expires_in of issued tokens; Adobe's sample says 21600 (6 h) */
  tokenLifetimeSeconds?: number
  /** Where the CMU API lives on this server (Adobe: /cmu) */
  basePath?: string
  /** Where the ESM API lives on this server (Adobe: /esm) */
  esmBasePath?: string
  /** Changes the generated numbers, not their shape */
  seed?: number
  /** Adobe's /o/client/* throttle: 1 request/s per client IP, burst 10, 429 with an HTML body */
  throttle?: boolean
  /**
   * Share of report requests on reused keep-alive connections whose connection is dropped before any
   * answer (soak tests), 0 to 1: a connection that Adobe's side closed just as the client reused it.
   * The first request on a new connection is never dropped.
   */
  dropRate?: number
  now?: () => number
}

export interface RecordedRequest {
  method: string
  /** the request-target exactly as received */
  url: string
  headers: Record<string, string | string[] | undefined>
}

const MAX_RECORDED = 1_000
const MAX_BODY_BYTES = 64 * 1024

/** Counted per report API: `cmu`, `cmuAborted`, ..., `esmForbidden`. */
type ReportCounter = '' | 'Aborted' | 'Unauthorized' | 'Dropped' | 'NotModified' | 'Forbidden'
export type CallCounter = 'register' | 'token' | `${ApiName}${ReportCounter}`

export class Sandbox {
  readonly faults = new Faults()
  readonly dcr: SandboxDcr
  /** Calls by endpoint, including refused ones. */
  readonly calls: Record<CallCounter, number> = {
    register: 0,
    token: 0,
    cmu: 0, cmuAborted: 0, cmuUnauthorized: 0, cmuDropped: 0, cmuNotModified: 0, cmuForbidden: 0,
    esm: 0, esmAborted: 0, esmUnauthorized: 0, esmDropped: 0, esmNotModified: 0, esmForbidden: 0
  }
  dropRate: number
  /** The caching fields of report answers (report-headers.ts); none by default. */
  reportHeaders: ReportHeaders = {}
  /** How each API's links start; each API's documented form by default. */
  readonly linkForms: Record<ApiName, LinkForm> = { cmu: CMU.links, esm: ESM.links }
  /** APIs that answer 403 to valid tokens (a client without access to them). */
  readonly forbidden = new Set<ApiName>()
  /** The last report requests per API, oldest first. */
  readonly requests: Record<ApiName, RecordedRequest[]> = { cmu: [], esm: [] }
  readonly basePath: string
  readonly esmBasePath: string
  readonly #seed: number
  readonly #now: () => number
  readonly #server: Server
  readonly #throttle: Map<string, { tokens: number, at: number }> | undefined
  /** Each API and where it lives, the longest base path first. */
  readonly #apis: Array<{ api: ReportApi, basePath: string }>
  /** Connections that already carried a report request (for dropRate). */
  readonly #usedSockets = new WeakSet<object>()
  #url = ''

  constructor (options: SandboxOptions = {}) {
    this.#now = options.now ?? Date.now
    this.basePath = options.basePath ?? '/cmu'
    this.esmBasePath = options.esmBasePath ?? '/esm'
    this.#apis = [{ api: CMU, basePath: this.basePath }, { api: ESM, basePath: this.esmBasePath }]
      .sort((a, b) => b.basePath.length - a.basePath.length)
    this.#seed = options.seed ?? 1
    this.#throttle = options.throttle === true ? new Map() : undefined
    this.dropRate = options.dropRate ?? 0
    this.dcr = new SandboxDcr(options.tokenLifetimeSeconds ?? 21_600, this.#now)
    this.#server = createServer((req, res) => { this.#handle(req, res) })
    this.#server.keepAliveTimeout = 60_000
  }

  async listen (port = 0, host = '127.0.0.1'): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject)
      this.#server.listen(port, host, () => { this.#server.off('error', reject); resolve() })
    })
    const address = this.#server.address() as AddressInfo
    this.#url = `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`
    return this.#url
  }

  /** Base URL of /o/client/* (ADOBE_AUTH_URL). */
  get authUrl (): string { return this.#url }
  /** ADOBE_CMU_URL */
  get cmuUrl (): string { return `${this.#url}${this.basePath}` }
  /** ADOBE_ESM_URL */
  get esmUrl (): string { return `${this.#url}${this.esmBasePath}` }
  /** The proxy's settings that point it here, all of them: the demo and the tests wire the proxy with these. */
  get adobeUrls (): { ADOBE_AUTH_URL: string, ADOBE_CMU_URL: string, ADOBE_ESM_URL: string } {
    return { ADOBE_AUTH_URL: this.authUrl, ADOBE_CMU_URL: this.cmuUrl, ADOBE_ESM_URL: this.esmUrl }
  }

  /** The last CMU requests, oldest first. */
  get cmuRequests (): RecordedRequest[] { return this.requests.cmu }
  /** The last ESM requests, oldest first. */
  get esmRequests (): RecordedRequest[] { return this.requests.esm }

  async close (): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise<void>((resolve) => this.#server.close(() => { resolve() }))
  }

  #handle (req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/'
    const path = url.split('?', 1)[0] ?? '/'
    if (path.startsWith(CONTROL_PREFIX)) {
      readBody(req, (body) => { handleControl(this, req, res, body ?? '') })
    } else if (path === '/o/client/register' || path === '/o/client/token') {
      this.#handleDcr(path === '/o/client/register' ? 'register' : 'token', req, res)
    } else {
      const served = this.#apis.find(({ basePath }) => path === basePath || path.startsWith(`${basePath}/`))
      if (served === undefined) return text(res, 404, 'Not found')
      this.#handleReport(served.api, served.basePath, req, res, path.slice(served.basePath.length))
    }
  }

  #handleDcr (endpoint: 'register' | 'token', req: IncomingMessage, res: ServerResponse): void {
    this.calls[endpoint]++
    readBody(req, (body) => {
      if (body === undefined) return text(res, 413, 'Request body too large')
      this.#afterFaults(endpoint, '', req, res, () => { this.#answerDcr(endpoint, req, res, body) })
    })
  }

  #answerDcr (endpoint: 'register' | 'token', req: IncomingMessage, res: ServerResponse, body: string): void {
    if (req.method !== 'POST') return text(res, 405, 'Method not allowed', { allow: 'POST' })
    if (this.#throttled(req)) {
      // Adobe's throttle answers HTML and no Retry-After.
      return send(res, 429, 'text/html', '<html><body><h1>429 Too Many Requests</h1></body></html>')
    }
    let answer: DcrAnswer
    if (endpoint === 'register') {
      answer = this.dcr.register(parseJson(body))
    } else {
      // Adobe's reference sends a form body; its Postman screenshot uses the query string. Accept both.
      const params = new URLSearchParams((req.url ?? '').split('?')[1] ?? '')
      if ((req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
        for (const [k, v] of new URLSearchParams(body)) params.set(k, v)
      }
      answer = this.dcr.token(params)
    }
    send(res, answer.status, 'application/json', JSON.stringify(answer.body))
  }

  #handleReport (api: ReportApi, basePath: string, req: IncomingMessage, res: ServerResponse, path: string): void {
    this.calls[api.name]++
    const recorded = this.requests[api.name]
    if (recorded.length >= MAX_RECORDED) recorded.shift()
    recorded.push({ method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers } })
    if (this.dropRate > 0 && this.#reused(req) && Math.random() < this.dropRate) {
      this.calls[`${api.name}Dropped`]++
      return void req.socket.destroy()
    }
    res.once('close', () => { if (!res.writableFinished) this.calls[`${api.name}Aborted`]++ })
    this.#afterFaults(api.name, path, req, res, () => { this.#answerReport(api, basePath, req, res, path) })
  }

  #answerReport (api: ReportApi, basePath: string, req: IncomingMessage, res: ServerResponse, path: string): void {
    // A held fault can release after the proxy has left; piping to a destroyed response throws.
    if (res.destroyed) return
    if (req.method !== 'GET' && req.method !== 'HEAD') return text(res, 405, 'Method not allowed', { allow: 'GET' })
    if (!this.#authorized(req)) {
      this.calls[`${api.name}Unauthorized`]++
      return text(res, 401, 'Unauthorized', { 'www-authenticate': 'Bearer error="invalid_token"' })
    }
    // Adobe: 403 when "the user is authenticated but not allowed to access the requested information".
    if (this.forbidden.has(api.name)) {
      this.calls[`${api.name}Forbidden`]++
      return text(res, 403, 'Forbidden')
    }

    const query = (req.url ?? '').split('?').slice(1).join('?')
    const linkBase = `${this.linkForms[api.name] === 'full' ? basePath : ''}/${api.version}`
    let report
    try {
      report = buildReport({ api, linkBase, path, query, accept: header(req, 'accept'), now: this.#now(), seed: this.#seed })
    } catch (err) {
      if (err instanceof ReportError) return text(res, err.status, err.message)
      throw err
    }
    const gzip = acceptsGzip(header(req, 'accept-encoding'))
    // The whole body is rendered up front only when an ETag is made from it.
    let rendered: string | undefined
    const whole = (): string => { rendered ??= [...render(report)].join(''); return rendered }
    const fields = reportFields(this.reportHeaders, whole, gzip ? 'gzip' : 'identity', report.lastModified)
    for (const [name, value] of Object.entries(fields)) res.setHeader(name, value)
    res.setHeader('vary', 'Accept, Accept-Encoding')
    if (notModified(req.headers, fields)) {
      this.calls[`${api.name}NotModified`]++
      res.statusCode = 304
      return void res.end()
    }
    res.statusCode = 200
    res.setHeader('content-type', `${CONTENT_TYPES[report.format]}; charset=utf-8`)
    if (report.format === 'csv') res.setHeader('content-disposition', `attachment; filename="${csvFileName(report)}"`)
    if (gzip) res.setHeader('content-encoding', 'gzip')
    if (req.method === 'HEAD') return void res.end()
    const body = rendered === undefined ? Readable.from(render(report)) : Readable.from([rendered])
    pipeline(gzip ? [body, createGzip(), res] : [body, res], () => {})
  }

  /** Applies the next matching fault, if any; calls `proceed` when the request should be answered normally. */
  #afterFaults (endpoint: Endpoint, path: string, req: IncomingMessage, res: ServerResponse, proceed: () => void): void {
    const action = this.faults.take(endpoint, path)
    if (action === undefined) return proceed()
    if ('hang' in action) return
    if ('drop' in action) {
      if (action.afterMs === undefined) return void req.socket.destroy()
      return void setTimeout(() => { req.socket.destroy() }, action.afterMs)
    }
    if ('delayMs' in action) {
      const timer = setTimeout(proceed, action.delayMs)
      res.once('close', () => { clearTimeout(timer) })
      return
    }
    if (!('status' in action)) return void action.until.then(proceed, proceed)
    // An injected answer, at once, after `afterMs`, or once `until` settles.
    const answer = (): void => { send(res, action.status, action.contentType ?? 'text/plain', action.body ?? `Injected ${action.status}`, action.headers) }
    if (action.until !== undefined) return void action.until.then(answer, answer)
    if (action.afterMs === undefined) return answer()
    const timer = setTimeout(answer, action.afterMs)
    res.once('close', () => { clearTimeout(timer) })
  }

  #reused (req: IncomingMessage): boolean {
    if (this.#usedSockets.has(req.socket)) return true
    this.#usedSockets.add(req.socket)
    return false
  }

  #authorized (req: IncomingMessage): boolean {
    const auth = header(req, 'authorization')
    const fromQuery = new URLSearchParams((req.url ?? '').split('?')[1] ?? '').get('access_token')
    const token = auth?.startsWith('Bearer ') === true ? auth.slice(7) : fromQuery
    return token !== null && token !== undefined && this.dcr.isValidToken(token)
  }

  /** Token bucket per client IP (X-Forwarded-For first, as Adobe does). */
  #throttled (req: IncomingMessage): boolean {
    if (this.#throttle === undefined) return false
    const ip = header(req, 'x-forwarded-for')?.split(',')[0]?.trim() ?? req.socket.remoteAddress ?? ''
    const now = this.#now()
    const bucket = this.#throttle.get(ip) ?? { tokens: 10, at: now }
    bucket.tokens = Math.min(10, bucket.tokens + (now - bucket.at) / 1000)
    bucket.at = now
    this.#throttle.set(ip, bucket)
    if (bucket.tokens < 1) return true
    bucket.tokens--
    return false
  }
}

function header (req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name]
  return Array.isArray(value) ? value.join(', ') : value
}

function acceptsGzip (acceptEncoding: string | undefined): boolean {
  return acceptEncoding?.split(',').some((part) => {
    const [coding = '', ...params] = part.trim().split(';')
    return coding.trim().toLowerCase() === 'gzip' && !params.some((p) => /^\s*q=0(\.0*)?\s*$/.test(p))
  }) ?? false
}

function readBody (req: IncomingMessage, done: (body: string | undefined) => void): void {
  const chunks: Buffer[] = []
  let size = 0
  req.on('data', (chunk: Buffer) => {
    size += chunk.length
    if (size <= MAX_BODY_BYTES) chunks.push(chunk)
  })
  req.on('end', () => { done(size > MAX_BODY_BYTES ? undefined : Buffer.concat(chunks).toString('utf8')) })
}

function parseJson (text: string): unknown {
  try { return JSON.parse(text) } catch { return undefined }
}

function send (res: ServerResponse, status: number, contentType: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), ...headers })
  res.end(body)
}

function text (res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  send(res, status, 'text/plain; charset=utf-8', body, headers)
}
