// The secrets a reload changes (config/reload.ts decides which; this applies
// them), each to the one object the modules read it through: the inbound and
// admin key lists, the per-key rate limits, the token broker (a new software
// statement) and the fleet's sealed store (a new key list). Everything is
// replaced in one synchronous step, so no request sees half of a reload
// (RATE_LIMIT_KEYS names keys of PROXY_API_KEYS).
import type { KeyObject } from 'node:crypto'
import type { ReloadableSecret, Settings } from '../config/settings.js'
import type { ApiKeys } from '../proxy/api-keys.js'
import type { RateLimitRules } from '../proxy/rate-limit.js'
import type { ProxyMetrics, ReloadResult } from './metrics.js'
import type { SwitchableBroker } from './switchable-broker.js'

export interface LiveSecretsOptions {
  apiKeys: ApiKeys
  /** Undefined without ADMIN_API_KEY at start (turning /admin on takes a restart); emptied when a reload removes the key. */
  adminKeys: ApiKeys | undefined
  /** Undefined without RATE_LIMIT. */
  rateLimitRules: RateLimitRules | undefined
  broker: Pick<SwitchableBroker, 'switchTo'>
  /** Fleet mode: the sealed store's keys (fleet/fleet.ts). */
  fleet: { useStateKeys: (keys: readonly KeyObject[]) => void } | undefined
  metrics: Pick<ProxyMetrics, 'countReload'>
}

export class LiveSecrets {
  readonly #options: LiveSecretsOptions

  constructor (options: LiveSecretsOptions) {
    this.#options = options
  }

  /** Applies the secrets of `next` named in `changed`; the rest of `next` is not looked at. */
  apply (next: Settings, changed: readonly ReloadableSecret[]): void {
    const { apiKeys, adminKeys, rateLimitRules, broker, fleet } = this.#options
    for (const secret of changed) {
      switch (secret) {
        case 'PROXY_API_KEYS':
          apiKeys.replace(next.inbound.apiKeys)
          break
        case 'ADMIN_API_KEY':
          // Removed: revoked, not ignored (a leaked key is taken away by removing it); /admin then refuses everyone.
          adminKeys?.replace(next.inbound.adminKey === undefined ? [] : [next.inbound.adminKey])
          break
        case 'RATE_LIMIT_KEYS':
          rateLimitRules?.replaceOverrides(next.rateLimit?.overrides ?? new Map())
          break
        case 'STATE_ENCRYPTION_KEY':
          if (next.fleet !== undefined) fleet?.useStateKeys(next.fleet.stateKeys)
          break
        case 'ADOBE_SOFTWARE_STATEMENT':
          // In the background: the statement in use serves until the new one holds a token (switchable-broker.ts).
          if (next.adobe.softwareStatement !== undefined) void broker.switchTo(next.adobe.softwareStatement)
          break
      }
    }
  }

  /** Every reload's result, for cmu_proxy_config_reloads_total. */
  counted (result: ReloadResult): void {
    this.#options.metrics.countReload(result)
  }
}
