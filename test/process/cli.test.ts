// The `cmu-proxy` command as a new user meets it: --version, --help on every
// subcommand (without running it), usage errors for unknown options.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { call, eventually } from '../helpers/app.js'
import { runNode, startChild } from '../helpers/processes.js'

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }

async function cli (cwd: string, ...args: string[]): Promise<{ status: number | null, stdout: string, stderr: string }> {
  // A configuration that would let serve start and check run, so running instead of helping shows.
  const env = { PATH: process.env.PATH, CMU_PROXY_ENV_FILE: '/dev/null', PORT: '0', ADOBE_CLIENT_ID: 'client', ADOBE_CLIENT_SECRET: 'secret', ADOBE_AUTH_URL: 'http://127.0.0.1:1', ADOBE_CMU_URL: 'http://127.0.0.1:1/cmu', AUTH_TIMEOUT_MS: '200' }
  const result = await runNode('cli', args, { cwd, env })
  return { status: result.code, stdout: result.stdout, stderr: result.stderr }
}

t.test('--version, -v and version print the version', async (t) => {
  const dir = t.testdir()
  for (const arg of ['--version', '-v', 'version']) {
    const result = await cli(dir, arg)
    t.equal(result.status, 0, `${arg} exits 0`)
    t.equal(result.stdout, `${version}\n`, `${arg} prints ${version}`)
    t.equal(result.stderr, '')
  }
})

t.test('every command takes --help or -h and prints usage naming the env files, without running', async (t) => {
  const dir = t.testdir()
  const cases: Array<[string[], RegExp]> = [
    [['--help'], /^usage: cmu-proxy \[command\]/],
    [['-h'], /^usage: cmu-proxy \[command\]/],
    [['help'], /^usage: cmu-proxy \[command\]/],
    [['serve', '--help'], /^usage: cmu-proxy serve/],
    [['serve', '-h'], /^usage: cmu-proxy serve/],
    [['check', '--help'], /^usage: cmu-proxy check/],
    [['check', '-h'], /^usage: cmu-proxy check/]
  ]
  for (const [args, usage] of cases) {
    const result = await cli(dir, ...args)
    const name = args.join(' ')
    t.equal(result.status, 0, `${name} exits 0`)
    t.match(result.stdout, usage, `${name} prints its usage`)
    for (const mention of ['config/cmu-proxy.env', 'CMU_PROXY_ENV_FILE', 'config/cmu-proxy.example.env']) {
      t.ok(result.stdout.includes(mention), `${name} names ${mention}`)
    }
    t.notMatch(result.stdout, /^(PASS|FAIL) |Server listening/m, `${name} did not run the command`)
    t.equal(result.stderr, '')
  }
  t.match((await cli(dir, 'sandbox', '--help')).stdout, /^usage: cmu-proxy sandbox/, 'sandbox --help as before')
})

t.test('unknown options and commands are usage errors (exit 64)', async (t) => {
  const dir = t.testdir()
  for (const args of [['serve', '--port', '9000'], ['serve', 'extra'], ['check', '--bogus'], ['bogus'], ['--bogus']]) {
    const result = await cli(dir, ...args)
    t.equal(result.status, 64, `${args.join(' ')} exits 64`)
    t.match(result.stderr, /^cmu-proxy: .+\nusage: cmu-proxy/, 'says what is wrong, then the usage')
    t.equal(result.stdout, '')
  }
})

t.test('npm run demo: SIGTERM to the npm process stops the server', async (t) => {
  // npm forwards the signal to its child; the script execs node, so that child is the server
  // (with 'npm run build && node ...' it was a shell that died and left node serving).
  // npm and the node it runs are one process group, killed as one when the test ends, whatever happened.
  const root = fileURLToPath(new URL('../..', import.meta.url))
  const npm = startChild(t, 'npm', ['run', 'demo', '--ignore-scripts', '--silent'], { cwd: root, env: { ...process.env, PORT: '0', LOG_LEVEL: 'info' } })
  const [, url = ''] = await npm.waitForOutput(/Server listening at (http:\/\/127\.0\.0\.1:\d+)/)
  t.equal((await call(url, '/healthz')).status, 200)
  // Both APIs answer from the built-in sandbox, never from Adobe.
  t.ok(await eventually(async () => (await call(url, '/readyz')).status === 200, 30_000), 'ready')
  t.equal((await call(url, '/cmu/v2/year.csv')).status, 200, 'CMU from the sandbox')
  const esm = await call(url, '/esm/v3/year.csv')
  t.equal(esm.status, 200, 'ESM from the sandbox')
  t.match(esm.text, /^year,/, 'a CSV report')
  // To npm alone (not the group): that npm passes it on is what this checks.
  npm.child.kill('SIGTERM')
  await npm.exitedWithin()
  t.ok(await eventually(async () => await call(url, '/healthz').then(() => false, () => true), 5_000), 'nothing serves the port any more')
  t.match(npm.stdout(), /"signal":"SIGTERM","msg":"shutting down"/, 'the server itself got the signal')
})
