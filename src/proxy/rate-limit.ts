// RATE_LIMIT: how many requests each caller may make, per inbound API key
// (or per client address when no keys are configured), with
// @fastify/rate-limit. Registered in the /cmu scope after the API-key check,
// so every /cmu request counts, cache hits included: the limit is on callers,
// and a limited request never reaches Adobe.
import rateLimit, { type FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { RateLimitRule } from '../config/settings.js'
import { ProxyError } from '../kernel/errors.js'
import { apiKeyId } from './api-keys.js'

export interface RateLimitOptions {
  rule: RateLimitRule
  /** Per-key rules, by API key (RATE_LIMIT_KEYS). */
  overrides: ReadonlyMap<string, RateLimitRule>
  /** Counts per key id when API keys are configured, else per client address. */
  byApiKey: boolean
  /** Fleet mode: counters shared through the state store (fleet/rate-limit-store.ts); default: in memory. */
  store?: FastifyRateLimitStoreCtor | undefined
  onLimited: () => void
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The id of the API key the caller presented (api-keys.ts), set by the key check. */
    apiKeyId: string | null
  }
}

export async function registerRateLimit (scope: FastifyInstance, { rule, overrides, byApiKey, store, onLimited }: RateLimitOptions): Promise<void> {
  const byId = new Map([...overrides].map(([key, override]) => [`key:${apiKeyId(key)}`, override]))
  const ruleFor = (key: string): RateLimitRule => byId.get(key) ?? rule
  await scope.register(rateLimit, {
    // Counts on the route's own onRequest hooks, which run after the scope's key check.
    keyGenerator: byApiKey ? (request: FastifyRequest) => `key:${request.apiKeyId ?? ''}` : (request: FastifyRequest) => `ip:${rateLimit.normalizeIP(request.ip)}`,
    max: byId.size === 0 ? rule.max : (_request, key) => ruleFor(key).max,
    timeWindow: byId.size === 0 ? rule.windowMs : (_request, key) => ruleFor(key).windowMs,
    enableDraftSpec: true,
    // Callers tracked at once (per key id, or per address without keys); the least recently seen go first.
    cache: 20_000,
    ...(store === undefined ? {} : { store }),
    onExceeded: onLimited,
    // Retry-After and the RateLimit-* headers are already on the reply; the error handler adds the problem body.
    errorResponseBuilder: (_request, context) => new ProxyError('CMU_PROXY_RATE_LIMITED', 429,
      `This caller went over its limit of ${context.max} requests; try again in ${context.after}.`)
  })
}
