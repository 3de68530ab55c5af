#!/usr/bin/env node
// The `cmu-proxy` command: `cmu-proxy` (or `cmu-proxy serve`) runs the proxy.
import { run } from './main.js'

const [command = 'serve'] = process.argv.slice(2)
const USAGE = 'usage: cmu-proxy [serve]\n'

switch (command) {
  case 'serve':
    await run()
    break
  case '--help':
  case '-h':
    process.stdout.write(USAGE)
    break
  default:
    process.stderr.write(`cmu-proxy: unknown command ${JSON.stringify(command)}\n${USAGE}`)
    process.exitCode = 64
}
