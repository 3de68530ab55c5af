// No Docker engine runs where tests run, so this checks that the Dockerfile,
// docker-compose.yml and the example env file agree with the config contract,
// and that the production install (what the image's last stage does) starts.
import { cpSync, existsSync, readFileSync } from 'node:fs'
import { join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { parse } from 'yaml'
import { configSchema } from '../../src/config/schema.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { call, startSandbox, temporaryDirectory } from '../helpers/app.js'
import { gitIgnores } from '../helpers/ignore-rules.js'
import { runToEnd, startChild, STARTUP_DEADLINE_MS } from '../helpers/processes.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const VARIABLES = new Set(Object.keys(configSchema.properties))
const DEFAULTS = configSchema.properties as Record<string, { default?: unknown }>

function dockerfile (): { stages: string[][], lines: string[] } {
  // Join continuation lines, drop comments.
  const lines = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  const stages: string[][] = []
  for (const line of lines) {
    if (/^FROM /i.test(line)) stages.push([])
    stages.at(-1)?.push(line)
  }
  return { stages, lines }
}

function envOf (lines: string[]): Record<string, string> {
  const env: Record<string, string> = {}
  for (const line of lines.filter((l) => l.startsWith('ENV '))) {
    for (const [, key = '', value = ''] of line.slice(4).matchAll(/(\w+)=(\S+)/g)) env[key] = value
  }
  return env
}

t.test('Dockerfile: multi-stage, production deps only, non-root, config contract', async (t) => {
  const { stages } = dockerfile()
  t.ok(stages.length >= 2, 'multi-stage')
  const build = stages[0] ?? []
  const runtime = stages.at(-1) ?? []
  t.ok(build.some((l) => /^RUN npm ci\b/.test(l) && !l.includes('--omit=dev')), 'build stage installs dev dependencies')
  t.ok(build.some((l) => /npm run build/.test(l)), 'build stage compiles')
  t.ok(runtime.some((l) => /^RUN npm ci .*--omit=dev/.test(l)), 'final stage: npm ci --omit=dev')
  t.ok(runtime.some((l) => /^COPY --from=\S+ \/app\/dist/.test(l)), 'final stage copies only dist from the build')
  const user = runtime.find((l) => l.startsWith('USER '))?.slice(5)
  t.ok(user !== undefined && user !== 'root' && user !== '0', `runs as ${user ?? 'root'}`)

  const env = envOf(runtime)
  for (const name of Object.keys(env).filter((n) => !['NODE_ENV', 'NODE_OPTIONS'].includes(n))) t.ok(VARIABLES.has(name), `ENV ${name} is a config variable`)
  t.equal(env.HOST, '0.0.0.0')
  t.equal(env.PORT, String(DEFAULTS.PORT?.default))
  t.ok(runtime.includes(`EXPOSE ${env.PORT ?? ''}`), 'EXPOSE matches PORT')
  const volume = runtime.find((l) => l.startsWith('VOLUME '))?.slice(7)
  t.equal(volume, posix.dirname(env.CREDENTIALS_FILE ?? ''), 'the credentials file lives on the volume')
  const healthcheck = runtime.find((l) => l.startsWith('HEALTHCHECK '))
  t.match(healthcheck, /\/healthz/, 'HEALTHCHECK on /healthz')
  t.match(healthcheck, /process\.env\.PORT/, 'HEALTHCHECK follows PORT')
  t.match(runtime.find((l) => l.startsWith('CMD ')), /"node", "dist\/main\.js"/)
  // The same V8 options wherever the proxy starts: npm scripts (.npmrc), the image, the cmu-proxy command.
  const npmrc = /^node-options=(.*)$/m.exec(readFileSync(join(ROOT, '.npmrc'), 'utf8'))?.[1]
  t.equal(env.NODE_OPTIONS, npmrc, 'the image runs with the node-options of .npmrc')
  t.equal(readFileSync(join(ROOT, 'src/cli.ts'), 'utf8').split('\n')[0], `#!/usr/bin/env -S node ${npmrc ?? ''}`, 'and so does the cmu-proxy command')
  // Both stages on the current Node LTS; the code itself keeps working on 20.18.1+ (engines).
  t.same(stages.map((stage) => /^FROM (\S+)/i.exec(stage[0] ?? '')?.[1]), ['node:24-bookworm-slim', 'node:24-bookworm-slim'])
})

t.test('package.json: engines is what undici 7 and util.parseEnv need', async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
  t.same(pkg.engines, { node: '>=20.18.1' })
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'))
  t.same(lock.packages[''].engines, pkg.engines, 'the lock file agrees')
})

t.test('docker-compose.yml: secret, volume, port and variables agree with the image', async (t) => {
  // merge: the fleet services share their settings through a YAML merge key (<<: *fleet-proxy).
  const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true })
  const image = envOf(dockerfile().stages.at(-1) ?? [])
  const proxy = compose.services['cmu-proxy']
  for (const name of Object.keys(proxy.environment)) t.ok(VARIABLES.has(name), `${name} is a config variable`)
  const secret = proxy.secrets[0]
  t.equal(proxy.environment.ADOBE_SOFTWARE_STATEMENT_FILE, `/run/secrets/${String(secret)}`, 'statement read from the compose secret')
  t.equal(compose.secrets[secret].file, './config/software-statement.jwt', 'secret file is the git-ignored default path')
  t.ok(gitIgnores('config/software-statement.jwt'), 'git ignores the statement')
  t.equal(proxy.environment.ADOBE_SOFTWARE_STATEMENT, undefined, 'the statement is not an environment variable')
  const [volumeName, mountPoint] = String(proxy.volumes[0]).split(':')
  t.ok(volumeName !== undefined && volumeName in compose.volumes, 'named volume')
  t.equal(mountPoint, posix.dirname(proxy.environment.CREDENTIALS_FILE), 'credentials on the named volume')
  t.equal(proxy.environment.CREDENTIALS_FILE, image.CREDENTIALS_FILE)
  t.equal(String(proxy.ports[0]).split(':')[1], image.PORT, 'published port is the image PORT')

  const demo = compose.services['cmu-proxy-demo']
  t.same(demo.profiles, ['demo'])
  t.same(demo.command, ['node', 'dist/demo.js'])
  t.equal(demo.environment.HOST, '0.0.0.0')
})

