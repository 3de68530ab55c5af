// deploy/kubernetes, checked offline: every manifest parses and validates
// against the Kubernetes schemas (kubernetes-models), every kustomization
// lists exactly its directory, and the properties the deployment promises
// hold: the sidecar on 127.0.0.1 with its probes, the hardened security
// context everywhere, secrets only as files from Secrets nobody commits.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, posix, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Deployment } from 'kubernetes-models/apps/v1'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import { Service, type IContainer, type IPodSpec, type IProbe } from 'kubernetes-models/v1'
import t from 'tap'
import { parseAllDocuments } from 'yaml'
import { configSchema } from '../../src/config/schema.js'
import { DEFAULT_KEY_PREFIX } from '../../src/store/namespace.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const DEPLOY = join(ROOT, 'deploy', 'kubernetes')
/** Variables of fleet mode (fixed by the design) and the opt-in another change adds; the rest come from the config schema. */
const FLEET_VARIABLES = ['REDIS_URL', 'REDIS_PASSWORD_FILE', 'REDIS_KEY_PREFIX', 'STATE_ENCRYPTION_KEY', 'STATE_ENCRYPTION_KEY_FILE', 'PROXY_ALLOW_ANONYMOUS']
const VARIABLES = new Set([...Object.keys(configSchema.properties), ...FLEET_VARIABLES])
/** The *_FILE variables that point at secrets (CREDENTIALS_FILE is state the proxy writes). */
const SECRET_FILE = /^(ADOBE_SOFTWARE_STATEMENT|ADOBE_CLIENT_SECRET|STATE_ENCRYPTION_KEY|PROXY_API_KEYS|ADMIN_API_KEY|REDIS_PASSWORD)_FILE$/

/** Schemas for the kinds the manifests may use; anything else fails the test. */
const MODELS: Record<string, { validate: (data: object) => void }> = {
  'apps/v1 Deployment': { validate: (data) => { new Deployment(data as Deployment).validate() } },
  'v1 Service': { validate: (data) => { new Service(data as Service).validate() } },
  'policy/v1 PodDisruptionBudget': { validate: (data) => { new PodDisruptionBudget(data as PodDisruptionBudget).validate() } },
  'networking.k8s.io/v1 NetworkPolicy': { validate: (data) => { new NetworkPolicy(data as NetworkPolicy).validate() } }
}

interface Manifest { file: string, text: string, doc: Record<string, any> }

function walk (dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? walk(path) : [path]
  })
}

const files = walk(DEPLOY)
const yamlFiles = files.filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
const kustomizations = yamlFiles.filter((f) => posix.basename(f) === 'kustomization.yaml')
const manifests: Manifest[] = yamlFiles.filter((f) => !kustomizations.includes(f)).flatMap((file) => {
  const text = readFileSync(file, 'utf8')
  return parseAllDocuments(text).map((d) => ({ file: relative(DEPLOY, file), text, doc: d.toJS() as Record<string, any> }))
})

function deployment (name: string): Record<string, any> {
  const found = manifests.find((m) => m.doc.kind === 'Deployment' && m.doc.metadata?.name === name)
  if (found === undefined) throw new Error(`no Deployment ${name}`)
  return found.doc
}

function podSpec (name: string): IPodSpec {
  return deployment(name).spec.template.spec as IPodSpec
}

function env (container: IContainer): Record<string, string> {
  return Object.fromEntries((container.env ?? []).map((e) => [e.name, e.value ?? '']))
}

/** Property names of a kubernetes-models interface, read from its .d.ts: the schemas accept unknown fields, a typo would pass them. */
const CORE_V1 = dirname(createRequire(import.meta.url).resolve('kubernetes-models/v1'))
function knownFields (type: string): Set<string> {
  const dts = readFileSync(join(CORE_V1, `${type}.d.ts`), 'utf8')
  return new Set([...dts.matchAll(/^ {4}"(\w+)"\??:/gm)].map((m) => m[1] ?? ''))
}
const FIELDS = { PodSpec: knownFields('PodSpec'), Container: knownFields('Container'), SecurityContext: knownFields('SecurityContext'), PodSecurityContext: knownFields('PodSecurityContext'), Probe: knownFields('Probe') }

function unknownFields (object: object | undefined, known: Set<string>): string[] {
  return Object.keys(object ?? {}).filter((k) => !known.has(k))
}

