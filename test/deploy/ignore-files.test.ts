// Secrets never reach git or a Docker build context: every secret file the
// docs tell users to create, and any *.jwt or *.key* dropped in config/, is
// ignored by .gitignore (asked of git itself) and by .dockerignore (read with
// a port of Docker's own matcher), while the example env file stays in both.
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { dockerIgnores, gitIgnores } from '../helpers/ignore-rules.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

function markdownAndDeployFiles (): string[] {
  const files = ['README.md', 'SECURITY.md', 'docker-compose.yml', 'config/cmu-proxy.example.env'].filter((f) => existsSync(join(ROOT, f)))
  const walk = (dir: string): string[] => existsSync(join(ROOT, dir))
    ? readdirSync(join(ROOT, dir)).flatMap((name) => {
      const path = join(dir, name)
      return statSync(join(ROOT, path)).isDirectory() ? walk(path) : /\.(md|ya?ml|sh)$/.test(name) ? [path] : []
    })
    : []
  return [...files, ...walk('docs'), ...walk('deploy')]
}

/** Every config/<file> a doc or deploy file names, but the example. */
const mentioned = [...new Set(markdownAndDeployFiles().flatMap((file) =>
  [...readFileSync(join(ROOT, file), 'utf8').matchAll(/\bconfig\/([A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])/g)].map((m) => `config/${m[1] ?? ''}`)))]
  .filter((path) => path !== 'config/cmu-proxy.example.env')
// Names the docs do not use but a user may pick.
const SECRET_PATHS = [...mentioned, 'config/prod.jwt', 'config/other.key', 'config/state-encryption.key.next', 'config/state-encryption.key.new', 'config/staging.env', 'config/tls/client.pem', 'secrets/statement.jwt', 'data/credentials.json']

t.test('the docs name secret files in config/', async (t) => {
  for (const path of ['config/software-statement.jwt', 'config/proxy-api-keys.txt', 'config/state-encryption.key', 'config/cmu-proxy.env']) {
    t.ok(mentioned.includes(path), `${path} is among the files the docs name`)
  }
})

t.test('.gitignore ignores every secret file, by pattern', async (t) => {
  for (const path of SECRET_PATHS) t.ok(gitIgnores(path), `git ignores ${path}`)
  t.notOk(gitIgnores('config/cmu-proxy.example.env'), 'the example env file is tracked')
  t.notOk(gitIgnores('src/app.ts'), 'sources are not ignored')
})

t.test('.dockerignore keeps every secret file out of the build context', async (t) => {
  for (const path of SECRET_PATHS) t.ok(dockerIgnores(path), `docker ignores ${path}`)
  t.notOk(dockerIgnores('config/cmu-proxy.example.env'), 'the example env file may be sent')
  for (const path of ['src/app.ts', 'package.json', 'package-lock.json', 'tsconfig.json']) t.notOk(dockerIgnores(path), `${path} reaches the build`)
})

t.test('no tracked file looks like a secret', async (t) => {
  const tracked = execFileSync('git', ['ls-files'], { cwd: ROOT, encoding: 'utf8' }).split('\n')
  t.same(tracked.filter((path) => /\.(jwt|key|pem)$|credentials\.json$|^config\/(?!cmu-proxy\.example\.env$)/.test(path)), [])
})
