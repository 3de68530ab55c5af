// The process: load the settings, build the app, listen, reload the secrets on
// SIGHUP (config/reload.ts), shut down gracefully. The only module that
// listens, handles signals or exits. The settings are validated before
// anything heavy loads: a bad configuration answers at once, not after
// Fastify, undici, OTel and prom-client have loaded (test/config/fast-errors.test.ts).
import { pathToFileURL } from 'node:url'
import type { FastifyInstance } from 'fastify'
import type { Reloading } from './config/reload.js'
import { loadConfiguration, type LoadedConfiguration } from './config/load.js'
import { ConfigError, EXIT_CONFIG } from './config/problems.js'

type Env = Record<string, string | undefined>

/** Loads the settings, or prints one line per bad variable and exits 78. */
function loadSettingsOrExit (env: Env = process.env): LoadedConfiguration {
  try {
    return loadConfiguration({ env })
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    process.stderr.write(err.lines.map((line) => `cmu-proxy: configuration error: ${line}\n`).join(''))
    process.exit(EXIT_CONFIG)
  }
}

export interface RunOptions {
  /** Also closed on shutdown (the demo's sandbox). */
  onClose?: () => Promise<void>
}

export async function run (env: Env = process.env, options: RunOptions = {}): Promise<FastifyInstance> {
  const started = loadSettingsOrExit(env)
  const { settings } = started
  // SIGHUP reloads the secrets (and would end the process if nobody listened): one that comes before
  // the app can reload is remembered, and reloads once it can.
  let reloading: Reloading | undefined
  let hangupWhileStarting = false
  process.on('SIGHUP', () => {
    if (reloading === undefined) hangupWhileStarting = true
    else reloading.reload('SIGHUP')
  })
  const [{ buildApp }, { createLogger }, { CredentialsNotWritable }, { default: closeWithGrace }, { startReloading }] = await Promise.all([import('./app.js'), import('./kernel/logger.js'), import('./adobe/errors.js'), import('close-with-grace'), import('./config/reload.js')])
  const { host, port, logLevel, shutdownGraceMs } = settings.server
  const logger = createLogger(logLevel)
  const app = await buildApp(settings, { logger })
  const { onClose } = options
  if (onClose !== undefined) app.addHook('onClose', onClose)

  // Every signal close-with-grace knows ends the process, but SIGHUP: that one reloads.
  closeWithGrace({ delay: shutdownGraceMs, logger, skip: ['SIGHUP'] }, async ({ signal, err }) => {
    if (err !== undefined) logger.error({ err }, 'shutting down after an unexpected error')
    else logger.info({ signal }, 'shutting down')
    // No reload into a closing app: a SIGHUP from here on is only remembered.
    const stopping = reloading
    reloading = undefined
    stopping?.close()
    await app.close()
  })

  try {
    await app.listen({ host, port })
  } catch (err) {
    // The start hook refused before any call to Adobe: one line, as for a bad variable.
    if (err instanceof CredentialsNotWritable) {
      process.stderr.write(`cmu-proxy: configuration error: ${err.message}\n`)
      process.exit(EXIT_CONFIG)
    }
    const code = (err as NodeJS.ErrnoException).code
    process.stderr.write(`cmu-proxy: cannot listen on ${host}:${port} (${code ?? 'error'}); check HOST and PORT\n`)
    process.exit(EXIT_CONFIG)
  }
  reloading = startReloading({ load: { env }, started, target: app.liveSecrets, logger })
  if (hangupWhileStarting) reloading.reload('SIGHUP')
  return app
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await run()
}
