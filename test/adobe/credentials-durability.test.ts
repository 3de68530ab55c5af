// Credentials that cannot be saved never cost a registration (issue 19, item
// 9): serve proves at start, before any call to Adobe, that CREDENTIALS_FILE
// can be written, and exits 78 with one line naming it and the real errno;
// check refuses before it registers; a fleet only warns (its sealed copy is
// the durable store); a persist that fails later logs the real errno. Real
// processes and the sandbox as Adobe, which counts registrations.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { statSync } from 'node:fs'
import { chmod, copyFile, mkdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { runCheck } from '../../src/ops/check.js'
import type { Sandbox } from '../../src/sandbox/server.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { call, eventually, startProxy, startSandbox, temporaryDirectory } from '../helpers/app.js'
import { fleetEnv } from '../helpers/fleet.js'
import { startRedisServer } from '../helpers/redis-server.js'

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url))
/** A deadline for a process that loads every module on a busy machine, not a budget: the test ends as soon as it exits. */
const EXIT_DEADLINE_MS = 60_000
const ADMIN = 'admin-0123456789abcdef'

interface Exited { code: number | null, stdout: string, stderr: string }

/**
 * `node dist/main.js` against the sandbox, in its own process group (killed as
 * a group if it outlives the test), until it exits. `uid`: run as that user.
 */
/** Whether a user other than the owner may run `file` (it and every directory above it open to others). */
function othersMayRun (file: string): boolean {
  for (let path = file; ; path = dirname(path)) {
    if ((statSync(path).mode & 0o001) === 0) return false
    if (path === dirname(path)) return true
  }
}

/**
 * A node binary another user can run: this one, or a copy of it. `npx -p
 * node@24` (CI's second run) keeps node under /root/.npm, closed to nobody,
 * who then fails with 126 before the proxy starts.
 */
async function nodeForOthers (t: Test): Promise<string> {
  if (othersMayRun(process.execPath)) return process.execPath
  const dir = temporaryDirectory(t)
  await chmod(dir, 0o755)
  const copy = join(dir, 'node')
  await copyFile(process.execPath, copy)
  await chmod(copy, 0o755)
  return copy
}

async function serveUntilExit (t: Test, sandbox: Sandbox, credentialsFile: string, options: { cwd?: string, uid?: number } = {}): Promise<Exited> {
  const env = {
    PATH: process.env.PATH,
    CMU_PROXY_ENV_FILE: '/dev/null',
    PORT: '0',
    ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(),
    ...sandbox.adobeUrls,
    CREDENTIALS_FILE: credentialsFile
  }
  // tap hooks every child through NODE_OPTIONS to collect its coverage, and the hook writes into .tap/ as
  // the process exits, which another user cannot: such a child runs without it.
  const [command, args] = options.uid === undefined ? [process.execPath, [MAIN]] : ['env', ['-u', 'NODE_OPTIONS', await nodeForOthers(t), MAIN]]
  const child = spawn(command, args, {
    env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    ...(options.uid === undefined ? {} : { uid: options.uid, gid: options.uid })
  })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(-child.pid, 'SIGKILL') })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const deadline = new Promise<never>((_resolve, reject) => { setTimeout(() => { reject(new Error(`still running after ${EXIT_DEADLINE_MS} ms: ${stdout}${stderr}`)) }, EXIT_DEADLINE_MS).unref() })
  const [code] = await Promise.race([once(child, 'exit'), deadline]) as [number | null]
  return { code, stdout, stderr }
}

t.test('serve: CREDENTIALS_FILE under a regular file exits 78 with one line naming it and ENOTDIR, before registering', async (t) => {
  const sandbox = await startSandbox(t)
  const dir = temporaryDirectory(t)
  await writeFile(join(dir, 'not-a-directory'), 'x')
  const credentialsFile = join(dir, 'not-a-directory', 'credentials.json')
  const { code, stdout, stderr } = await serveUntilExit(t, sandbox, credentialsFile)
  t.equal(code, 78, 'exit 78, as for a bad variable')
  t.match(stderr, new RegExp(`^cmu-proxy: configuration error: CREDENTIALS_FILE ${credentialsFile} cannot be written \\(ENOTDIR: a part of the path is a file, not a directory\\); .*\\n$`))
  t.equal(stderr.split('\n').length, 2, 'one line')
  t.notMatch(stderr, /EEXIST/, 'the real errno, not mkdir\'s EEXIST')
  t.notMatch(stdout, /Server listening/, 'it never served')
  t.equal(sandbox.calls.register, 0, 'no client registered at Adobe')
  t.equal(sandbox.calls.token, 0, 'no call to Adobe at all')
})

