// Reload without a restart, on SIGHUP (main.ts) or when a mounted secret file
// changes (secret-file-watch.ts), as Vault Proxy does on SIGHUP and Envoy
// with SDS. The configuration is loaded again exactly as at start (load.ts:
// the env file, the environment, every *_FILE), and held to the same rules;
// then only the secrets of ReloadableSecret are applied. Whatever else
// changed waits for a restart, and one line says so.
//
// A reload never makes things worse: a new value that fails validation keeps
// every value in use (one line naming the variables, never a value); a key
// list may change but never empty itself (no reload opens /cmu to callers
// without a key); the state key list must keep the key that seals now (rotate
// in three steps: add NEW, put NEW first, drop OLD). Removing ADMIN_API_KEY
// revokes it: /admin stays, and refuses every request, until a key comes back.
import type { KeyObject } from 'node:crypto'
import { resolve } from 'node:path'
import type { Logger } from 'pino'
import { loadConfiguration, type LoadedConfiguration, type LoadOptions } from './load.js'
import { ConfigError, problemOf, type ConfigProblem } from './problems.js'
import { configSchema, type Config, type Variable } from './schema.js'
import type { RateLimitRule, ReloadableSecret, Settings } from './settings.js'
import { SecretFileWatch } from './secret-file-watch.js'

/** How a reload ended (cmu_proxy_config_reloads_total{result}). */
export type ReloadResult = 'ok' | 'rejected' | 'unchanged'

/** Where the secrets go (ops/live-secrets.ts). */
export interface SecretsTarget {
  /** Applies the secrets of `next` named in `changed`, in one synchronous step. */
  apply: (next: Settings, changed: readonly ReloadableSecret[]) => void
  counted: (result: ReloadResult) => void
}

/** The secrets in effect: what each reload compares the newly loaded ones with. */
interface Secrets {
  apiKeys: readonly string[]
  adminKey: string | undefined
  /** Undefined when the proxy started without RATE_LIMIT (nothing to apply them to). */
  overrides: ReadonlyMap<string, RateLimitRule> | undefined
  statement: string | undefined
  stateKeys: readonly KeyObject[]
}

/** Each reloadable secret: its variables, and whether two sets of secrets hold the same value of it. */
const SECRETS: ReadonlyArray<{ name: ReloadableSecret, file: Variable, same: (a: Secrets, b: Secrets) => boolean }> = [
  { name: 'PROXY_API_KEYS', file: 'PROXY_API_KEYS_FILE', same: (a, b) => sameList(a.apiKeys, b.apiKeys, (x, y) => x === y) },
  { name: 'ADMIN_API_KEY', file: 'ADMIN_API_KEY_FILE', same: (a, b) => a.adminKey === b.adminKey },
  { name: 'RATE_LIMIT_KEYS', file: 'RATE_LIMIT_KEYS_FILE', same: (a, b) => sameRules(a.overrides, b.overrides) },
  { name: 'ADOBE_SOFTWARE_STATEMENT', file: 'ADOBE_SOFTWARE_STATEMENT_FILE', same: (a, b) => a.statement === b.statement },
  { name: 'STATE_ENCRYPTION_KEY', file: 'STATE_ENCRYPTION_KEY_FILE', same: (a, b) => sameList(a.stateKeys, b.stateKeys, (x, y) => x.equals(y)) }
]

/** Variables a reload reads again (the secrets and their files); a change of any other one waits for a restart. */
const RELOADED: ReadonlySet<string> = new Set(SECRETS.flatMap(({ name, file }) => [name, file]))
const VARIABLES = Object.keys(configSchema.properties) as Variable[]

export interface ReloaderOptions {
  /** What loadSettings read at start (the same env and working directory are read again). */
  load: LoadOptions
  /** The configuration the process started with. */
  started: LoadedConfiguration
  target: SecretsTarget
  logger: Logger
}

export class SettingsReloader {
  readonly #options: ReloaderOptions
  readonly #log: Logger
  readonly #started: Config
  readonly #startedSecrets: Secrets
  #inEffect: Secrets
  #files: string[]

