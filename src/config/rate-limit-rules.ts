// RATE_LIMIT values ("600/minute") and the per-key overrides of
// RATE_LIMIT_KEYS(_FILE): parsed once at start (settings.ts), so a bad value
// is a configuration error and the rate limiter gets numbers.

export interface RateLimitRule {
  readonly max: number
  readonly windowMs: number
}

const WINDOWS: Record<string, number> = { second: 1_000, minute: 60_000, hour: 3_600_000 }

const RULE = /^\s*([0-9]{1,9})\s*\/\s*(second|minute|hour)\s*$/
/** What is wrong with a value that is not a rule (a phrase after the variable's name). */
export const RATE_LIMIT_FORMAT = 'must be a whole number of requests (1 or more) per second, minute or hour, e.g. 600/minute'

/** "600/minute" -> { max: 600, windowMs: 60000 }; undefined when the text is not such a rule (0/minute is not: it would refuse every request). */
export function parseRateLimitRule (text: string): RateLimitRule | undefined {
  const match = RULE.exec(text)
  const max = Number(match?.[1])
  if (match === null || max < 1) return undefined
  return { max, windowMs: WINDOWS[match[2] ?? ''] ?? 0 }
}

/**
 * Lines of `<api key> <rule>` ("# comments" and blank lines ignored). Returns
 * the rules by key, or the number of the first bad line (never the line
 * itself: it holds a key).
 */
export function parseRateLimitOverrides (text: string): Map<string, RateLimitRule> | { badLine: number } {
  const overrides = new Map<string, RateLimitRule>()
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const [key = '', ...rest] = line.split(/\s+/)
    const rule = parseRateLimitRule(rest.join(' '))
    if (rule === undefined) return { badLine: index + 1 }
    overrides.set(key, rule)
  }
  return overrides
}
