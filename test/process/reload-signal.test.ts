// SIGHUP on the real process (node dist/main.js): the secrets are read again
// and the process keeps running (close-with-grace would otherwise take SIGHUP
// for a shutdown); SIGTERM still ends it.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { call, startSandbox, temporaryDirectory } from '../helpers/app.js'
import { startNode } from '../helpers/processes.js'

const OLD_KEY = 'old-signal-key-0123456789'
const NEW_KEY = 'new-signal-key-0123456789'

t.test('SIGHUP reloads the keys of the env file; a broken value is refused with one line; SIGTERM still stops', async (t) => {
  const sandbox = await startSandbox(t)
  const dir = temporaryDirectory(t)
  // The env file is read again on SIGHUP only (never watched): the signal is what reloads here.
  const envFile = join(dir, 'cmu-proxy.env')
  writeFileSync(envFile, `PROXY_API_KEYS=${OLD_KEY}\n`)
  const child = startNode(t, 'main', [], {
    env: {
      PATH: process.env.PATH,
      CMU_PROXY_ENV_FILE: envFile,
      PORT: '0',
      ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement(),
      ...sandbox.adobeUrls,
      CREDENTIALS_FILE: join(dir, 'credentials.json')
    }
  })
  const [, url = ''] = await child.waitForOutput(/Server listening at (http:\/\/127\.0\.0\.1:\d+)/)
  await child.waitForHttp(`${url}/readyz`)
  const withKey = async (key: string): Promise<number> => (await call(url, '/cmu/v2', { headers: { 'x-api-key': key } })).status
  t.equal(await withKey(OLD_KEY), 200)

  writeFileSync(envFile, `PROXY_API_KEYS=${NEW_KEY}\n`)
  child.signal('SIGHUP')
  await child.waitForOutput(/"trigger":"SIGHUP".*configuration reloaded: PROXY_API_KEYS/)
  t.equal(await withKey(NEW_KEY), 200, 'the new key is accepted')
  t.equal(await withKey(OLD_KEY), 401, 'the old key is refused')
  t.ok(child.running(), 'SIGHUP did not end the process')

  writeFileSync(envFile, 'PROXY_API_KEYS=too-short\n')
  child.signal('SIGHUP')
  await child.waitForOutput(/configuration reload rejected/)
  t.equal(await withKey(NEW_KEY), 200, 'the key in use stays')
  t.notMatch(child.output(), new RegExp(`${OLD_KEY}|${NEW_KEY}|too-short`), 'no key in the output')
  t.match(await call(url, '/metrics'), { text: /^cmu_proxy_config_reloads_total\{result="rejected"\} [1-9]/m })

  t.same(await child.stop('SIGTERM'), { code: 0, signal: null }, 'SIGTERM still shuts down cleanly')
})
