// The cache lookup as a span of its own, when tracing is on: from the first
// look in memory (and, in a fleet, in Redis) to the answer.
import type { Tracer } from '@opentelemetry/api'
import type { StaleReason } from './response-cache.js'

/** The start of a traced lookup, on both clocks (see traceLookup). */
export interface LookupStart { tracer: Tracer, wall: number, monotonic: number }

/** When the lookup began; undefined (and nothing read) when tracing is off. */
export function lookupStart (tracer: Tracer | undefined): LookupStart | undefined {
  return tracer === undefined ? undefined : { tracer, wall: Date.now(), monotonic: performance.now() }
}

/**
 * The lookup as a span from `start` to now, timed as OpenTelemetry times the
 * spans it starts itself: a wall-clock start and a monotonic duration. (A
 * bare performance.now() start is converted with an offset taken at span
 * creation, which can place it up to a millisecond before its parent.)
 */
export function traceLookup (start: LookupStart | undefined, result: 'hit' | 'miss' | 'bypass' | 'stale', reason?: StaleReason): void {
  if (start === undefined) return
  start.tracer.startSpan('cmu_proxy.cache.lookup', { startTime: start.wall, attributes: { 'cmu_proxy.cache.result': result, ...(reason === undefined ? {} : { 'cmu_proxy.cache.stale_reason': reason }) } })
    .end(start.wall + performance.now() - start.monotonic)
}