t.test('every kustomization lists exactly the manifests and directories beside it', async (t) => {
  t.ok(kustomizations.includes(join(DEPLOY, 'kustomization.yaml')), 'a top-level kustomization')
  for (const file of kustomizations) {
    const dir = dirname(file)
    const kustomization = parseAllDocuments(readFileSync(file, 'utf8'))[0]?.toJS() as { apiVersion: string, kind: string, resources: string[] }
    t.equal(kustomization.kind, 'Kustomization', relative(DEPLOY, file))
    t.equal(kustomization.apiVersion, 'kustomize.config.k8s.io/v1beta1')
    const beside = readdirSync(dir).filter((name) => {
      const path = join(dir, name)
      return statSync(path).isDirectory() ? readdirSync(path).includes('kustomization.yaml') : /\.ya?ml$/.test(name) && name !== 'kustomization.yaml'
    })
    t.same([...kustomization.resources].sort(), beside.sort(), `${relative(ROOT, file)} lists every file and directory`)
  }
  const listed = new Set(kustomizations.flatMap((file) => {
    const { resources } = parseAllDocuments(readFileSync(file, 'utf8'))[0]?.toJS() as { resources: string[] }
    return resources.map((r) => join(dirname(file), r))
  }))
  for (const file of yamlFiles.filter((f) => !kustomizations.includes(f))) t.ok(listed.has(file), `${relative(DEPLOY, file)} is applied`)
})

t.test('every manifest validates against the Kubernetes schemas', async (t) => {
  t.ok(manifests.length >= 7, `${manifests.length} manifests`)
  for (const { file, doc } of manifests) {
    const model = MODELS[`${String(doc.apiVersion)} ${String(doc.kind)}`]
    if (model === undefined) {
      t.fail(`${file}: ${String(doc.apiVersion)} ${String(doc.kind)} is not a kind this test knows`)
      continue
    }
    t.doesNotThrow(() => { model.validate(doc) }, `${file}: ${String(doc.kind)} ${String(doc.metadata?.name)}`)
  }
  // The test can fail: a wrong type and a wrong enum value are caught.
  const broken = structuredClone(deployment('cmu-proxy'))
  broken.spec.replicas = 'two'
  t.throws(() => { MODELS['apps/v1 Deployment']?.validate(broken) }, 'a mistyped field fails validation')
})

t.test('pod specs, containers, probes and security contexts use only fields Kubernetes knows', async (t) => {
  for (const { file, doc } of manifests.filter((m) => m.doc.kind === 'Deployment')) {
    const spec = doc.spec.template.spec as IPodSpec
    t.same(unknownFields(spec, FIELDS.PodSpec), [], `${file}: pod spec`)
    t.same(unknownFields(spec.securityContext, FIELDS.PodSecurityContext), [], `${file}: pod security context`)
    for (const container of [...(spec.initContainers ?? []), ...spec.containers]) {
      t.same(unknownFields(container, FIELDS.Container), [], `${file}: ${container.name}`)
      t.same(unknownFields(container.securityContext, FIELDS.SecurityContext), [], `${file}: ${container.name} security context`)
      for (const probe of [container.startupProbe, container.livenessProbe, container.readinessProbe]) {
        t.same(unknownFields(probe, FIELDS.Probe), [], `${file}: ${container.name} probe`)
      }
    }
  }
})

t.test('every container runs hardened: non-root numeric user, read-only root, no capabilities, no escalation, RuntimeDefault seccomp', async (t) => {
  for (const { file, doc } of manifests.filter((m) => m.doc.kind === 'Deployment')) {
    const spec = doc.spec.template.spec as IPodSpec
    t.equal(spec.securityContext?.runAsNonRoot, true, `${file}: pod runAsNonRoot`)
    t.type(spec.securityContext?.runAsUser, 'number', `${file}: pod runAsUser is numeric`)
    t.not(spec.securityContext?.runAsUser, 0)
    t.equal(spec.securityContext?.seccompProfile?.type, 'RuntimeDefault', `${file}: pod seccomp`)
    t.equal(spec.automountServiceAccountToken, false, `${file}: no API token mounted`)
    for (const container of [...(spec.initContainers ?? []), ...spec.containers]) {
      const sc = container.securityContext
      const where = `${file}: ${container.name}`
      t.equal(sc?.runAsNonRoot, true, `${where} runAsNonRoot`)
      t.ok(Number.isInteger(sc?.runAsUser) && sc?.runAsUser !== 0, `${where} numeric non-zero runAsUser`)
      t.equal(sc?.readOnlyRootFilesystem, true, `${where} read-only root filesystem`)
      t.equal(sc?.allowPrivilegeEscalation, false, `${where} no privilege escalation`)
      t.same(sc?.capabilities?.drop, ['ALL'], `${where} drops all capabilities`)
      t.same(sc?.capabilities?.add, undefined, `${where} adds none`)
      t.equal(sc?.seccompProfile?.type, 'RuntimeDefault', `${where} seccomp`)
      t.notOk(sc?.privileged, `${where} not privileged`)
      t.ok(container.resources?.limits?.memory !== undefined, `${where} has a memory limit`)
    }
  }
})

