// `npm run demo`: the sandbox (a fake Adobe) on a free loopback port and the
// proxy wired to it on PORT (8080), with a software statement made up on the spot.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { run } from './main.js'
import { Sandbox } from './sandbox/server.js'
import { makeSoftwareStatement } from './sandbox/statement.js'

const sandbox = new Sandbox()
await sandbox.listen(0, '127.0.0.1')
const port = process.env.PORT ?? '8080'
const host = process.env.HOST ?? '127.0.0.1'
await run({
  ...process.env,
  HOST: host,
  PORT: port,
  ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(),
  ADOBE_SOFTWARE_STATEMENT_FILE: undefined,
  ADOBE_CLIENT_ID: undefined,
  ADOBE_CLIENT_SECRET: undefined,
  ...sandbox.adobeUrls,
  CREDENTIALS_FILE: join(mkdtempSync(join(tmpdir(), 'cmu-proxy-demo-')), 'credentials.json'),
  CMU_PROXY_ENV_FILE: process.env.CMU_PROXY_ENV_FILE ?? '/dev/null'
}, { onClose: async () => { await sandbox.close() } })

const base = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`
process.stdout.write(`
cmu-proxy demo: proxy on ${base}, fake Adobe (sandbox) on ${sandbox.authUrl}
Try:
  curl ${base}/cmu/v2/year/month.csv
  curl '${base}/cmu/v2/year/month/day?mvpd=DTV&mvpd=Cox&start=2026-11-01'
  curl ${base}/esm/v3/year.csv
  curl ${base}/readyz
Stop with Ctrl-C.

`)
