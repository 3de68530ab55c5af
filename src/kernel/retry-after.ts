// How long an answer asks us to wait before asking again: Retry-After
// (seconds or an HTTP date) or, as Adobe's CM endpoints send, Expires. Used
// for the token endpoint's 429s and for CMU answers that fail while a stale
// copy is served. Clamped: an absurd value must neither overflow a timer nor
// silence Adobe for weeks.
import { clampDelay } from './clock.js'

/** The longest wait an answer may ask for: beyond it we ask again (an hour is far past any real throttle). */
export const MAX_RETRY_AFTER_MS = 3_600_000

/** Milliseconds to wait, at most an hour; undefined when the answer says nothing usable. `now` is wall-clock time. */
export function retryAfter (headers: Record<string, string | string[] | undefined>, now: number): number | undefined {
  const raw = first(headers['retry-after']) ?? first(headers.expires)
  if (raw === undefined) return undefined
  if (/^\d+$/.test(raw.trim())) return clampDelay(Number(raw) * 1000, 0, MAX_RETRY_AFTER_MS)
  const at = Date.parse(raw)
  return Number.isNaN(at) ? undefined : clampDelay(at - now, 0, MAX_RETRY_AFTER_MS)
}

function first (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}
