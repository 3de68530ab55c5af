// RATE_LIMIT: how many requests each caller may make, per inbound API key
// (or per client address when no keys are configured), with
// @fastify/rate-limit. Registered in the /cmu scope after the API-key check,
// so every /cmu request counts, cache hits included: the limit is on callers,
// and a limited request never reaches Adobe. The per-key rules (RATE_LIMIT_KEYS)
// are read per request, so a reload replaces them (ops/live-secrets.ts).
import rateLimit, { type FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { RateLimitRule } from '../config/settings.js'
import { ProxyError } from '../kernel/errors.js'
import { apiKeyId } from './api-keys.js'

export interface RateLimitOptions {
  rule: RateLimitRule
  /** Per-key rules, by API key (RATE_LIMIT_KEYS). */
  overrides: ReadonlyMap<string, RateLimitRule>
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

/** The rule of each counted caller: its key's override, else everyone's. */
export class RateLimitRules {
  readonly #rule: RateLimitRule
  #byId: ReadonlyMap<string, RateLimitRule>

  constructor (rule: RateLimitRule, overrides: ReadonlyMap<string, RateLimitRule>) {
    this.#rule = rule
    this.#byId = byCounterKey(overrides)
  }

  /** RATE_LIMIT_KEYS from now on (a reload); counts so far stay with their callers. */
  replaceOverrides (overrides: ReadonlyMap<string, RateLimitRule>): void {
    this.#byId = byCounterKey(overrides)
  }

  ruleFor (counterKey: string): RateLimitRule {
    return this.#byId.get(counterKey) ?? this.#rule
  }
}

function byCounterKey (overrides: ReadonlyMap<string, RateLimitRule>): ReadonlyMap<string, RateLimitRule> {
  return new Map([...overrides].map(([key, override]) => [`key:${apiKeyId(key)}`, override]))
}

/** Registers the limit on `scope`; the rules it returns are the ones a reload replaces. */
export async function registerRateLimit (scope: FastifyInstance, { rule, overrides, store, onLimited }: RateLimitOptions): Promise<RateLimitRules> {
  const rules = new RateLimitRules(rule, overrides)
  await scope.register(rateLimit, {
    // Counts on the route's own onRequest hooks, which run after the scope's key check: per key
    // id when API keys are configured (every caller that gets here has one), else per address.
    keyGenerator: (request: FastifyRequest) => request.apiKeyId === null ? `ip:${rateLimit.normalizeIP(request.ip)}` : `key:${request.apiKeyId}`,
    max: (_request, key) => rules.ruleFor(key).max,
    timeWindow: (_request, key) => rules.ruleFor(key).windowMs,
    enableDraftSpec: true,
    // Callers tracked at once (per key id, or per address without keys); the least recently seen go first.
    cache: 20_000,
    ...(store === undefined ? {} : { store }),
    onExceeded: onLimited,
    // Retry-After and the RateLimit-* headers are already on the reply; the error handler adds the problem body.
    errorResponseBuilder: (_request, context) => new ProxyError('CMU_PROXY_RATE_LIMITED', 429,
      `This caller went over its limit of ${context.max} requests; try again in ${context.after}.`)
  })
  return rules
}
