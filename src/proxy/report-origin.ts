// What the route table (report-apis.ts) asks of an API's answers, applied
// once, between Adobe and everything that reads an answer (the cache, the
// coalesced callers, a caller served without the cache): Adobe's 403 told as
// what it means, and HAL links put under the local prefix (hal-links.ts).
// So a cached entry holds the rewritten body, rewritten once.
//
// Rewriting needs the whole body in memory: only a 200 in HAL JSON or XML,
// without Cache-Control: no-transform (RFC 9111 §5.2.2.6), whose body fits
// CACHE_MAX_ENTRY_BYTES and an eighth of CACHE_MAX_INFLIGHT_BYTES (decoded too),
// is rewritten; a larger one passes as Adobe sent it (the cache does not keep
// it either, unless gzip made it small enough or the budget is under eight
// entries). A gzip body is decoded, rewritten and encoded again, which keeps
// Adobe's 20-30x compression on the wire, where asking Adobe for identity
// would give it up for every ESM report, CSV included. The bytes held while
// rewriting (the body as Adobe sent it, and while it is rewritten its decoded
// and rewritten copies) count against their own CACHE_MAX_INFLIGHT_BYTES: past
// it the request is shed (503 CMU_PROXY_OVERLOADED) rather than answered with
// links that do not work, or held without bound.
import { constants } from 'node:buffer'
import { Readable } from 'node:stream'
import { ByteBudget, readBounded, rejoined } from '../cache/buffered-fetch.js'
import { overloaded } from '../kernel/errors.js'
import type { Validators } from '../upstream/header-policy.js'
import type { Origin, OriginRequest, OriginResponse } from '../upstream/origin.js'
import type { ReportApiName } from '../upstream/target.js'
import { halKind, type HalKind } from './hal-links.js'
import type { ReportApi } from './report-apis.js'
import { MAX_WORKING_COPIES, rewritten } from './rewritten-body.js'

export interface ReportOriginOptions {
  /** Adobe with our token (upstream/origin.ts: AuthorizedOrigin). */
  origin: Origin
  apis: readonly ReportApi[]
  /** CACHE_MAX_ENTRY_BYTES: the largest body (raw and decoded) rewritten (an eighth of CACHE_MAX_INFLIGHT_BYTES when smaller). */
  maxBodyBytes: number
  /** CACHE_MAX_INFLIGHT_BYTES: what all bodies being rewritten may hold together. */
  maxInflightBytes: number
  /** The budget itself, for a test that reads what is charged; by default one of maxInflightBytes. */
  budget?: ByteBudget | undefined
}

const { MAX_STRING_LENGTH } = constants

export class ReportOrigin implements Origin {
  readonly #origin: Origin
  readonly #apis: ReadonlyMap<ReportApiName, ReportApi>
  readonly #maxBodyBytes: number
  readonly #budget: ByteBudget

  constructor (options: ReportOriginOptions) {
    this.#origin = options.origin
    this.#apis = new Map(options.apis.map((api) => [api.name, api]))
    // A body whose rewrite the budget could never hold is too large to rewrite,
    // never a reason to shed: the body, up to five copies of it decoded, and
    // what the inserted prefixes add to the two rewritten ones (less than a copy each).
    // And never more than one JavaScript string can hold (the text is one).
    this.#maxBodyBytes = Math.min(options.maxBodyBytes, Math.floor(options.maxInflightBytes / (1 + MAX_WORKING_COPIES + 2)), MAX_STRING_LENGTH)
    this.#budget = options.budget ?? new ByteBudget(options.maxInflightBytes)
  }

  /** Whether this API's answers may change here: then they never stream straight from Adobe to a caller. */
  adjusts (api: ReportApiName): boolean {
    const line = this.#apis.get(api)
    return line !== undefined && (line.relativeLinks || line.forbidden !== undefined)
  }

  async fetch (request: OriginRequest, signal: AbortSignal, validators?: Validators): Promise<OriginResponse> {
    const response = await this.#origin.fetch(request, signal, validators)
    const api = this.#apis.get(request.target.api)
    if (api === undefined) return response
    if (response.status === 403 && api.forbidden !== undefined) {
      response.body.on('error', () => {}).destroy()
      throw api.forbidden()
    }
    if (!api.relativeLinks || response.status !== 200 || noTransform(response.headers['cache-control'])) return response
    const kind = halKind(response.headers['content-type'])
    return kind === undefined ? response : await this.#withLocalLinks(response, kind, api.prefix)
  }

  async #withLocalLinks (response: OriginResponse, kind: HalKind, prefix: string): Promise<OriginResponse> {
    const maxBytes = this.#maxBodyBytes
    if (Number(response.headers['content-length']) > maxBytes) return response
    const budget = this.#budget
    const { chunks, size, overflow } = await readBounded(response.body, maxBytes, budget)
    if (overflow) {
      // Past the bound: as Adobe sent it. Past the budget (other bodies hold it): shed, never a body with broken links.
      if (size + (chunks.at(-1)?.length ?? 0) > maxBytes) return { ...response, body: rejoined(chunks, response.body) }
      // undici turns a destroy before the end into an 'error' event: with nobody listening, it would end the process.
      response.body.on('error', () => {}).destroy()
      throw overloaded()
    }
    // One buffer, and the chunks let go: the raw body is held once, as charged.
    const raw = chunks.length === 1 && chunks[0] !== undefined ? chunks[0] : Buffer.concat(chunks, size)
    chunks.length = 0
    let body: Buffer
    try {
      body = await rewritten(raw, response.headers['content-encoding'], kind, prefix, maxBytes, budget)
    } catch (err) {
      budget.give(size)
      throw err
    }
    // The body handed on is charged, not the raw one: the rewritten one is larger by its prefixes.
    const held = body.length
    if (held > size && !budget.take(held - size)) {
      budget.give(size)
      throw overloaded()
    }
    if (held < size) budget.give(size - held)
    // Charged until the reader (the cache, or the caller's connection) has taken the body, or it was dropped unread.
    let charged = true
    const uncharge = (): void => {
      if (!charged) return
      charged = false
      budget.give(held)
    }
    const stream = new Readable({
      read () {
        this.push(body)
        this.push(null)
        uncharge()
      }
    })
    stream.once('close', uncharge)
    return { ...response, headers: { ...response.headers, 'content-length': String(body.length) }, body: stream }
  }
}

/** Cache-Control: no-transform (RFC 9111 §5.2.2.6): an intermediary must not change the content. */
function noTransform (cacheControl: string | string[] | undefined): boolean {
  if (cacheControl === undefined) return false
  return /(^|,)\s*no-transform\s*(,|$)/i.test(Array.isArray(cacheControl) ? cacheControl.join(',') : cacheControl)
}