function proxyContainers (): Array<{ file: string, name: string, container: IContainer, spec: IPodSpec }> {
  return manifests.filter((m) => m.doc.kind === 'Deployment').flatMap(({ file, doc }) => {
    const spec = doc.spec.template.spec as IPodSpec
    return [...(spec.initContainers ?? []), ...spec.containers].filter((c) => c.image === 'cmu-proxy').map((container) => ({ file, name: String(doc.metadata.name), container, spec }))
  })
}

t.test('cmu-proxy containers: known variables, secrets only as files from Secrets, Redis and the credentials file wired', async (t) => {
  const proxies = proxyContainers()
  t.same(proxies.map((p) => p.name).sort(), ['cmu-proxy', 'reports-app'], 'the central Deployment and the sidecar')
  const redisService = manifests.find((m) => m.doc.kind === 'Service' && m.doc.metadata.name === 'cmu-proxy-redis')?.doc
  for (const { file, container, spec } of proxies) {
    const vars = env(container)
    for (const name of Object.keys(vars)) t.ok(VARIABLES.has(name), `${file}: ${name} is a configuration variable`)
    for (const e of container.env ?? []) t.equal(e.valueFrom, undefined, `${file}: ${e.name} is a plain value (secrets come as files)`)
    for (const secret of ['ADOBE_SOFTWARE_STATEMENT', 'ADOBE_CLIENT_SECRET', 'STATE_ENCRYPTION_KEY', 'PROXY_API_KEYS', 'ADMIN_API_KEY']) {
      t.equal(vars[secret], undefined, `${file}: ${secret} is not in the pod spec`)
    }
    t.equal(vars.REDIS_URL, `redis://${String(redisService?.metadata.name)}:${String(redisService?.spec.ports[0].port)}`, `${file}: REDIS_URL names the Redis Service`)
    t.equal(vars.REDIS_KEY_PREFIX ?? DEFAULT_KEY_PREFIX, DEFAULT_KEY_PREFIX)
    t.ok(vars.STATE_ENCRYPTION_KEY_FILE !== undefined, `${file}: STATE_ENCRYPTION_KEY_FILE is required with REDIS_URL`)

    // Every secret *_FILE is a file in a mounted Secret whose key is the file's name.
    for (const [name, path] of Object.entries(vars).filter(([n]) => SECRET_FILE.test(n))) {
      const mount = (container.volumeMounts ?? []).find((m) => posix.dirname(path) === m.mountPath)
      const volume = spec.volumes?.find((v) => v.name === mount?.name)
      t.ok(volume?.secret?.secretName !== undefined, `${file}: ${name} comes from a Secret`)
      t.equal(mount?.readOnly, true, `${file}: ${name} mounted read-only`)
      t.equal(volume?.secret?.defaultMode, 0o440, `${file}: ${name} readable by the group only (fsGroup)`)
      t.equal(spec.securityContext?.fsGroup, container.securityContext?.runAsGroup, `${file}: fsGroup lets the proxy read it`)
    }
    // The root filesystem is read-only: the credentials file needs a writable emptyDir.
    const credentialsDir = posix.dirname(vars.CREDENTIALS_FILE ?? '')
    const mount = container.volumeMounts?.find((m) => m.mountPath === credentialsDir)
    t.ok(spec.volumes?.find((v) => v.name === mount?.name)?.emptyDir !== undefined, `${file}: CREDENTIALS_FILE on an emptyDir`)
    t.notOk(mount?.readOnly, 'writable')
  }
})

