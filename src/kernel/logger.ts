// JSON logs with pino. Redaction is the last line of defence: the code never
// logs a token, client secret or statement on purpose, and these paths catch
// the places where one could slip in (headers, OAuth wire fields).
import { pino, type DestinationStream, type Logger } from 'pino'
import { isCredential, mayHoldCredential } from './query-parameters.js'

// Explicit paths only: wildcard paths make pino walk every object of every
// line, which cost a quarter of the proxy's throughput in the benchmark.
export const REDACTED_PATHS = [
  'req.headers.authorization', 'req.headers.cookie', 'req.headers["x-api-key"]',
  'headers.authorization', 'headers.cookie', 'headers["x-api-key"]',
  'access_token', 'client_secret', 'software_statement',
  'credentials.client_secret', 'token.access_token'
]

/** stdout, written in batches: one write() per log line would cost as much as the request itself. */
export const STDOUT_BATCH = { dest: 1, sync: false, minLength: 4096, periodicFlush: 1000 } as const

export function createLogger (level: string, destination: DestinationStream = pino.destination(STDOUT_BATCH)): Logger {
  return pino({
    level,
    base: { service: 'cmu-proxy' },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    // A request that reaches a log line whole (an error Fastify logs itself): method and masked URL only.
    serializers: { req: (req: { method?: string, url?: string }) => ({ method: req.method, url: loggableUrl(req.url ?? '') }) }
  }, destination)
}

/** A credential in the query (`access_token`, `api_key`, `token`…: query-parameters.ts): its value masked in logged and traced URLs, however its name is encoded. */
export function loggableUrl (url: string): string {
  const queryStart = url.indexOf('?')
  if (queryStart === -1 || !mayHoldCredential(url.slice(queryStart + 1))) return url
  const pairs = url.slice(queryStart + 1).split('&').map((pair) => isCredential(pair) ? `${pair.split('=', 1)[0] ?? ''}=[redacted]` : pair)
  return `${url.slice(0, queryStart + 1)}${pairs.join('&')}`
}

/** What a log line says about an error: its code (ECONNRESET, UND_ERR_BODY_TIMEOUT, CMU_PROXY_*) or its name; never its message. */
export function errorLabel (error: Error): string {
  return (error as { code?: string }).code ?? error.name
}
