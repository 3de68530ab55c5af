// `cmu-proxy sandbox`: the fake Adobe alone, for other teams' integration tests.
import { parseArgs } from 'node:util'
import { Sandbox } from './server.js'

const USAGE = `usage: cmu-proxy sandbox [--port N] [--host ADDR] [--seed N] [--token-lifetime SECONDS] [--throttle]

Serves Adobe Pass DCR (/o/client/register, /o/client/token), the CMU API
(/cmu/v2/...) and the ESM API (/esm/v3/...) on loopback. Point your code (or
cmu-proxy) at it with
  ADOBE_AUTH_URL=http://HOST:PORT  ADOBE_CMU_URL=http://HOST:PORT/cmu  ADOBE_ESM_URL=http://HOST:PORT/esm
Faults are scripted over HTTP under /_sandbox/ (see docs/development.md, "The sandbox").
`

export async function runSandbox (args: string[]): Promise<Sandbox | undefined> {
  let values
  try {
    values = parseArgs({
      args,
      options: {
        port: { type: 'string', default: '8081' },
        host: { type: 'string', default: '127.0.0.1' },
        seed: { type: 'string', default: '1' },
        'token-lifetime': { type: 'string', default: '21600' },
        throttle: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false }
      }
    }).values
  } catch (err) {
    process.stderr.write(`cmu-proxy sandbox: ${(err as Error).message}\n${USAGE}`)
    process.exitCode = 64
    return undefined
  }
  if (values.help) {
    process.stdout.write(USAGE)
    return undefined
  }
  const numbers = { port: Number(values.port), seed: Number(values.seed), 'token-lifetime': Number(values['token-lifetime']) }
  for (const [name, value] of Object.entries(numbers)) {
    if (!Number.isInteger(value) || value < (name === 'port' ? 0 : 1)) {
      process.stderr.write(`cmu-proxy sandbox: --${name} must be a whole number\n`)
      process.exitCode = 64
      return undefined
    }
  }
  const sandbox = new Sandbox({ seed: numbers.seed, tokenLifetimeSeconds: numbers['token-lifetime'], throttle: values.throttle })
  const url = await sandbox.listen(numbers.port, values.host)
  process.stdout.write(`cmu-proxy sandbox listening on ${url}\n  ADOBE_AUTH_URL=${sandbox.authUrl}\n  ADOBE_CMU_URL=${sandbox.cmuUrl}\n  ADOBE_ESM_URL=${sandbox.esmUrl}\n`)
  const stop = (): void => { void sandbox.close() }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  return sandbox
}
