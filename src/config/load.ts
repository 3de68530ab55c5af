// The one place that interprets the environment, which the entry points pass
// in. loadSettings() merges an optional env file, the environment (which wins)
// and mounted secret files, validates everything against one schema
// (schema.ts, with env-schema, the validator behind @fastify/env), then turns
// it into typed settings (settings.ts). Every problem is reported at once,
// one line per variable.
// Light on purpose: the entry points validate with this before they load
// Fastify, undici or OTel, so a bad configuration answers at once.
import { readFileSync, existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { parseEnv } from 'node:util'
import envSchema from 'env-schema'
import { ProblemList, echo, type ConfigProblem } from './problems.js'
import { configSchema, type Config } from './schema.js'
import { readSecretFile } from './secret-file.js'
import { settingsFrom, type Settings } from './settings.js'

// Values of these are never echoed in an error message.
// The proxy URLs and REDIS_URL may hold a password.
const SECRET_VARIABLES = new Set(['ADOBE_SOFTWARE_STATEMENT', 'ADOBE_CLIENT_SECRET', 'PROXY_API_KEYS', 'ADMIN_API_KEY', 'RATE_LIMIT_KEYS', 'HTTPS_PROXY', 'HTTP_PROXY', 'OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS', 'REDIS_URL', 'REDIS_PASSWORD', 'REDIS_TLS_KEY', 'STATE_ENCRYPTION_KEY'])
/** Read in either case, lower case first (as curl and undici do); an empty value means unset. */
const PROXY_VARIABLES = ['HTTPS_PROXY', 'HTTP_PROXY', 'NO_PROXY'] as const
type Env = Record<string, string | undefined>

export interface LoadOptions {
  /** The environment: an entry point passes process.env; tests pass their own. */
  env: Env
  /** Directory that relative default paths (config/...) are resolved from. */
  cwd?: string
}

/**
 * The settings, or a ConfigError listing every problem at once (fixing one
 * bad variable per start is slow), without echoing a secret.
 */
export function loadSettings (options: LoadOptions): Settings {
  return loadConfiguration(options).settings
}

/** The validated variables and the settings made of them; a reload (reload.ts) compares both with the ones in use. */
export interface LoadedConfiguration {
  /** Every variable of the schema, secret files read into their variables (and their _FILE set to the path read). */
  readonly config: Config
  readonly settings: Settings
}

/** As loadSettings, with the variables too. */
export function loadConfiguration ({ env, cwd = process.cwd() }: LoadOptions): LoadedConfiguration {
  const problems = new ProblemList()
  const merged: Env = { ...readEnvFile(env, cwd, problems), ...definedOnly(env) }
  for (const name of PROXY_VARIABLES) {
    const value = [merged[name.toLowerCase()], merged[name]].find((v) => v !== undefined && v !== '')
    if (value === undefined) delete merged[name]
    else merged[name] = value
  }
  readSecretVariable(merged, problems, 'ADOBE_SOFTWARE_STATEMENT', resolve(cwd, 'config/software-statement.jwt'))
  for (const name of ['ADOBE_CLIENT_SECRET', 'PROXY_API_KEYS', 'ADMIN_API_KEY', 'RATE_LIMIT_KEYS', 'REDIS_PASSWORD', 'REDIS_TLS_CA', 'REDIS_TLS_CERT', 'REDIS_TLS_KEY', 'STATE_ENCRYPTION_KEY']) readSecretVariable(merged, problems, name)
  refuseNonDecimalIntegers(merged, problems)

  let config: Config
  try {
    config = validate(merged)
  } catch (err) {
    for (const problem of toProblems(err, merged)) problems.refuse(problem)
    // Validate again with defaults in place of the bad values, so the rules
    // that do not involve them are still checked and reported now.
    try {
      config = validate(Object.fromEntries(Object.entries(merged).filter(([name]) => !problems.isBad(name))))
    } catch {
      throw problems.error()
    }
  }
  const settings = settingsFrom(config, cwd, problems)
  if (problems.size > 0) throw problems.error()
  return { config, settings }
}

// One copy (env-schema marks it additionalProperties: false) for every call: ajv
// caches what it compiled by schema object, so a second validation is cheap.
const SCHEMA = structuredClone(configSchema) as object

function validate (data: Env): Config {
  return envSchema({ schema: SCHEMA, data, env: false }) as unknown as Config
}

const INTEGER_VARIABLES = Object.entries(configSchema.properties).filter(([, property]) => property.type === 'integer').map(([name]) => name)

/**
 * Whole numbers in decimal digits only: ajv's coercion is Number()'s, which
 * also takes 0x10, 1e3, 10.0 or " 10 ", so a typo would pass as some other
 * value. A refused value is dropped, and its default stands in for the rules
 * still to be checked.
 */
function refuseNonDecimalIntegers (merged: Env, problems: ProblemList): void {
  for (const name of INTEGER_VARIABLES) {
    const value = merged[name]
    // Not a number at all ("eighty"): the schema's own message says so.
    if (value === undefined || /^\d+$/.test(value) || value.trim() === '' || Number.isNaN(Number(value))) continue
    problems.refuse({ variable: name, problem: `must be a whole number written in decimal digits (got ${echo(value)})` })
    delete merged[name]
  }
}

function definedOnly (env: Env): Env {
  const out: Env = {}
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v
  return out
}

function readEnvFile (env: Env, cwd: string, problems: ProblemList): Env {
  const explicit = env.CMU_PROXY_ENV_FILE
  const path = explicit !== undefined ? resolve(cwd, explicit) : resolve(cwd, 'config/cmu-proxy.env')
  if (explicit === undefined && !existsSync(path)) return {}
  try {
    return parseEnv(readFileSync(path, 'utf8'))
  } catch (err) {
    problems.refuse({ variable: 'CMU_PROXY_ENV_FILE', problem: `cannot be read (${describeFsError(err)}): ${path}` })
    return {}
  }
}

/** NAME_FILE points at a mounted secret (a regular file of at most 1 MiB: secret-file.ts); its trimmed content becomes NAME. */
function readSecretVariable (env: Env, problems: ProblemList, name: string, defaultPath?: string): void {
  const fileVar = `${name}_FILE`
  const explicit = env[fileVar]
  if (explicit !== undefined && env[name] !== undefined) {
    problems.refuse({ variable: fileVar, problem: `and ${name} are both set; set only one of them` })
    return
  }
  if (env[name] !== undefined) return
  const path = explicit ?? defaultPath
  if (path === undefined || (explicit === undefined && !existsSync(path))) return
  const read = readSecretFile(path)
  if (!read.ok) {
    problems.refuse({ variable: fileVar, problem: `${read.problem}: ${path}` })
    return
  }
  const content = read.content.trim()
  if (content === '') {
    problems.refuse({ variable: fileVar, problem: `points at an empty file: ${path}` })
    return
  }
  env[fileVar] = path
  env[name] = content
}

function describeFsError (err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'unreadable'
}

interface AjvError { instancePath: string, message?: string, params: Record<string, unknown> }

/** One problem per variable (ajv may find several in one value: the first says enough). */
function toProblems (err: unknown, merged: Env): ConfigProblem[] {
  const errors = (err as { errors?: AjvError[] }).errors ?? []
  if (errors.length === 0) return [{ variable: 'configuration', problem: String((err as Error).message) }]
  const problems = new Map<string, string>()
  for (const error of errors) {
    const variable = error.instancePath.replace(/^\//, '') || String(error.params.missingProperty ?? 'configuration')
    if (problems.has(variable)) continue
    let problem = error.message ?? 'is invalid'
    if (Array.isArray(error.params.allowedValues)) problem += `: ${error.params.allowedValues.join(', ')}`
    if (variable === 'ADOBE_SOFTWARE_STATEMENT' && error.params.pattern !== undefined) {
      problem = 'is not a JWT (three base64url parts separated by dots)'
    }
    if (variable.endsWith('_PROXY') && error.params.pattern !== undefined) problem = 'must be an http:// or https:// URL such as http://proxy.example:3128'
    const value = merged[variable]
    const shown = value === undefined || SECRET_VARIABLES.has(variable) ? '' : ` (got ${echo(value)})`
    problems.set(variable, `${problem}${shown}`)
  }
  return [...problems].map(([variable, problem]) => ({ variable, problem }))
}