t.test('serve: a read-only directory (a non-root user and /var/lib/cmu-proxy) exits 78 with EACCES, before registering', async (t) => {
  const sandbox = await startSandbox(t)
  const dir = temporaryDirectory(t)
  const readOnly = join(dir, 'read-only')
  await mkdir(readOnly)
  await chmod(readOnly, 0o555)
  // Root writes into a 0555 directory regardless (CAP_DAC_OVERRIDE), and tests often run as root: then the
  // proxy runs as nobody (65534), the non-root user this case is about. It must reach dist/ and this directory.
  const asRoot = process.getuid?.() === 0
  if (asRoot) await chmod(dir, 0o755)
  const credentialsFile = join(readOnly, 'credentials.json')
  const { code, stderr } = await serveUntilExit(t, sandbox, credentialsFile, { cwd: dir, ...(asRoot ? { uid: 65534 } : {}) })
  t.equal(code, 78)
  t.match(stderr, new RegExp(`^cmu-proxy: configuration error: CREDENTIALS_FILE ${credentialsFile} cannot be written \\(EACCES: permission denied for this user\\)`))
  t.equal(sandbox.calls.register, 0, 'no client registered at Adobe')
})

t.test('check: refuses an unwritable CREDENTIALS_FILE with exit 78 before it registers', async (t) => {
  const sandbox = await startSandbox(t)
  const dir = temporaryDirectory(t)
  await writeFile(join(dir, 'not-a-directory'), 'x')
  const credentialsFile = join(dir, 'not-a-directory', 'credentials.json')
  const lines: string[] = []
  const code = await runCheck({ CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(), ...sandbox.adobeUrls, CREDENTIALS_FILE: credentialsFile }, (line) => { lines.push(line) })
  t.equal(code, 78, 'a configuration error, as serve says it')
  t.match(lines.at(-1), new RegExp(`^FAIL {2}credentials +CREDENTIALS_FILE ${credentialsFile} cannot be written \\(ENOTDIR`))
  t.equal(sandbox.calls.register, 0, 'check registered nothing')
  t.equal(sandbox.calls.token, 0)
})

t.test('fleet mode: an unwritable CREDENTIALS_FILE is a warning with its errno; the fleet registers once and serves', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const dir = temporaryDirectory(t)
  await writeFile(join(dir, 'not-a-directory'), 'x')
  const proxy = await startProxy(t, sandbox, { credentialsFile: join(dir, 'not-a-directory', 'credentials.json'), env: fleetEnv(redis) })
  t.ok(await eventually(async () => (await call(proxy.url, '/readyz')).status === 200, 10_000), 'ready')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  t.equal(sandbox.calls.register, 1, 'one registration, kept by the fleet\'s sealed copy')
  const warning = proxy.logs.map((line) => JSON.parse(line)).find((entry) => /CREDENTIALS_FILE cannot be written/.test(entry.msg))
  t.match(warning, { level: 40, reason: 'ENOTDIR', msg: /fleet's sealed copy is the durable store/ }, 'warned at start, with the errno')
  t.ok(proxy.logs.some((line) => /"reason":"ENOTDIR".*could not persist client credentials/.test(line) && line.includes('"level":40')), 'the failed persist is a warning too, with the real errno')
})

t.test('a persist that fails after start logs the real errno, and the proxy keeps serving', async (t) => {
  const sandbox = await startSandbox(t)
  const dir = temporaryDirectory(t)
  const data = join(dir, 'data')
  const proxy = await startProxy(t, sandbox, { credentialsFile: join(data, 'credentials.json'), env: { ADMIN_API_KEY: ADMIN } })
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200)
  // The volume goes away under the running proxy: a regular file where its directory was.
  await rm(data, { recursive: true })
  await writeFile(data, 'x')
  t.equal((await call(proxy.url, '/admin/credentials/reregister', { method: 'POST', headers: { 'x-api-key': ADMIN } })).status, 200)
  t.equal(sandbox.calls.register, 2)
  const failed = proxy.logs.map((line) => JSON.parse(line)).find((entry) => entry.msg === 'could not persist client credentials')
  t.match(failed, { level: 50, reason: 'ENOTDIR' }, 'ENOTDIR, not mkdir\'s EEXIST')
  t.equal((await call(proxy.url, '/cmu/v2')).status, 200, 'still serving with the new credentials in memory')
})
