#!/usr/bin/env -S node --max-semi-space-size=4
// The `cmu-proxy` command. Usage errors exit 64 (EX_USAGE from sysexits.h).
// Commands are imported when run: --help and --version answer at once instead
// of loading Fastify, undici and prom-client first (a second or more).
import { parseArgs } from 'node:util'
import { VERSION } from './kernel/version.js'

const EXIT_USAGE = 64

// What a new user needs first: where the settings come from.
const CONFIGURATION = `Configuration comes from the environment and from the env file
config/cmu-proxy.env (relative to the working directory; name another one with
CMU_PROXY_ENV_FILE); real environment variables win. Every variable, with its
default and a comment: config/cmu-proxy.example.env (copy it to start).
`

const USAGE = `usage: cmu-proxy [command] [--help]

  serve      run the proxy (the default)
  check      check config, credentials, token and one CMU call; run this first
  sandbox    run the fake Adobe alone (cmu-proxy sandbox --help)
  version    print the version (also --version, -v)

${CONFIGURATION}`

const COMMAND_USAGE = {
  serve: `usage: cmu-proxy serve [--help]

Runs the proxy until SIGTERM or SIGINT. Exits 78 on a configuration error,
with one line per bad variable.

${CONFIGURATION}`,
  check: `usage: cmu-proxy check [--help]

Walks the steps the proxy takes (configuration, credentials, one token, one
GET /cmu/v2 at Adobe) and prints PASS or FAIL with the reason for each. Exits
0 when all pass, 78 on a configuration error, 1 on any other failure.

${CONFIGURATION}`
} as const

function usageError (problem: string, usage: string): void {
  process.stderr.write(`cmu-proxy: ${problem}\n${usage}`)
  process.exitCode = EXIT_USAGE
}

/** serve and check take no options but --help; anything else must not start them. */
function wantsHelp (command: keyof typeof COMMAND_USAGE, args: string[]): boolean | undefined {
  try {
    return parseArgs({ args, options: { help: { type: 'boolean', short: 'h' } }, strict: true }).values.help === true
  } catch (err) {
    usageError(`${command}: ${(err as Error).message}`, COMMAND_USAGE[command])
    return undefined
  }
}

const [command = 'serve', ...args] = process.argv.slice(2)

switch (command) {
  case 'serve':
  case 'check': {
    const help = wantsHelp(command, args)
    if (help === true) process.stdout.write(COMMAND_USAGE[command])
    else if (help === false && command === 'serve') await (await import('./main.js')).run()
    else if (help === false) process.exitCode = await (await import('./ops/check.js')).runCheck(process.env)
    break
  }
  case 'sandbox':
    await (await import('./sandbox/cli.js')).runSandbox(args)
    break
  case '--version':
  case '-v':
  case 'version':
    process.stdout.write(`${VERSION}\n`)
    break
  case '--help':
  case '-h':
  case 'help':
    process.stdout.write(USAGE)
    break
  default:
    usageError(`unknown command ${JSON.stringify(command)}`, USAGE)
}