function probeUrl (probe: IProbe | undefined): string | undefined {
  const script = probe?.exec?.command?.join(' ') ?? ''
  return /fetch\('([^']+)'\)/.exec(script)?.[1]
}

t.test('the sidecar: a native sidecar on 127.0.0.1, probed from inside the pod', async (t) => {
  const spec = podSpec('reports-app')
  const sidecar = spec.initContainers?.find((c) => c.image === 'cmu-proxy')
  if (sidecar === undefined) throw new Error('no cmu-proxy init container')
  t.equal(sidecar.restartPolicy, 'Always', 'an init container with restartPolicy Always is a native sidecar')
  t.ok(spec.containers.length >= 1 && !spec.containers.some((c) => c.image === 'cmu-proxy'), 'the application is a regular container')
  const vars = env(sidecar)
  t.equal(vars.HOST, '127.0.0.1', 'listens on loopback only')
  const port = Number(vars.PORT)
  t.ok(Number.isInteger(port) && port > 0)
  t.same(sidecar.ports, [{ name: 'http', containerPort: port, protocol: 'TCP' }], 'the declared port is PORT')
  t.equal(vars.PROXY_API_KEYS_FILE, undefined, 'no inbound keys needed on loopback')

  // The kubelet probes the pod IP, where a loopback listener cannot be reached: exec probes ask 127.0.0.1.
  for (const probe of [sidecar.startupProbe, sidecar.livenessProbe, sidecar.readinessProbe]) t.equal(probe?.httpGet, undefined, 'no httpGet probe')
  t.equal(probeUrl(sidecar.livenessProbe), `http://127.0.0.1:${port}/healthz`, 'liveness on /healthz')
  t.equal(probeUrl(sidecar.startupProbe), `http://127.0.0.1:${port}/healthz`, 'startup on /healthz: the application starts once the proxy answers')
  t.equal(probeUrl(sidecar.readinessProbe), `http://127.0.0.1:${port}/readyz`, 'readiness on /readyz')
  for (const probe of [sidecar.startupProbe, sidecar.livenessProbe, sidecar.readinessProbe]) {
    t.match(probe?.exec?.command, ['node', '-e', /process\.exit\(r\.ok \? 0 : 1\)/], 'exits non-zero unless 2xx')
    t.ok((probe?.timeoutSeconds ?? 1) >= 3, 'time for node to start')
  }
  const app = spec.containers[0]
  t.match(JSON.stringify(app), `http://127.0.0.1:${port}/cmu`, 'the application calls the proxy on loopback')
})

