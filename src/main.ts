// The process: load config, build the app, listen, shut down gracefully.
// The only module that listens or exits.
import { pathToFileURL } from 'node:url'
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import { CredentialsNotWritable } from './adobe/errors.js'
import { buildApp } from './app.js'
import { ConfigError, EXIT_CONFIG, loadConfig, type Config } from './config/load.js'
import { createLogger } from './kernel/logger.js'

type Env = Record<string, string | undefined>

/** Loads the configuration, or prints one line per bad variable and exits 78. */
function loadConfigOrExit (env: Env = process.env): Config {
  try {
    return loadConfig({ env })
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
  const config = loadConfigOrExit(env)
  const logger = createLogger(config.LOG_LEVEL)
  const app = await buildApp(config, { logger })
  const { onClose } = options
  if (onClose !== undefined) app.addHook('onClose', onClose)

  closeWithGrace({ delay: config.SHUTDOWN_GRACE_SECONDS * 1000, logger }, async ({ signal, err }) => {
    if (err !== undefined) logger.error({ err }, 'shutting down after an unexpected error')
    else logger.info({ signal }, 'shutting down')
    await app.close()
  })

  try {
    await app.listen({ host: config.HOST, port: config.PORT })
  } catch (err) {
    // The start hook refused before any call to Adobe: one line, as for a bad variable.
    if (err instanceof CredentialsNotWritable) {
      process.stderr.write(`cmu-proxy: configuration error: ${err.message}\n`)
      process.exit(EXIT_CONFIG)
    }
    const code = (err as NodeJS.ErrnoException).code
    process.stderr.write(`cmu-proxy: cannot listen on ${config.HOST}:${config.PORT} (${code ?? 'error'}); check HOST and PORT\n`)
    process.exit(EXIT_CONFIG)
  }
  return app
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await run()
}
