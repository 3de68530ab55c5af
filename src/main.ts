// The process: load the settings, build the app, listen, shut down gracefully.
// The only module that listens or exits. The settings are validated before
// anything heavy loads: a bad configuration answers at once, not after
// Fastify, undici, OTel and prom-client have loaded (test/config/fast-errors.test.ts).
import { pathToFileURL } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { loadSettings } from './config/load.js'
import { ConfigError, EXIT_CONFIG } from './config/problems.js'
import type { Settings } from './config/settings.js'

type Env = Record<string, string | undefined>

/** Loads the settings, or prints one line per bad variable and exits 78. */
function loadSettingsOrExit (env: Env = process.env): Settings {
  try {
    return loadSettings({ env })
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
  const settings = loadSettingsOrExit(env)
  const [{ buildApp }, { createLogger }, { CredentialsNotWritable }, { default: closeWithGrace }] = await Promise.all([import('./app.js'), import('./kernel/logger.js'), import('./adobe/errors.js'), import('close-with-grace')])
  const { host, port, logLevel, shutdownGraceMs } = settings.server
  const logger = createLogger(logLevel)
  const app = await buildApp(settings, { logger })
  const { onClose } = options
  if (onClose !== undefined) app.addHook('onClose', onClose)

  closeWithGrace({ delay: shutdownGraceMs, logger }, async ({ signal, err }) => {
    if (err !== undefined) logger.error({ err }, 'shutting down after an unexpected error')
    else logger.info({ signal }, 'shutting down')
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
  return app
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await run()
}
