#!/usr/bin/env node
// The `cmu-proxy` command.
import { runCheck } from './check.js'
import { run } from './main.js'
import { runSandbox } from './sandbox/cli.js'

const USAGE = `usage: cmu-proxy [command]

  serve      run the proxy (the default)
  check      check config, credentials, token and one CMU call; run this first
  sandbox    run the fake Adobe alone (cmu-proxy sandbox --help)
`

const [command = 'serve', ...args] = process.argv.slice(2)

switch (command) {
  case 'serve':
    await run()
    break
  case 'check':
    process.exitCode = await runCheck()
    break
  case 'sandbox':
    await runSandbox(args)
    break
  case '--help':
  case '-h':
  case 'help':
    process.stdout.write(USAGE)
    break
  default:
    process.stderr.write(`cmu-proxy: unknown command ${JSON.stringify(command)}\n${USAGE}`)
    process.exitCode = 64
}
