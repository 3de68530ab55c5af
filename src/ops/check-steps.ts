// The steps of `cmu-proxy check` (check.ts) after the configuration: egress,
// credentials, token, one CMU call, one ESM call, each printed as PASS or
// FAIL with the reason; the first failure ends the walk (exit 1). ESM's 403
// (a deployment without ESM access, whose CMU works) is a WARN, not a failure. Loaded only once the
// settings are valid. In fleet mode (REDIS_URL or REDIS_SENTINELS) it reads the fleet's
// credentials and never registers.
import pino from 'pino'
import type { Dispatcher } from 'undici'
import { CredentialStore, proveWritable } from '../adobe/credential-store.js'
import { maskClientId } from '../adobe/credentials.js'
import { DcrClient, type ClientCredentials } from '../adobe/dcr-client.js'
import { CredentialsNotWritable, DcrError } from '../adobe/errors.js'
import { publicStatementInfo } from '../adobe/software-statement.js'
import { EXIT_CONFIG } from '../config/problems.js'
import type { Settings } from '../config/settings.js'
import { ProxyError } from '../kernel/errors.js'
import { createFleet, type FleetSections } from '../fleet/fleet.js'
import { StateSealError } from '../store/errors.js'
import { createDispatcher, describeAdobeEgress } from '../upstream/dispatchers.js'
import { Upstream } from '../upstream/upstream.js'
import { USER_AGENT } from '../kernel/version.js'

/** Prints one PASS, FAIL or WARN line. */
export type Step = (ok: boolean | 'warn', name: string, detail: string) => void

class StepFailed extends Error {
  constructor (detail: string, readonly exitCode = 1) { super(detail) }
}

/** 0 when every step passes, else 1, or 78 when the credentials file cannot be written (after printing the failed step). */
export async function checkSteps (settings: Settings, step: Step, print: (line: string) => void): Promise<number> {
  const { adobe, upstream: upstreamSettings } = settings
  const fail: Fail = (name, detail, exitCode) => {
    step(false, name, detail)
    throw new StepFailed(detail, exitCode)
  }
  let dispatcher: Dispatcher | undefined
  const upstreams: Upstream[] = []
  try {
    const { egress } = upstreamSettings
    step(true, 'egress', describeAdobeEgress(egress))
    dispatcher = createDispatcher(new URL(adobe.authUrl).origin, egress.auth, { connectTimeoutMs: adobe.authTimeoutMs, keepAliveTimeoutMs: 10_000 })

    const dcr = new DcrClient({ authUrl: adobe.authUrl, dispatcher, timeoutMs: adobe.authTimeoutMs, userAgent: USER_AGENT })
    const credentials = await obtainCredentials(settings, dcr, step, fail)

    let token: string
    try {
      const answer = await dcr.requestToken(credentials)
      token = answer.access_token
      step(true, 'token', `access token obtained, expires in ${answer.expires_in} s`)
    } catch (err) {
      return fail('token', `${describe(err)}${err instanceof DcrError && err.oauthError === 'invalid_client' ? revokedAdvice(settings) : ''}`)
    }

    const { connectTimeoutMs, headersTimeoutMs, bodyTimeoutMs } = upstreamSettings
    // One report call per API: what the proxy's first caller would send.
    const report = async (name: string, baseUrl: string, proxy: string | undefined, path: string): Promise<number> => {
      const upstream = new Upstream({ baseUrl, proxy, connections: 1, maxPending: 1, connectTimeoutMs, headersTimeoutMs, bodyTimeoutMs })
      upstreams.push(upstream)
      try {
        const response = await upstream.request({ path, query: '', headers: { authorization: `Bearer ${token}`, accept: 'application/json', 'user-agent': USER_AGENT }, signal: AbortSignal.timeout(headersTimeoutMs) })
        await response.body.dump()
        return response.statusCode
      } catch (err) {
        return fail(name, `GET ${baseUrl}${path} failed: ${describe(err)}`)
      }
    }
    const cmu = await report('cmu', adobe.cmuUrl, egress.cmu, '/v2')
    if (cmu !== 200) fail('cmu', `GET ${adobe.cmuUrl}/v2 answered HTTP ${cmu}`)
    step(true, 'cmu', `GET ${adobe.cmuUrl}/v2 answered 200`)
    const esm = await report('esm', adobe.esmUrl, egress.esm, '/v3')
    if (esm === 403) {
      step('warn', 'esm', `GET ${adobe.esmUrl}/v3 answered 403: this application has no ESM access (CMU works); /esm answers 403 CMU_PROXY_ESM_FORBIDDEN until Adobe enables ESM for it`)
    } else {
      if (esm !== 200) fail('esm', `GET ${adobe.esmUrl}/v3 answered HTTP ${esm}`)
      step(true, 'esm', `GET ${adobe.esmUrl}/v3 answered 200`)
    }
    print('All checks passed.')
    return 0
  } catch (err) {
    if (err instanceof StepFailed) return err.exitCode
    throw err
  } finally {
    await Promise.all([dispatcher?.close(), ...upstreams.map(async (upstream) => { await upstream.close() })])
  }
}