t.test('the central proxy: 2 replicas behind a Service, API keys required, a disruption budget', async (t) => {
  const central = deployment('cmu-proxy')
  const spec = podSpec('cmu-proxy')
  const container = spec.containers.find((c) => c.image === 'cmu-proxy')
  if (container === undefined) throw new Error('no cmu-proxy container')
  const vars = env(container)
  t.equal(central.spec.replicas, 2)
  t.equal(vars.HOST, '0.0.0.0')
  t.match(vars.PROXY_API_KEYS_FILE, /^\/run\/secrets\//, 'inbound keys from a Secret')
  t.equal(vars.PROXY_ALLOW_ANONYMOUS, undefined, 'no anonymous opt-in')
  const labels = central.spec.template.metadata.labels
  t.same(central.spec.selector.matchLabels, { 'app.kubernetes.io/name': 'cmu-proxy' })
  t.match(labels, central.spec.selector.matchLabels)
  t.equal(container.livenessProbe?.httpGet?.path, '/healthz')
  t.equal(container.readinessProbe?.httpGet?.path, '/readyz')
  t.equal(container.livenessProbe?.httpGet?.port, 'http')
  t.same(container.ports, [{ name: 'http', containerPort: Number(vars.PORT), protocol: 'TCP' }])
  t.ok((spec.terminationGracePeriodSeconds ?? 30) > Number(configSchema.properties.SHUTDOWN_GRACE_SECONDS.default), 'the grace period outlasts SHUTDOWN_GRACE_SECONDS')

  const service = manifests.find((m) => m.doc.kind === 'Service' && m.doc.metadata.name === 'cmu-proxy')?.doc
  t.match(labels, service?.spec.selector, 'the Service selects the pods')
  t.same(service?.spec.ports, [{ name: 'http', port: 8080, targetPort: 'http', protocol: 'TCP' }])
  const pdb = manifests.find((m) => m.doc.kind === 'PodDisruptionBudget')?.doc
  t.same(pdb?.spec.selector.matchLabels, central.spec.selector.matchLabels, 'the budget covers the pods')
  t.ok(pdb?.spec.minAvailable >= 1 && pdb?.spec.minAvailable < central.spec.replicas, 'one may go, one stays')
})

t.test('the trial Redis: one replica, not persisted, reachable only by the proxies, marked as not for production', async (t) => {
  const redis = manifests.find((m) => m.doc.kind === 'Deployment' && m.doc.metadata.name === 'cmu-proxy-redis')
  t.equal(redis?.doc.spec.replicas, 1)
  t.match(redis?.text, /[Pp]roduction uses a managed or replicated Redis/)
  t.match(podSpec('cmu-proxy-redis').containers[0]?.args, ['--save', '', '--appendonly', 'no'])
  const policy = manifests.find((m) => m.doc.kind === 'NetworkPolicy')?.doc
  t.same(policy?.spec.podSelector.matchLabels, redis?.doc.spec.selector.matchLabels)
  const allowed = policy?.spec.ingress[0].from[0].podSelector.matchLabels as Record<string, string>
  for (const name of ['cmu-proxy', 'reports-app']) t.match(deployment(name).spec.template.metadata.labels, allowed, `${name} may reach Redis`)
})

t.test('no secret material in the manifests; every referenced Secret has its kubectl create command', async (t) => {
  t.notOk(manifests.some((m) => m.doc.kind === 'Secret'), 'no Secret objects: they are created by hand')
  for (const file of files) {
    const text = readFileSync(file, 'utf8')
    const where = relative(DEPLOY, file)
    t.notMatch(text, /\beyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]*/, `${where}: nothing JWT-shaped`)
    t.notMatch(text, /-----BEGIN [A-Z ]*PRIVATE KEY-----/, `${where}: no private key`)
    t.notMatch(text, /(?<![\w/.-])[A-Za-z0-9+/]{40,}={0,2}(?![\w/.-])/, `${where}: no long base64 blob`)
    t.notMatch(text, /\b[0-9a-f]{40,}\b/i, `${where}: no long hex blob`)
    t.notMatch(text, /redis:\/\/[^@\s]*:[^@\s]+@/, `${where}: no password in a Redis URL`)
  }
  const readme = readFileSync(join(DEPLOY, 'README.md'), 'utf8')
  const secretVolumes = manifests.filter((m) => m.doc.kind === 'Deployment').flatMap(({ doc }) => (doc.spec.template.spec as IPodSpec).volumes ?? []).filter((v) => v.secret !== undefined)
  const secretNames = new Set(secretVolumes.map((v) => v.secret?.secretName))
  t.same([...secretNames].sort(), ['cmu-proxy-api-keys', 'cmu-proxy-state-key', 'cmu-proxy-statement'])
  for (const { file, container } of proxyContainers()) {
    for (const [name, path] of Object.entries(env(container)).filter(([n]) => SECRET_FILE.test(n))) {
      const volumeName = container.volumeMounts?.find((m) => m.mountPath === posix.dirname(path))?.name
      const secretName = secretVolumes.find((v) => v.name === volumeName)?.secret?.secretName ?? ''
      t.match(readme, new RegExp(`kubectl create secret generic ${secretName} \\\\\\n\\s+--from-file=${posix.basename(path).replace('.', '\\.')}=`), `${file}: ${name}: the README creates ${secretName} with the key ${posix.basename(path)}`)
    }
  }
})

t.test('images: cmu-proxy containers use the name the kustomizations retarget', async (t) => {
  for (const dir of ['sidecar', 'central']) {
    const kustomization = parseAllDocuments(readFileSync(join(DEPLOY, dir, 'kustomization.yaml'), 'utf8'))[0]?.toJS() as { images?: Array<{ name: string, newName: string, newTag: string }> }
    t.match(kustomization.images, [{ name: 'cmu-proxy', newName: String, newTag: /^\d+\.\d+\.\d+$/ }], `${dir}: a pinned tag`)
  }
  for (const { file, container } of proxyContainers()) t.equal(container.imagePullPolicy, 'IfNotPresent', `${file}: pull policy`)
})
