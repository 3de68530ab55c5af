// docker-compose.yml's fleet profile, checked offline (no Docker engine runs
// where the tests run): a Redis, two proxies sharing it on distinct loopback
// ports, the state key from a git-ignored compose secret.
import { readFileSync } from 'node:fs'
import { join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { parse } from 'yaml'
import { configSchema } from '../../src/config/schema.js'
import { dockerIgnores, gitIgnores } from '../helpers/ignore-rules.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const FLEET_VARIABLES = ['REDIS_URL', 'REDIS_PASSWORD_FILE', 'REDIS_KEY_PREFIX', 'STATE_ENCRYPTION_KEY', 'STATE_ENCRYPTION_KEY_FILE', 'PROXY_ALLOW_ANONYMOUS']
const VARIABLES = new Set([...Object.keys(configSchema.properties), ...FLEET_VARIABLES])

interface ComposeService {
  profiles?: string[]
  image?: string
  build?: string
  command?: string[]
  environment?: Record<string, string>
  secrets?: string[]
  ports?: string[]
  volumes?: string[]
  depends_on?: Record<string, { condition: string }>
}
interface Compose { services: Record<string, ComposeService>, secrets: Record<string, { file: string }>, volumes: Record<string, unknown> }

// Docker Compose resolves YAML merge keys (<<: *fleet-proxy); so does this parse.
const text = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')
const compose = parse(text, { merge: true }) as Compose
const fleet = Object.entries(compose.services).filter(([name, s]) => name !== 'redis' && s.profiles?.includes('fleet'))

t.test('the fleet profile: a Redis and at least two proxies sharing it', async (t) => {
  const redis = compose.services.redis
  t.same(redis?.profiles, ['fleet'], 'Redis only with the fleet profile: it stays optional')
  t.match(redis?.command, ['redis-server', '--save', '', '--appendonly', 'no'], 'nothing persisted: the proxies repopulate it')
  t.equal(redis?.ports, undefined, 'Redis is not published on the host')
  t.ok(fleet.length >= 2, `${fleet.length} proxies`)
  for (const [name, service] of fleet) {
    t.equal(service.image, compose.services['cmu-proxy']?.image, `${name}: the same image`)
    t.equal(service.build, '.')
    t.equal(service.environment?.REDIS_URL, 'redis://redis:6379', `${name}: shares the redis service`)
    t.equal(service.depends_on?.redis?.condition, 'service_started', `${name}: started after Redis, not gated on its health`)
    for (const variable of Object.keys(service.environment ?? {})) t.ok(VARIABLES.has(variable), `${name}: ${variable} is a configuration variable`)
  }
})

t.test('the fleet: distinct host ports on loopback, its own credentials volume per proxy', async (t) => {
  const taken = new Map<string, string>()
  for (const port of compose.services['cmu-proxy']?.ports ?? []) taken.set(String(port).split(':').at(-2) ?? '', 'cmu-proxy')
  const volumes = new Set<string>()
  for (const [name, service] of fleet) {
    t.equal(service.ports?.length, 1)
    const [host, hostPort, containerPort] = String(service.ports?.[0]).split(':')
    t.equal(host, '127.0.0.1', `${name}: published on the host's loopback only`)
    t.equal(containerPort, '8080')
    t.notOk(taken.has(hostPort ?? ''), `${name}: host port ${String(hostPort)} is free (not ${taken.get(hostPort ?? '') ?? ''})`)
    taken.set(hostPort ?? '', name)
    // Loopback-only publishing is what makes the anonymous opt-in acceptable here.
    t.equal(service.environment?.PROXY_ALLOW_ANONYMOUS, 'true', `${name}: opts in to no inbound keys`)
    const [volume, mountPoint] = String(service.volumes?.[0]).split(':')
    t.ok(volume !== undefined && volume in compose.volumes, `${name}: a named volume`)
    t.notOk(volumes.has(volume ?? ''), `${name}: not shared with another proxy`)
    volumes.add(volume ?? '')
    t.equal(mountPoint, posix.dirname(service.environment?.CREDENTIALS_FILE ?? ''), `${name}: CREDENTIALS_FILE on it`)
  }
})

t.test('the fleet: statement and state key come from compose secrets; the key file is git- and docker-ignored', async (t) => {
  for (const [name, service] of fleet) {
    const environment = service.environment ?? {}
    t.equal(environment.STATE_ENCRYPTION_KEY, undefined, `${name}: the key is not an environment variable`)
    t.equal(environment.ADOBE_SOFTWARE_STATEMENT, undefined)
    for (const variable of ['STATE_ENCRYPTION_KEY_FILE', 'ADOBE_SOFTWARE_STATEMENT_FILE']) {
      const secret = /^\/run\/secrets\/(\w+)$/.exec(environment[variable] ?? '')?.[1] ?? ''
      t.ok(service.secrets?.includes(secret), `${name}: ${variable} is the compose secret ${secret}`)
    }
  }
  const keySecret = /^\/run\/secrets\/(\w+)$/.exec(fleet[0]?.[1].environment?.STATE_ENCRYPTION_KEY_FILE ?? '')?.[1] ?? ''
  t.equal(compose.secrets[keySecret]?.file, './config/state-encryption.key')
  t.ok(gitIgnores('config/state-encryption.key'), 'git-ignored')
  t.ok(dockerIgnores('config/state-encryption.key'), 'kept out of the build context')
  t.match(text, /openssl rand -base64 32 > config\/state-encryption\.key/, 'how to make one is documented')
  t.match(text, /docker compose --profile fleet up/, 'how to start the fleet is documented')
})
