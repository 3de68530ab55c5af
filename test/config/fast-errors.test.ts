// A bad configuration answers before anything heavy loads: `node dist/main.js`,
// `cmu-proxy serve` and `cmu-proxy check` validate the settings first and
// import Fastify, undici, OTel, the Redis client and prom-client only after.
// Asserted on what the process loaded (recorded by a module hook), not on a
// timing that a busy machine would break.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import t, { type Test } from 'tap'

const DIST = fileURLToPath(new URL('../../dist/', import.meta.url))
/** What the configuration check must not wait for. */
const HEAVY = /\/node_modules\/(fastify|@fastify\/[^/]+|undici|@opentelemetry\/[^/]+|@redis\/client|prom-client|pino|lru-cache|close-with-grace)\/|\/dist\/(app|ops\/check-steps)\.js$/

interface Run { code: number | null, stdout: string, stderr: string, loaded: string[] }

/**
 * Runs node on `args` with a hook that records every module it loads: ES
 * modules as they resolve (a loader hook), CommonJS ones from require.cache
 * at exit. Own process group, killed as a group if the test ends first.
 */
async function runRecorded (t: Test, args: string[], env: Record<string, string>): Promise<Run> {
  const dir = t.testdir()
  const log = join(dir, 'loaded.txt')
  writeFileSync(log, '')
  // module.registerHooks (in-thread, sees require() too) where Node has it; module.register (Node 20) otherwise.
  writeFileSync(join(dir, 'hooks.mjs'), `import { appendFileSync } from 'node:fs'
export async function resolve (specifier, context, next) {
  const result = await next(specifier, context)
  appendFileSync(${JSON.stringify(log)}, result.url + '\\n')
  return result
}
`)
  writeFileSync(join(dir, 'record.mjs'), `import { appendFileSync } from 'node:fs'
import * as module from 'node:module'
const record = (line) => { appendFileSync(${JSON.stringify(log)}, line + '\\n') }
if (typeof module.registerHooks === 'function') {
  module.registerHooks({ resolve: (specifier, context, next) => { const result = next(specifier, context); record(result.url); return result } })
} else {
  module.register('./hooks.mjs', import.meta.url)
}
const require = module.createRequire(import.meta.url)
process.on('exit', () => { record(Object.keys(require.cache).map((path) => 'file://' + path).join('\\n')) })
`)
  const child = spawn(process.execPath, ['--no-warnings', '--import', pathToFileURL(join(dir, 'record.mjs')).href, ...args], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', CMU_PROXY_ENV_FILE: '/dev/null', ...env },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL') })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const [code] = await once(child, 'close') as [number | null]
  const loaded = readFileSync(log, 'utf8').split('\n').filter((line) => line !== '').map((url) => url.startsWith('file:') ? fileURLToPath(url) : url)
  return { code, stdout, stderr, loaded }
}

const heavyIn = (run: Run): string[] => [...new Set(run.loaded.filter((path) => HEAVY.test(path)).map((path) => path.replace(/^.*\/node_modules\//, '').replace(/^((@[^/]+\/)?[^/]+).*$/, '$1')))]

const BAD = { PORT: 'x', ADOBE_CLIENT_ID: 'client', ADOBE_CLIENT_SECRET: 'secret' }

t.test('node dist/main.js: the configuration error, exit 78, and none of the heavy modules loaded', async (t) => {
  const run = await runRecorded(t, [join(DIST, 'main.js')], BAD)
  t.equal(run.code, 78)
  t.equal(run.stderr, 'cmu-proxy: configuration error: PORT must be integer (got "x")\n')
  t.ok(run.loaded.includes(join(DIST, 'config/load.js')), 'the recording sees our modules')
  t.ok(run.loaded.some((path) => path.includes('/node_modules/env-schema/')), 'and the dependencies they load')
  t.same(heavyIn(run), [], 'nothing heavy')
})

t.test('cmu-proxy serve and check: the same, through the command', async (t) => {
  const serve = await runRecorded(t, [join(DIST, 'cli.js'), 'serve'], BAD)
  t.equal(serve.code, 78)
  t.match(serve.stderr, /^cmu-proxy: configuration error: PORT must be integer/)
  t.same(heavyIn(serve), [], 'serve: nothing heavy')
  const check = await runRecorded(t, [join(DIST, 'cli.js'), 'check'], BAD)
  t.equal(check.code, 78)
  t.equal(check.stdout, 'FAIL  config       PORT must be integer (got "x")\n')
  t.same(heavyIn(check), [], 'check: nothing heavy')
})

t.test('the recording does see heavy modules: check with a good configuration loads undici for its calls', async (t) => {
  const run = await runRecorded(t, [join(DIST, 'cli.js'), 'check'], { ADOBE_CLIENT_ID: 'client', ADOBE_CLIENT_SECRET: 'secret', ADOBE_AUTH_URL: 'http://127.0.0.1:1', ADOBE_CMU_URL: 'http://127.0.0.1:1/cmu', AUTH_TIMEOUT_MS: '500' })
  t.equal(run.code, 1, 'the token call fails: nothing listens on port 1')
  t.match(run.stdout, /^PASS {2}config .*\nPASS {2}egress .*\nPASS {2}credentials .*\nFAIL {2}token /)
  t.ok(heavyIn(run).includes('undici'), 'undici loaded once the configuration was good')
})
