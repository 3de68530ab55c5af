// What the fleet's notices carry, in one place: the payload each kind of
// turn announces, and the strict parse of each (notices are sealed, but a
// malformed one must never throw or be taken for a result).
import type { FailureNotice } from '../adobe/coordination.js'
import type { UpstreamFailure } from '../cache/shared-cache.js'
import type { Notice } from './fleet-channel.js'

/** An attempt (a token call, a registration) failed on the instance that made it: why, for the instances that waited on it. */
export function attemptFailed (failure: FailureNotice): Notice {
  return { failure }
}

export function readAttemptFailure (notice: Notice): FailureNotice | undefined {
  const failure = notice.failure as Partial<FailureNotice> | null | undefined
  if (typeof failure?.code !== 'string' || typeof failure.detail !== 'string') return undefined
  return { code: failure.code as FailureNotice['code'], detail: failure.detail, minDelayMs: Math.max(0, Number(failure.minDelayMs) || 0), slow: failure.slow === true }
}

/** Only Adobe's own answers are shared as failures of a report (cache/cache-layer.ts, #failureToShare). */
const UPSTREAM_FAILURES: ReadonlySet<string> = new Set<UpstreamFailure['reason']>(['upstream_5xx', 'upstream_429'])

/** Adobe failed a report for the instance that asked: why, and how long the fleet leaves it alone. */
export function upstreamFailed (failure: UpstreamFailure): Notice {
  return { failure }
}

export function readUpstreamFailure (value: unknown): UpstreamFailure | undefined {
  const failure = value as { reason?: unknown, restMs?: unknown } | null | undefined
  if (typeof failure?.reason !== 'string' || !UPSTREAM_FAILURES.has(failure.reason) || typeof failure.restMs !== 'number' || !Number.isFinite(failure.restMs)) return undefined
  return { reason: failure.reason as UpstreamFailure['reason'], restMs: failure.restMs }
}

/**
 * A report's turn ended: stored (true), not stored (false: too large, not
 * cacheable, refused by the store), or not known (the write got no answer and
 * could not be read back), with until when the stored entry is fresh (wall clock).
 */
export function reportStored (stored: boolean | undefined, freshUntil?: number): Notice {
  return { ...(stored === undefined ? {} : { stored }), ...(freshUntil === undefined ? {} : { freshUntil }) }
}