t.test('docker-compose.yml: every service beyond loopback sets inbound keys or the explicit opt-out', async (t) => {
  // config.ts refuses to start on a non-loopback HOST without keys (secure by
  // default); the image listens on 0.0.0.0, so compose must say which.
  const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'))
  const image = envOf(dockerfile().stages.at(-1) ?? [])
  t.equal(image.HOST, '0.0.0.0', 'the image listens beyond loopback')
  t.equal(image.PROXY_API_KEYS, undefined, 'the image itself sets no keys')
  for (const [name, service] of Object.entries(compose.services as Record<string, { image?: string, environment?: Record<string, unknown>, secrets?: string[] }>)) {
    if (service.image !== 'cmu-proxy:latest') continue
    const env = { ...image, ...service.environment }
    const keys = env.PROXY_API_KEYS_FILE ?? env.PROXY_API_KEYS
    const anonymous = String(env.PROXY_ALLOW_ANONYMOUS) === 'true'
    t.ok(keys !== undefined || anonymous, `${name}: PROXY_API_KEYS(_FILE) or PROXY_ALLOW_ANONYMOUS=true`)
    if (typeof env.PROXY_API_KEYS_FILE === 'string') {
      const secret = env.PROXY_API_KEYS_FILE.replace('/run/secrets/', '')
      t.ok(service.secrets?.includes(secret), `${name}: the key file is a compose secret`)
      const file = String(compose.secrets[secret]?.file).replace(/^\.\//, '')
      t.ok(gitIgnores(file), `${file} is git-ignored`)
    }
  }
  t.equal(compose.services['cmu-proxy'].environment.PROXY_ALLOW_ANONYMOUS, undefined, 'the production-like service uses keys, not the opt-out')
})

t.test('config/cmu-proxy.example.env documents every variable with its default', async (t) => {
  const text = readFileSync(join(ROOT, 'config/cmu-proxy.example.env'), 'utf8')
  const documented = new Map<string, string>()
  for (const [, name = '', value = ''] of text.matchAll(/^#? ?([A-Z][A-Z0-9_]+)=(.*)$/gm)) documented.set(name, value)
  for (const name of VARIABLES) t.ok(documented.has(name), `${name} documented`)
  for (const name of documented.keys()) t.ok(VARIABLES.has(name), `${name} is a real variable`)
  for (const [name, value] of documented) {
    const fallback = DEFAULTS[name]?.default
    if (fallback !== undefined) t.equal(value, String(fallback), `${name} default`)
  }
  // The full table is docs/configuration.md (test/docs/docs.test.ts checks its rows and defaults).
  const reference = readFileSync(join(ROOT, 'docs/configuration.md'), 'utf8')
  for (const name of VARIABLES) t.ok(reference.includes(`\`${name}\``), `docs/configuration.md documents ${name}`)
})

t.test('the production install (npm ci --omit=dev, node dist/main.js) starts in a clean copy', async (t) => {
  const dir = temporaryDirectory(t)
  for (const file of ['package.json', 'package-lock.json']) cpSync(join(ROOT, file), join(dir, file))
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true })
  // From npm's cache: seconds on an idle machine, a minute or more on a loaded one.
  const install = await runToEnd('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: dir, deadlineMs: 3 * STARTUP_DEADLINE_MS })
  t.equal(install.code, 0, `npm ci --omit=dev succeeds${install.code === 0 ? '' : `:\n${install.stderr}`}`)
  t.notMatch(install.stderr, /EBADENGINE/, `no engine warning on Node ${process.version}`)
  t.notOk(existsSync(join(dir, 'node_modules', 'tap')) || existsSync(join(dir, 'node_modules', 'typescript')), 'no dev dependencies installed')
  t.ok(existsSync(join(dir, 'node_modules', 'fastify')), 'runtime dependencies installed')

  const sandbox = await startSandbox(t)
  const child = startChild(t, process.execPath, ['dist/main.js'], {
    name: 'node dist/main.js (production install)',
    cwd: dir,
    env: { PATH: process.env.PATH, NODE_ENV: 'production', PORT: '0', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(), ...sandbox.adobeUrls }
  })
  const [, url = ''] = await child.waitForOutput(/Server listening at (http:\/\/127\.0\.0\.1:\d+)/)
  await child.waitForHttp(`${url}/readyz`)
  t.equal((await call(url, '/cmu/v2/year.csv')).status, 200)
  t.match(JSON.parse(readFileSync(join(dir, 'data', 'credentials.json'), 'utf8')), { client_id: String }, 'default CREDENTIALS_FILE under the working directory')
  t.equal((await child.stop('SIGTERM')).code, 0, 'clean exit on SIGTERM')
})
