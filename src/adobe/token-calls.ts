// Every token call to Adobe goes through here, whatever asks for it: paced
// (token-policy.ts: a burst, then one a second), traced and counted.
import { setTimeout as sleep } from 'node:timers/promises'
import type { Tracer } from '@opentelemetry/api'
import type { Logger } from 'pino'
import { inSpan } from '../telemetry/tracing.js'
import type { AccessToken, ClientCredentials, DcrClient } from './dcr-client.js'
import { TokenStepFailed } from './errors.js'
import { FULL_BUCKET, takeTokenCall } from './token-policy.js'

export interface TokenCallCounts {
  tokenRequests: number
  tokenFailures: number
}

export class TokenCalls {
  readonly #dcr: DcrClient
  readonly #now: () => number
  readonly #log: Logger
  readonly #tracer: Tracer | undefined
  readonly #counts: TokenCallCounts = { tokenRequests: 0, tokenFailures: 0 }
  #bucket = FULL_BUCKET

  constructor (dcr: DcrClient, now: () => number, log: Logger, tracer: Tracer | undefined) {
    this.#dcr = dcr
    this.#now = now
    this.#log = log
    this.#tracer = tracer
  }

  counts (): TokenCallCounts {
    return { ...this.#counts }
  }

  /** A token for `credentials`; a failure rejects as TokenStepFailed('token'). */
  async request (credentials: ClientCredentials): Promise<AccessToken> {
    const { waitMs, bucket } = takeTokenCall(this.#bucket, this.#now())
    this.#bucket = bucket
    if (waitMs > 0) {
      this.#log.warn({ waitMs: Math.round(waitMs) }, 'token calls are coming fast; pacing them to one per second')
      await sleep(waitMs)
    }
    this.#counts.tokenRequests++
    try {
      return await inSpan(this.#tracer, 'cmu_proxy.token.request', {}, async () => await this.#dcr.requestToken(credentials))
    } catch (err) {
      this.#counts.tokenFailures++
      throw new TokenStepFailed('token', err)
    }
  }
}
