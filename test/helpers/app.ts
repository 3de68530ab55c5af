// Shared test wiring: the sandbox and the real app on loopback port 0, a raw
// HTTP client (so paths like /cmu/../x reach the server unnormalised), and a
// log sink that tests search for secrets.
import { createServer, request as httpRequest, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { buildApp } from '../../src/app.js'
import { loadConfiguration, type LoadedConfiguration, type LoadOptions } from '../../src/config/load.js'
import { createLogger } from '../../src/kernel/logger.js'
import { Sandbox, type SandboxOptions } from '../../src/sandbox/server.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { STARTUP_DEADLINE_MS } from '../../bench/process-group.js'

export async function startSandbox (t: Test, options: SandboxOptions = {}): Promise<Sandbox> {
  const sandbox = new Sandbox(options)
  await sandbox.listen(0, '127.0.0.1')
  t.teardown(async () => { await sandbox.close() })
  return sandbox
}

export interface RunningProxy {
  app: FastifyInstance
  url: string
  credentialsFile: string
  statement: string
  /** Everything logged so far, one JSON line per entry. */
  logs: string[]
  logger: Logger
  /** What the proxy was started with, and how to load it again (a reload: config/reload.ts). */
  configuration: LoadedConfiguration
  load: LoadOptions
  close: () => Promise<void>
}

export interface ProxyOptions {
  env?: Record<string, string | undefined>
  /** Reuse a credentials file (restart tests). */
  credentialsFile?: string
  statement?: string
  now?: () => number
  /** Where the memory-limit metric reads /proc and /sys (a fixture tree). */
  cgroupRoot?: string
  /** Fleet mode: how often the member looks at the shared state without a notice. */
  fleetReconcileIntervalMs?: number
}

export async function startProxy (t: Test, sandbox: Sandbox, options: ProxyOptions = {}): Promise<RunningProxy> {
  const statement = options.statement ?? makeSoftwareStatement()
  const credentialsFile = options.credentialsFile ?? join(temporaryDirectory(t), 'data', 'credentials.json')
  const load = {
    env: {
      CMU_PROXY_ENV_FILE: '/dev/null',
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_LEVEL: 'debug',
      ADOBE_SOFTWARE_STATEMENT: statement,
      ...sandbox.adobeUrls,
      CREDENTIALS_FILE: credentialsFile,
      // Most tests count upstream calls; the cache tests turn it on.
      CACHE_ENABLED: 'false',
      ...options.env
    },
    cwd: temporaryDirectory(t)
  }
  const configuration = loadConfiguration(load)
  const { settings } = configuration
  const { logger, lines: logs } = capturedLogger(settings.server.logLevel)
  const app = await buildApp(settings, { logger, ...(options.now === undefined ? {} : { now: options.now }), ...(options.cgroupRoot === undefined ? {} : { cgroupRoot: options.cgroupRoot }), ...(options.fleetReconcileIntervalMs === undefined ? {} : { fleetReconcileIntervalMs: options.fleetReconcileIntervalMs }) })
  // A backlog for the herd tests' 1,000 simultaneous connections: with Node's 511, a stalled event loop on a loaded machine overflows it and some get reset.
  await app.listen({ host: settings.server.host, port: settings.server.port, backlog: 2048 })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  let closed = false
  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    await app.close()
  }
  t.teardown(close)
  return { app, url: `http://127.0.0.1:${port}`, credentialsFile, statement, logs, logger, configuration, load, close }
}

/** A logger whose lines (JSON text) the test reads. */
export function capturedLogger (level = 'info'): { logger: Logger, lines: string[] } {
  const lines: string[] = []
  return { logger: createLogger(level, { write: (line: string) => { lines.push(line) } }), lines }
}

/** A fresh directory removed after the test (t.testdir() would reset a test's own fixtures). */
export function temporaryDirectory (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'cmu-proxy-test-'))
  t.teardown(() => {
    // A proxy's credentials write that was under way when the test ended can land mid-removal (ENOTEMPTY): retry.
    // A throw here would skip the teardowns that close servers, and the file would hang until tap's timeout.
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 })
    } catch (err) {
      t.comment(`could not remove ${dir}: ${(err as Error).message}`)
    }
  })
  return dir
}

export interface RawResponse {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  text: string
  json: () => any
}

export interface RawRequestOptions {
  method?: string
  headers?: Record<string, string>
  signal?: AbortSignal
}

/** GET (or `method`) `path` exactly as written: nothing normalises it on the way. */
export async function call (baseUrl: string, path: string, options: RawRequestOptions = {}): Promise<RawResponse> {
  const { hostname, port } = new URL(baseUrl)
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, path, method: options.method ?? 'GET', headers: options.headers ?? {}, ...(options.signal === undefined ? {} : { signal: options.signal }) }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const body = Buffer.concat(chunks)
        const text = body.toString('utf8')
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text, json: () => JSON.parse(text) })
      })
    })
    req.on('error', reject)
    req.end()
  })
}

/**
 * How many times longer than on an idle machine a wait may take: the suite
 * runs four files at a time, beside other work, on two cores (issue 18).
 * A wait that ends when its condition holds only costs this when it fails.
 */
export const LOAD_ALLOWANCE = 10

/**
 * Polls `condition` every 20 ms until it holds, or until LOAD_ALLOWANCE times
 * `timeoutMs` (what an idle machine needs at most) have passed, up to
 * STARTUP_DEADLINE_MS unless `timeoutMs` is longer.
 */
export async function eventually (condition: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + Math.max(timeoutMs, Math.min(timeoutMs * LOAD_ALLOWANCE, STARTUP_DEADLINE_MS))
  while (Date.now() < deadline) {
    if (await condition()) return true
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return await condition()
}

/**
 * True once `n` requests are being answered by the proxy at `baseUrl` (its
 * cmu_proxy_requests_in_flight, less the /metrics call that reads it). Hold
 * Adobe's answer (heldAnswer) until then to know callers overlap: a delay
 * does not tell on a loaded machine, where late callers arrive after it.
 */
export async function whenInFlight (baseUrl: string, n: number): Promise<boolean> {
  const inFlight = async (): Promise<number> => Number(/^cmu_proxy_requests_in_flight (\d+)$/m.exec((await call(baseUrl, '/metrics')).text)?.[1]) - 1
  return await eventually(async () => await inFlight() >= n)
}

/** Asserts a problem+json answer with the given status and code. */
export function assertProblem (t: Test, response: RawResponse, status: number, code: string): void {
  t.equal(response.status, status, `status ${status}`)
  t.match(response.headers['content-type'], /^application\/problem\+json/, 'problem content type')
  const body = response.json()
  t.equal(body.code, code, `code ${code}`)
  t.equal(body.status, status)
  t.type(body.detail, 'string')
  t.equal(body.requestId, response.headers['x-request-id'], 'requestId matches X-Request-Id')
}

export interface ScriptedRequest { method: string, url: string, headers: IncomingHttpHeaders, body: string }

/** A tiny HTTP server on loopback whose answers the test scripts; it records every request. */
export async function startScriptedServer (t: Test, handler: (req: ScriptedRequest, res: ServerResponse) => void): Promise<{ url: string, requests: ScriptedRequest[] }> {
  const requests: ScriptedRequest[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const recorded = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') }
      requests.push(recorded)
      handler(recorded, res)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests }
}

export function json (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers })
  res.end(typeof body === 'string' ? body : JSON.stringify(body))
}