  constructor (options: ReloaderOptions) {
    this.#options = options
    this.#log = options.logger.child({ component: 'reload' })
    this.#started = options.started.config
    this.#startedSecrets = secretsOf(options.started.settings, options.started.settings)
    this.#inEffect = this.#startedSecrets
    this.#files = secretFiles(options.started.config)
  }

  /** The mounted secret files in use (watched by secret-file-watch.ts): absolute paths. */
  get files (): readonly string[] { return this.#files }

  /** Loads again and applies the secrets that changed; `trigger` says why (SIGHUP, a file). Never throws. */
  reload (trigger: string): ReloadResult {
    const result = this.#reload(trigger)
    this.#options.target.counted(result)
    return result
  }

  #reload (trigger: string): ReloadResult {
    let loaded: LoadedConfiguration
    try {
      loaded = loadConfiguration(this.#options.load)
    } catch (err) {
      // ConfigError lines name variables and never echo a secret (load.ts).
      const problems = err instanceof ConfigError ? err.problems : [problemOf('configuration', `could not be read (${(err as Error).name})`)]
      return this.#rejected(trigger, problems)
    }
    const next = secretsOf(loaded.settings, this.#options.started.settings)
    const refused = [...keyListProblems(this.#inEffect, next, loaded.config)]
    if (refused.length > 0) return this.#rejected(trigger, refused)
    this.#files = secretFiles(loaded.config)

    const restart = VARIABLES.filter((name) => !RELOADED.has(name) && loaded.config[name] !== this.#started[name])
    // Turning a secret on or off changes which routes and checks exist: that is a restart.
    const toggled = SECRETS.filter(({ name }) => isToggled(name, this.#inEffect, next, this.#startedSecrets)).map(({ name }) => name)
    if (restart.length > 0 || toggled.length > 0) {
      this.#log.warn({ trigger, variables: [...restart, ...toggled] }, `settings that only a restart applies changed, and are ignored until then: ${[...restart, ...toggled.map((name) => `${name} (turned on or off)`)].join(', ')}`)
    }
    const changed = SECRETS.filter(({ name, same }) => !toggled.includes(name) && !same(this.#inEffect, next)).map(({ name }) => name)
    if (changed.length === 0) {
      this.#log.info({ trigger }, 'configuration reloaded: no secret changed')
      return 'unchanged'
    }
    try {
      this.#options.target.apply(loaded.settings, changed)
    } catch (err) {
      this.#log.error({ trigger, variables: changed, reason: (err as Error).name }, 'configuration reload could not be applied')
      return 'rejected'
    }
    this.#inEffect = applied(this.#inEffect, next, changed)
    if (changed.includes('ADMIN_API_KEY') && next.adminKey === undefined) {
      this.#log.warn({ trigger }, 'ADMIN_API_KEY was removed: the admin API is closed, every /admin request gets 401 until a key is configured again')
    }
    this.#log.info({ trigger, changed, apiKeys: next.apiKeys.length, stateKeys: next.stateKeys.length }, `configuration reloaded: ${changed.join(', ')}`)
    return 'ok'
  }

  #rejected (trigger: string, problems: readonly ConfigProblem[]): ReloadResult {
    this.#log.error({ trigger, variables: [...new Set(problems.map((p) => p.variable))] }, `configuration reload rejected, the values in use stay: ${problems.map(({ variable, problem }) => `${variable} ${problem}`).join('; ')}`)
    return 'rejected'
  }
}

export interface Reloading {
  /** Reload now (SIGHUP). */
  reload: (trigger: string) => ReloadResult
  close: () => void
}

/** A reloader, and (unless `watch` is false: SIGHUP only) a watch on its secret files that reloads, debounced, when one changes. */
export function startReloading (options: ReloaderOptions & { debounceMs?: number, watch?: boolean }): Reloading {
  const reloader = new SettingsReloader(options)
  if (options.watch === false) return { reload: (trigger) => reloader.reload(trigger), close: () => {} }
  const watch = new SecretFileWatch({
    onChange: (file) => {
      reloader.reload(`file changed: ${file}`)
      watch.watch(reloader.files)
    },
    logger: options.logger,
    ...(options.debounceMs === undefined ? {} : { debounceMs: options.debounceMs })
  })
  watch.watch(reloader.files)
  return {
    reload: (trigger) => {
      const result = reloader.reload(trigger)
      watch.watch(reloader.files)
      return result
    },
    close: () => { watch.close() }
  }
}

function secretsOf (settings: Settings, started: Settings): Secrets {
  return {
    apiKeys: settings.inbound.apiKeys,
    adminKey: settings.inbound.adminKey,
    overrides: started.rateLimit === undefined ? undefined : settings.rateLimit?.overrides ?? new Map(),
    statement: settings.adobe.softwareStatement,
    stateKeys: settings.fleet?.stateKeys ?? []
  }
}

/**
 * What is on now and would be off, or the reverse: not applied (registration and fleet mode are decided at start).
 * The admin routes exist only if the proxy started with a key: one that comes later waits for a restart; a key
 * removed is applied (revoked: the routes stay and refuse everyone), and one put back is applied too.
 */
function isToggled (name: ReloadableSecret, now: Secrets, next: Secrets, started: Secrets): boolean {
  switch (name) {
    case 'ADMIN_API_KEY': return started.adminKey === undefined && next.adminKey !== undefined
    case 'ADOBE_SOFTWARE_STATEMENT': return (now.statement === undefined) !== (next.statement === undefined)
    case 'STATE_ENCRYPTION_KEY': return (now.stateKeys.length === 0) !== (next.stateKeys.length === 0)
    default: return false
  }
}

/** Lists a reload may not bring: none where there were keys, a state key list without the key that seals now. */
function * keyListProblems (now: Secrets, next: Secrets, config: Config): Iterable<ConfigProblem> {
  if (now.apiKeys.length > 0 && next.apiKeys.length === 0) {
    yield problemOf(variableOf('PROXY_API_KEYS', config), 'holds no key now: a reload never opens /cmu to callers without one (restart to run without keys)')
  }
  const [sealing] = now.stateKeys
  if (sealing !== undefined && next.stateKeys.length > 0 && !next.stateKeys.some((key) => key.equals(sealing))) {
    yield problemOf(variableOf('STATE_ENCRYPTION_KEY', config), 'no longer lists the key that seals now: rotate in steps (add the new key, then put it first, then drop the old one), or restart')
  }
}

/** The variable that holds a secret: its _FILE when that is where it came from. */
function variableOf (name: ReloadableSecret, config: Config): string {
  const file = SECRETS.find((secret) => secret.name === name)?.file
  return file === undefined || config[file] === undefined ? name : file
}

function applied (now: Secrets, next: Secrets, changed: readonly ReloadableSecret[]): Secrets {
  const has = (name: ReloadableSecret): boolean => changed.includes(name)
  return {
    apiKeys: has('PROXY_API_KEYS') ? next.apiKeys : now.apiKeys,
    adminKey: has('ADMIN_API_KEY') ? next.adminKey : now.adminKey,
    overrides: has('RATE_LIMIT_KEYS') ? next.overrides : now.overrides,
    statement: has('ADOBE_SOFTWARE_STATEMENT') ? next.statement : now.statement,
    stateKeys: has('STATE_ENCRYPTION_KEY') ? next.stateKeys : now.stateKeys
  }
}

/** The *_FILE paths of the reloadable secrets, as load.ts read them (relative to the process's directory). */
function secretFiles (config: Config): string[] {
  return SECRETS.flatMap(({ file }) => {
    const path = config[file]
    return typeof path === 'string' ? [resolve(path)] : []
  })
}

function sameList<T> (a: readonly T[], b: readonly T[], same: (x: T, y: T) => boolean): boolean {
  return a.length === b.length && a.every((x, i) => same(x, b[i] as T))
}

function sameRules (a: ReadonlyMap<string, RateLimitRule> | undefined, b: ReadonlyMap<string, RateLimitRule> | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return a.size === b.size && [...a].every(([key, rule]) => {
    const other = b.get(key)
    return other !== undefined && other.max === rule.max && other.windowMs === rule.windowMs
  })
}
