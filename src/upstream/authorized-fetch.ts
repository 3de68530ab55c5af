// The token policy around one upstream exchange: attach the current token;
// on a 401 (our token went bad) invalidate it, get a fresh one (single-flight
// in the broker) and try exactly once more; a second 401 is Adobe refusing a
// fresh token (502).
import type { Tracer } from '@opentelemetry/api'
import type { Logger } from 'pino'
import { upstreamRejectedToken } from '../kernel/errors.js'
import { inSpan } from '../telemetry/tracing.js'
import { UNAUTHORIZED } from './stream-handler.js'

/** What an upstream exchange needs of the token broker (adobe/token-broker.ts implements it). */
export interface TokenSource {
  /** The token held now, without a promise, when there is a valid one. */
  currentToken: () => string | undefined
  /** A valid token, waiting for one when none is held. */
  getToken: () => Promise<string>
  /** Adobe refused this token: drop it if it is still the one held (and say so on `log`, the request's, when given). */
  invalidate: (token: string, log?: RequestWarnings) => void
}

/** The request's logger (its lines carry reqId, and trace_id when traced): where a warning about it goes. */
export type RequestWarnings = Pick<Logger, 'warn'>

export async function withTokenRetry<T> (broker: TokenSource, attempt: (authorization: string) => Promise<T | typeof UNAUTHORIZED>, tracer?: Tracer, log?: RequestWarnings): Promise<T> {
  const token = broker.currentToken() ?? await tokenFor(broker, tracer)
  const first = await attempt(`Bearer ${token}`)
  if (first !== UNAUTHORIZED) return first
  broker.invalidate(token, log)
  const second = await attempt(`Bearer ${await tokenFor(broker, tracer)}`)
  if (second !== UNAUTHORIZED) return second
  throw upstreamRejectedToken()
}

/** The token to send: the one held, without a promise; when the caller has to wait for one, that wait is a span of its own. */
async function tokenFor (broker: TokenSource, tracer: Tracer | undefined): Promise<string> {
  return broker.currentToken() ?? await inSpan(tracer, 'cmu_proxy.token.wait', {}, async () => await broker.getToken())
}
