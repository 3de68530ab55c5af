// The route table: Adobe's report APIs behind the one registration and token.
// Every rule (path checks, header policy, cache, coalescing, stale answers,
// retries, keys, limits, the fleet) is the same for each; what differs is on
// its line here.
import type { InboundSettings } from '../config/settings.js'
import { esmForbidden, type ProxyError } from '../kernel/errors.js'
import type { ReportApiName } from '../upstream/target.js'

export interface ReportApi {
  readonly name: ReportApiName
  /** The local prefix: GET <prefix>/<rest> goes to the API's base URL + /<rest>. */
  readonly prefix: string
  /** Adobe may write HAL links relative to the API's base (`/v3/...`): put the prefix in front (hal-links.ts). */
  readonly relativeLinks: boolean
  /** What Adobe's 403 means here, as the caller's problem; undefined: Adobe's answer passes as it is. */
  readonly forbidden: (() => ProxyError) | undefined
}

/**
 * CMU: links are `/cmu/v2/...`, the proxy's own layout, so answers stream
 * through untouched. ESM: its documentation shows `/v3/...` links, and a 403
 * there usually means the deployment has no ESM access, which the caller is
 * told in so many words.
 */
export function reportApis (inbound: Pick<InboundSettings, 'pathPrefix' | 'esmPathPrefix'>): readonly ReportApi[] {
  return [
    { name: 'cmu', prefix: inbound.pathPrefix, relativeLinks: false, forbidden: undefined },
    { name: 'esm', prefix: inbound.esmPathPrefix, relativeLinks: true, forbidden: esmForbidden }
  ]
}
