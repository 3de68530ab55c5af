// `cmu-proxy check`: what ops run first. Walks the same steps the proxy takes
// (config, credentials, token, one CMU call, one ESM call) and prints one line per step
// with PASS/FAIL and the reason; exits non-zero on the first failure (78, as
// serve does, when the configuration is bad: one line per bad variable).
// The configuration is checked before the other steps (check-steps.ts) and
// what they use (undici, the Redis client) load, so a bad one answers at once.
import { loadSettings } from '../config/load.js'
import { ConfigError, EXIT_CONFIG } from '../config/problems.js'
import type { Settings } from '../config/settings.js'
import type { Step } from './check-steps.js'

type Env = Record<string, string | undefined>
type Print = (line: string) => void

export async function runCheck (env: Env, print: Print = (line) => { process.stdout.write(`${line}\n`) }): Promise<number> {
  const step: Step = (ok, name, detail) => { print(`${ok === 'warn' ? 'WARN' : ok ? 'PASS' : 'FAIL'}  ${name.padEnd(12)} ${detail}`) }
  let settings: Settings
  try {
    settings = loadSettings({ env })
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    for (const line of err.lines) step(false, 'config', line)
    return EXIT_CONFIG
  }
  step(true, 'config', `auth ${settings.adobe.authUrl}, reports ${settings.adobe.cmuUrl} and ${settings.adobe.esmUrl}`)
  const { checkSteps } = await import('./check-steps.js')
  return await checkSteps(settings, step, print)
}
