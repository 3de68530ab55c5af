// The sandbox's control API under /_sandbox/*, so teams that run it as a
// separate process (`cmu-proxy sandbox`) can script faults from any language.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ApiName, LinkForm } from './catalog.js'
import { CMU } from './cmu-catalog.js'
import type { SandboxDcr } from './dcr.js'
import { ESM } from './esm-catalog.js'
import type { Endpoint, FaultAction, Faults } from './faults.js'
import { parseReportHeaders, type ReportHeaders } from './report-headers.js'

export const CONTROL_PREFIX = '/_sandbox/'

export interface ControlTarget {
  faults: Faults
  dcr: SandboxDcr
  calls: Record<string, number>
  reportHeaders: ReportHeaders
  linkForms: Record<ApiName, LinkForm>
  forbidden: Set<ApiName>
}

const ENDPOINTS = new Set<Endpoint>(['register', 'token', 'cmu', 'esm'])
const APIS = new Set<string>(['cmu', 'esm'])
/** Scripted delays become setTimeout delays, which overflow (and fire at once) past 2^31-1 ms. */
const MAX_DELAY_MS = 3_600_000

/** Handles one control request; `body` is the request body as text. */
export function handleControl (target: ControlTarget, req: IncomingMessage, res: ServerResponse, body: string): void {
  const route = `${req.method ?? ''} ${(req.url ?? '').split('?')[0] ?? ''}`
  let input: Record<string, unknown> = {}
  if (body.trim() !== '') {
    let parsed: unknown
    try {
      parsed = JSON.parse(body)
    } catch {
      return reply(res, 400, { error: 'body must be JSON' })
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return reply(res, 400, { error: 'body must be a JSON object' })
    input = parsed as Record<string, unknown>
  }
  switch (route) {
    case 'GET /_sandbox/calls':
      return reply(res, 200, target.calls)
    case 'POST /_sandbox/revoke-tokens':
      target.dcr.revokeTokens()
      return reply(res, 200, { revoked: 'tokens' })
    case 'POST /_sandbox/revoke-clients':
      target.dcr.revokeClients()
      return reply(res, 200, { revoked: 'clients' })
    case 'POST /_sandbox/token-lifetime': {
      const seconds = input.seconds
      if (typeof seconds !== 'number' || !Number.isInteger(seconds) || seconds < 1) return reply(res, 400, { error: 'seconds must be a positive integer' })
      target.dcr.tokenLifetimeSeconds = seconds
      return reply(res, 200, { seconds })
    }
    case 'POST /_sandbox/faults': {
      const parsed = parseFault(input)
      if (typeof parsed === 'string') return reply(res, 400, { error: parsed })
      target.faults.failNext(parsed.endpoint, parsed.count, parsed.action, parsed.path)
      return reply(res, 201, { added: input })
    }
    case 'DELETE /_sandbox/faults':
      target.faults.clear()
      return reply(res, 200, { cleared: true })
    case 'POST /_sandbox/report-headers': {
      const parsed = parseReportHeaders(input)
      if (typeof parsed === 'string') return reply(res, 400, { error: parsed })
      target.reportHeaders = parsed
      return reply(res, 200, parsed)
    }
    case 'DELETE /_sandbox/report-headers':
      target.reportHeaders = {}
      return reply(res, 200, { cleared: true })
    case 'POST /_sandbox/links': {
      const { api, form } = input
      if (!isApi(api)) return reply(res, 400, { error: 'api must be cmu or esm' })
      if (form !== 'full' && form !== 'short') return reply(res, 400, { error: 'form must be full (/esm/v3/..., /cmu/v2/...) or short (/v3/..., /v2/...)' })
      target.linkForms[api] = form
      return reply(res, 200, { api, form })
    }
    case 'DELETE /_sandbox/links':
      target.linkForms.cmu = CMU.links
      target.linkForms.esm = ESM.links
      return reply(res, 200, target.linkForms)
    case 'POST /_sandbox/access': {
      const { api, allowed } = input
      if (!isApi(api)) return reply(res, 400, { error: 'api must be cmu or esm' })
      if (typeof allowed !== 'boolean') return reply(res, 400, { error: 'allowed must be true or false' })
      if (allowed) target.forbidden.delete(api)
      else target.forbidden.add(api)
      return reply(res, 200, { api, allowed })
    }
    case 'DELETE /_sandbox/access':
      target.forbidden.clear()
      return reply(res, 200, { cleared: true })
    default:
      return reply(res, 404, { error: 'unknown control route' })
  }
}

function parseFault (input: Record<string, unknown>): { endpoint: Endpoint, count: number, action: FaultAction, path?: string } | string {
  const { endpoint, count = 1, status, hang, delayMs, drop, path, body, afterMs } = input
  if (typeof endpoint !== 'string' || !ENDPOINTS.has(endpoint as Endpoint)) return 'endpoint must be register, token, cmu or esm'
  if (count !== 'forever' && (typeof count !== 'number' || count < 1)) return 'count must be a positive number or "forever"'
  if (path !== undefined && typeof path !== 'string') return 'path must be a string'
  if (afterMs !== undefined && !isDelay(afterMs)) return `afterMs must be a number of milliseconds, at most ${MAX_DELAY_MS}`
  if (delayMs !== undefined && !isDelay(delayMs)) return `delayMs must be a number of milliseconds, at most ${MAX_DELAY_MS}`
  const after = afterMs === undefined ? {} : { afterMs }
  let action: FaultAction
  if (typeof status === 'number' && status >= 100 && status <= 599) action = { status, ...(typeof body === 'string' ? { body } : {}), ...after }
  else if (hang === true) action = { hang: true }
  else if (drop === true) action = { drop: true, ...after }
  else if (typeof delayMs === 'number') action = { delayMs }
  else return 'give one of status (100-599), hang: true, drop: true or delayMs'
  return { endpoint: endpoint as Endpoint, count: count === 'forever' ? Infinity : count as number, action, ...(path === undefined ? {} : { path }) }
}

function isApi (value: unknown): value is ApiName {
  return typeof value === 'string' && APIS.has(value)
}

function isDelay (value: unknown): value is number {
  return typeof value === 'number' && value >= 0 && value <= MAX_DELAY_MS
}

function reply (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}
