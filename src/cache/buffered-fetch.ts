// An upstream answer read into memory so it can be cached and shared with
// coalesced waiters, unless it is too large (for one entry, or for what all
// answers held in memory may hold together): then the bytes read so far and
// the rest of the stream go to exactly one caller, uncached. A body read into
// memory stays charged to that budget until the cache holds it or every
// caller it was handed to has sent it: a slow reader holds memory too.
import { Readable } from 'node:stream'
import type { OriginResponse } from '../upstream/origin.js'
import { transportError } from '../upstream/transport-errors.js'
import { isShareable } from './cache-policy.js'

/** The upstream response headers a caller may see (upstream/header-policy.ts: callerResponseHeaders). */
export type HeaderFilter = (upstream: Record<string, string | string[] | undefined>) => Record<string, string | string[]>

interface AnswerBase {
  status: number
  headers: Record<string, string | string[]>
  /** May go to other callers with the same key (coalesced waiters); see isShareable. */
  shareable: boolean
  /** The upstream call was retried after a dropped connection (for every caller's request line). */
  retried: boolean
}

export interface BufferedAnswer extends AnswerBase {
  kind: 'buffered'
  /** All upstream headers, for the storability check. */
  upstreamHeaders: Record<string, string | string[] | undefined>
  body: Buffer
  /** A caller is about to send the body: it stays charged until that caller calls release(). */
  hold: () => void
  release: () => void
  /** The cache took the body over (its own bound accounts for it). */
  uncharge: () => void
}

export interface StreamedAnswer extends AnswerBase {
  kind: 'streamed'
  /** The body, for the first caller that claims it; undefined afterwards. */
  claim: () => Readable | undefined
}

export type Answer = BufferedAnswer | StreamedAnswer

/**
 * CACHE_MAX_INFLIGHT_BYTES: the bytes that all answers read into memory and
 * not yet stored or sent may hold at once. Without it, a thousand concurrent
 * misses (or slow readers) for 4 MB reports would hold 4 GB before the cache
 * bound ever applied.
 */
export class ByteBudget {
  #free: number
  constructor (readonly limit: number) {
    this.#free = limit
  }

  get used (): number { return this.limit - this.#free }

  take (bytes: number): boolean {
    if (bytes > this.#free) return false
    this.#free -= bytes
    return true
  }

  give (bytes: number): void {
    this.#free += bytes
  }
}

export async function readAnswer (response: OriginResponse, maxBytes: number, budget: ByteBudget, callerHeaders: HeaderFilter): Promise<Answer> {
  const { status, retried } = response
  const headers = callerHeaders(response.headers)
  const shareable = isShareable(response.headers)
  // A 304 has no body, whatever length its 200 would have (RFC 9110 §8.6).
  const declared = status === 304 ? 0 : Number(response.headers['content-length'])
  if (declared > maxBytes || declared > budget.limit - budget.used) return streamed({ status, headers, shareable, retried }, [], response.body)

  const { chunks, size, overflow } = await readBounded(response.body, maxBytes, budget)
  if (overflow) return streamed({ status, headers, shareable, retried }, chunks, response.body)
  const charge = new BodyCharge(budget, size)
  return {
    kind: 'buffered',
    status,
    headers,
    shareable,
    retried,
    upstreamHeaders: response.headers,
    body: Buffer.concat(chunks, size),
    hold: () => { charge.hold() },
    release: () => { charge.release() },
    uncharge: () => { charge.free() }
  }
}

/** What readBounded read: the chunks, and their bytes (charged, unless it overflowed; then the last chunk is not counted in `size`). */
export interface BoundedRead {
  chunks: Buffer[]
  size: number
  /** The body went past `maxBytes` or the budget: reading paused there, the rest still in the stream, nothing charged. */
  overflow: boolean
}

/**
 * Reads `body` into memory, each chunk charged to `budget`, until it ends or
 * would pass `maxBytes` or the budget (then it pauses and gives back what it
 * charged; the caller passes the chunks on with the rest). Rejects with the
 * body's error as a ProxyError (transportError), everything charged given back.
 */
export async function readBounded (body: Readable, maxBytes: number, budget: ByteBudget): Promise<BoundedRead> {
  const chunks: Buffer[] = []
  let size = 0
  try {
    const overflow = await new Promise<boolean>((resolve, reject) => {
      const onData = (chunk: Buffer): void => {
        chunks.push(chunk)
        if (size + chunk.length > maxBytes || !budget.take(chunk.length)) {
          body.pause()
          body.off('data', onData).off('end', onEnd).off('error', reject)
          resolve(true)
          return
        }
        size += chunk.length
      }
      const onEnd = (): void => { resolve(false) }
      body.on('data', onData).once('end', onEnd).once('error', reject)
    })
    if (overflow) budget.give(size)
    return { chunks, size, overflow }
  } catch (err) {
    budget.give(size)
    throw transportError(err)
  }
}

/** The chunks already read, then the rest of `rest`, as one stream. */
export function rejoined (prefix: Buffer[], rest: Readable): Readable {
  if (prefix.length === 0) return rest
  // Destroyed early (the caller left), the rest is destroyed too: paused and unread, it would hold its upstream connection.
  rest.on('error', () => {})
  return Readable.from((async function * () {
    try {
      yield * prefix
      yield * rest
    } finally {
      if (!rest.readableEnded) rest.destroy()
    }
  })(), { objectMode: false })
}

/** The bytes of one buffered body, given back once nobody holds them. */
class BodyCharge {
  #holders = 0
  #freed = false

  constructor (readonly budget: ByteBudget, readonly bytes: number) {
    // Whoever takes the body holds it in the same turn (the coalesced callers
    // resume as microtasks); a body nobody took (a background refresh, callers
    // all gone, a stale copy served instead) is given back on the next turn.
    setImmediate(() => { if (this.#holders === 0) this.free() })
  }

  hold (): void {
    this.#holders++
  }

  release (): void {
    if (--this.#holders <= 0) this.free()
  }

  free (): void {
    if (this.#freed) return
    this.#freed = true
    this.budget.give(this.bytes)
  }
}

function streamed (base: AnswerBase, prefix: Buffer[], rest: Readable): StreamedAnswer {
  // Until a caller claims it, an upstream failure must not be an unhandled 'error'
  // event; the stream keeps the error and the claimant's reader sees it.
  rest.on('error', () => {})
  let claimed = false
  return {
    ...base,
    kind: 'streamed',
    claim: () => {
      if (claimed) return undefined
      claimed = true
      return rejoined(prefix, rest)
    }
  }
}