type Fail = (name: string, detail: string, exitCode?: number) => never

async function obtainCredentials (settings: Settings, dcr: DcrClient, step: Step, fail: Fail): Promise<ClientCredentials> {
  const { staticCredentials, softwareStatement, credentialsFile } = settings.adobe
  // As serve does at start (when a statement may register, alone): credentials that cannot be saved would cost a registration on every start.
  if (softwareStatement !== undefined && settings.fleet === undefined) {
    try {
      await proveWritable(credentialsFile)
    } catch (err) {
      if (!(err instanceof CredentialsNotWritable)) throw err
      return fail('credentials', err.message, EXIT_CONFIG)
    }
  }
  if (staticCredentials !== undefined) {
    step(true, 'credentials', `pre-provisioned client ${maskClientId(staticCredentials.client_id)} (ADOBE_CLIENT_ID)`)
    return { ...staticCredentials }
  }
  const statement = softwareStatement ?? ''
  const info = publicStatementInfo(statement)
  step(true, 'statement', `fingerprint ${String(info.fingerprint)}${info.sub === undefined ? '' : `, sub ${String(info.sub)}`}`)
  if (settings.fleet !== undefined) return await fleetCredentials({ ...settings, fleet: settings.fleet }, step, fail)
  const store = new CredentialStore(credentialsFile, statement)
  const loaded = await store.load()
  if (loaded.status === 'found') {
    step(true, 'credentials', `client ${maskClientId(loaded.credentials.client_id)} from ${store.path}`)
    return loaded.credentials
  }
  let credentials: ClientCredentials
  try {
    credentials = await dcr.registerClient(statement)
  } catch (err) {
    return fail('register', describe(err))
  }
  try {
    await store.save(credentials)
  } catch (err) {
    return fail('register', `registered, but cannot write ${store.path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  step(true, 'register', `registered client ${maskClientId(credentials.client_id)}, saved to ${store.path}`)
  return credentials
}

/**
 * Fleet mode: the fleet's copy of the credentials, read and nothing else. No
 * registration (the fleet registers once, under its lock; a check that
 * registered would create a second client), no write to Redis or to
 * CREDENTIALS_FILE (check may run on a host that is not part of the fleet),
 * and no fallback to the file: a key list that cannot open the fleet's copy
 * is exactly what this should catch.
 */
async function fleetCredentials (sections: FleetSections, step: Step, fail: Fail): Promise<ClientCredentials> {
  const fleet = createFleet(sections, { logger: pino({ level: 'silent' }), readOnly: true })
  const { authTimeoutMs } = sections.adobe
  try {
    const where = `${sections.fleet.redis.target} (${sections.fleet.redis.variable})`
    // What Redis said (WRONGPASS, NOAUTH, a Cluster node, a TLS failure), not only that it did not become ready.
    if (!await fleet.store.waitUntilUp(authTimeoutMs)) {
      const problem = fleet.store.stats().lastProblem
      fail('fleet', problem?.configuration === true ? `${where}: ${problem.reason}` : `${where} did not answer within ${authTimeoutMs} ms${problem === undefined ? '' : `: ${problem.reason}`}`)
    }
    step(true, 'fleet', `${where} answered`)
    let found: ClientCredentials | undefined
    try {
      found = await fleet.credentials?.readShared()
    } catch (err) {
      const why = err instanceof StateSealError ? `${err.message} (every instance, and check, need the fleet's STATE_ENCRYPTION_KEY list)` : (err as Error).message
      return fail('credentials', `the fleet's client credentials cannot be read: ${why}`)
    }
    if (found !== undefined) {
      step(true, 'credentials', `client ${maskClientId(found.client_id)} from the fleet's store`)
      return found
    }
    return fail('credentials', 'the fleet\'s store holds no usable client credentials (none registered yet, or the value holds none); check does not register in fleet mode (the first proxy instance registers once for the fleet)')
  } finally {
    await fleet.close()
  }
}

function revokedAdvice (settings: Settings): string {
  return settings.fleet === undefined
    ? ' (credentials revoked: delete CREDENTIALS_FILE to register again)'
    : ' (credentials revoked: a running proxy instance re-registers once for the fleet; or POST /admin/credentials/reregister)'
}

function describe (err: unknown): string {
  if (err instanceof DcrError || err instanceof ProxyError) return err.message
  return (err as { code?: string }).code ?? (err as Error).message
}
