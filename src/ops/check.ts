// `cmu-proxy check`: what ops run first. Walks the same steps the proxy takes
// (config, credentials, token, one CMU call) and prints one line per step
// with PASS/FAIL and the reason; exits non-zero on the first failure (78, as
// serve does, when the configuration is bad: one line per bad variable).
// In fleet mode (REDIS_URL or REDIS_SENTINELS) it reads the fleet's credentials and never registers.
import { resolve } from 'node:path'
import pino from 'pino'
import type { Dispatcher } from 'undici'
import { CredentialStore } from '../adobe/credential-store.js'
import { DcrClient, DcrError, type ClientCredentials } from '../adobe/dcr-client.js'
import { publicStatementInfo } from '../adobe/software-statement.js'
import { maskClientId } from '../adobe/token-broker.js'
import { ConfigError, EXIT_CONFIG, loadConfig, type Config } from '../config/load.js'
import { redisVariable, usesRedis } from '../config/redis-settings.js'
import { ProxyError } from '../kernel/errors.js'
import { createFleet } from '../fleet/fleet.js'
import { StateSealError } from '../store/errors.js'
import { adobeEgress, createDispatcher, describeAdobeEgress } from '../upstream/dispatchers.js'
import { Upstream } from '../upstream/upstream.js'
import { USER_AGENT } from '../kernel/version.js'

type Env = Record<string, string | undefined>
type Print = (line: string) => void

class StepFailed extends Error {}

export async function runCheck (env: Env = process.env, print: Print = (line) => { process.stdout.write(`${line}\n`) }): Promise<number> {
  const step = (ok: boolean, name: string, detail: string): void => { print(`${ok ? 'PASS' : 'FAIL'}  ${name.padEnd(12)} ${detail}`) }
  const fail = (name: string, detail: string): never => {
    step(false, name, detail)
    throw new StepFailed(detail)
  }
  let dispatcher: Dispatcher | undefined
  let upstream: Upstream | undefined
  try {
    let config: Config
    try {
      config = loadConfig({ env })
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err
      for (const line of err.lines) step(false, 'config', line)
      return EXIT_CONFIG
    }
    step(true, 'config', `auth ${config.ADOBE_AUTH_URL}, reports ${config.ADOBE_CMU_URL}`)
    const egress = adobeEgress(config)
    step(true, 'egress', describeAdobeEgress(egress))
    dispatcher = createDispatcher(new URL(config.ADOBE_AUTH_URL).origin, egress.auth, { connectTimeoutMs: config.AUTH_TIMEOUT_MS, keepAliveTimeoutMs: 10_000 })

    const dcr = new DcrClient({ authUrl: config.ADOBE_AUTH_URL, dispatcher, timeoutMs: config.AUTH_TIMEOUT_MS, userAgent: USER_AGENT })
    const credentials = await obtainCredentials(config, dcr, step, fail)

    let token: string
    try {
      const answer = await dcr.requestToken(credentials)
      token = answer.access_token
      step(true, 'token', `access token obtained, expires in ${answer.expires_in} s`)
    } catch (err) {
      return fail('token', `${describe(err)}${(err as DcrError).oauthError === 'invalid_client' ? revokedAdvice(config) : ''}`)
    }

    upstream = new Upstream({ baseUrl: config.ADOBE_CMU_URL, proxy: egress.cmu, connections: 1, maxPending: 1, connectTimeoutMs: config.UPSTREAM_CONNECT_TIMEOUT_MS, headersTimeoutMs: config.UPSTREAM_HEADERS_TIMEOUT_MS, bodyTimeoutMs: config.UPSTREAM_BODY_TIMEOUT_MS })
    try {
      const response = await upstream.request({ path: '/v2', query: '', headers: { authorization: `Bearer ${token}`, accept: 'application/json', 'user-agent': USER_AGENT }, signal: AbortSignal.timeout(config.UPSTREAM_HEADERS_TIMEOUT_MS) })
      await response.body.dump()
      if (response.statusCode !== 200) fail('cmu', `GET ${config.ADOBE_CMU_URL}/v2 answered HTTP ${response.statusCode}`)
      step(true, 'cmu', `GET ${config.ADOBE_CMU_URL}/v2 answered 200`)
    } catch (err) {
      if (err instanceof StepFailed) throw err
      return fail('cmu', `GET ${config.ADOBE_CMU_URL}/v2 failed: ${describe(err)}`)
    }
    print('All checks passed.')
    return 0
  } catch (err) {
    if (err instanceof StepFailed) return 1
    throw err
  } finally {
    await Promise.all([dispatcher?.close(), upstream?.close()])
  }
}

async function obtainCredentials (config: Config, dcr: DcrClient, step: (ok: boolean, name: string, detail: string) => void, fail: (name: string, detail: string) => never): Promise<ClientCredentials> {
  if (config.ADOBE_CLIENT_ID !== undefined && config.ADOBE_CLIENT_SECRET !== undefined) {
    step(true, 'credentials', `pre-provisioned client ${maskClientId(config.ADOBE_CLIENT_ID)} (ADOBE_CLIENT_ID)`)
    return { client_id: config.ADOBE_CLIENT_ID, client_secret: config.ADOBE_CLIENT_SECRET }
  }
  const statement = config.ADOBE_SOFTWARE_STATEMENT ?? ''
  const info = publicStatementInfo(statement)
  step(true, 'statement', `fingerprint ${String(info.fingerprint)}${info.sub === undefined ? '' : `, sub ${String(info.sub)}`}`)
  if (usesRedis(config)) return await fleetCredentials(config, step, fail)
  const store = new CredentialStore(resolve(config.CREDENTIALS_FILE), statement)
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
async function fleetCredentials (config: Config, step: (ok: boolean, name: string, detail: string) => void, fail: (name: string, detail: string) => never): Promise<ClientCredentials> {
  const fleet = createFleet(config, { logger: pino({ level: 'silent' }), readOnly: true })
  if (fleet === undefined) throw new Error('unreachable: Redis is configured')
  try {
    const { redis } = fleet.status()
    const where = `${redis} (${redisVariable(config)})`
    // What Redis said (WRONGPASS, NOAUTH, a Cluster node, a TLS failure), not only that it did not become ready.
    if (!await fleet.store.waitUntilUp(config.AUTH_TIMEOUT_MS)) {
      const problem = fleet.store.stats().lastProblem
      fail('fleet', problem?.configuration === true ? `${where}: ${problem.reason}` : `${where} did not answer within ${config.AUTH_TIMEOUT_MS} ms${problem === undefined ? '' : `: ${problem.reason}`}`)
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

function revokedAdvice (config: Config): string {
  return !usesRedis(config)
    ? ' (credentials revoked: delete CREDENTIALS_FILE to register again)'
    : ' (credentials revoked: a running proxy instance re-registers once for the fleet; or POST /admin/credentials/reregister)'
}

function describe (err: unknown): string {
  if (err instanceof DcrError || err instanceof ProxyError) return err.message
  return (err as { code?: string }).code ?? (err as Error).message
}
