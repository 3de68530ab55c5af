// Graceful shutdown of the real process: SIGTERM stops new connections, lets a
// slow in-flight stream finish, closes the pool and exits 0.
import { request } from 'node:http'
import t, { type Test } from 'tap'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { call, eventually, startSandbox, startScriptedServer, temporaryDirectory } from '../helpers/app.js'
import { startNode, type ProcessGroup } from '../helpers/processes.js'

const CHUNKS = 5
const CHUNK_INTERVAL_MS = 150

/** An upstream that streams a CSV slowly: CHUNKS lines, CHUNK_INTERVAL_MS apart. */
async function slowUpstream (t: Test): Promise<string> {
  const server = await startScriptedServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/csv' })
    let sent = 0
    const timer = setInterval(() => {
      res.write(`row-${sent}\n`)
      if (++sent === CHUNKS) {
        clearInterval(timer)
        res.end()
      }
    }, CHUNK_INTERVAL_MS)
    res.on('close', () => { clearInterval(timer) })
  })
  return server.url
}

/** `node dist/main.js`, once /readyz answers 200 (it holds a token). */
async function startMain (t: Test, env: Record<string, string>): Promise<{ child: ProcessGroup, url: string }> {
  const child = startNode(t, 'main', [], { env: { PATH: process.env.PATH, CMU_PROXY_ENV_FILE: '/dev/null', PORT: '0', ...env } })
  const [, url = ''] = await child.waitForOutput(/Server listening at (http:\/\/127\.0\.0\.1:\d+)/)
  await child.waitForHttp(`${url}/readyz`)
  return { child, url }
}

/** Starts a GET and resolves with the status once headers arrive; `body` resolves with the full body. */
function startGet (url: string, path: string): { headers: Promise<number>, body: Promise<string> } {
  let resolveHeaders: (status: number) => void = () => {}
  const headers = new Promise<number>((resolve) => { resolveHeaders = resolve })
  const body = new Promise<string>((resolve, reject) => {
    const req = request(`${url}${path}`, { agent: false }, (res) => {
      resolveHeaders(res.statusCode ?? 0)
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { text += chunk })
      res.on('end', () => { resolve(text) })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
  return { headers, body }
}

t.test('SIGTERM lets an in-flight stream finish, refuses new connections and exits 0', async (t) => {
  const sandbox = await startSandbox(t)
  const upstream = await slowUpstream(t)
  const proxy = await startMain(t, {
    ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(),
    ADOBE_AUTH_URL: sandbox.authUrl,
    ADOBE_CMU_URL: `${upstream}/cmu`,
    CREDENTIALS_FILE: `${temporaryDirectory(t)}/credentials.json`,
    CACHE_ENABLED: 'false',
    SHUTDOWN_GRACE_SECONDS: '10'
  })

  const slow = startGet(proxy.url, '/cmu/v2/year.csv')
  t.equal(await slow.headers, 200, 'stream started')
  proxy.child.signal('SIGTERM')

  t.ok(await eventually(async () => await call(proxy.url, '/healthz').then(() => false, () => true), 2_000), 'new connections are refused')
  t.equal(await slow.body, Array.from({ length: CHUNKS }, (_, i) => `row-${i}\n`).join(''), 'the in-flight stream completed')
  t.equal((await proxy.child.exitedWithin()).code, 0, 'exit 0')
  t.match(proxy.child.output(), /"signal":"SIGTERM".*"msg":"shutting down"/)
})

t.test('a stream longer than the grace period is cut and the process exits non-zero', async (t) => {
  const sandbox = await startSandbox(t)
  const hanging = await startScriptedServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/csv' })
    res.write('started\n')
  })
  const proxy = await startMain(t, {
    ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(),
    ADOBE_AUTH_URL: sandbox.authUrl,
    ADOBE_CMU_URL: `${hanging.url}/cmu`,
    CREDENTIALS_FILE: `${temporaryDirectory(t)}/credentials.json`,
    CACHE_ENABLED: 'false',
    SHUTDOWN_GRACE_SECONDS: '1'
  })
  const stuck = startGet(proxy.url, '/cmu/v2/year.csv')
  // The cut connection rejects the body; observe it from the start so it is never unhandled.
  const cut = stuck.body.then(() => 'completed', (err: NodeJS.ErrnoException) => err.code ?? err.message)
  t.equal(await stuck.headers, 200)
  const started = Date.now()
  proxy.child.signal('SIGTERM')
  // The stream never ends: only the grace period ends the process, and not before it has passed.
  t.equal((await proxy.child.exitedWithin()).code, 1, 'exit 1 after the grace period')
  const elapsed = Date.now() - started
  t.ok(elapsed >= 900, `exited after ${elapsed} ms`)
  t.not(await cut, 'completed', 'the stuck stream was cut')
})
