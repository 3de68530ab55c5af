// The OTel list format of OTEL_EXPORTER_OTLP_HEADERS and
// OTEL_RESOURCE_ATTRIBUTES: comma-separated key=value pairs, values
// percent-encoded. Parsed once at start (settings.ts), so a malformed value is
// a configuration error rather than a crash when tracing starts.

/**
 * The pairs, or undefined when one is not `key=value` (a header meant to
 * carry a token would otherwise be dropped in silence) or a value is not
 * valid percent-encoding. Empty entries (a trailing comma) are allowed.
 */
export function parseKeyValueList (text: string | undefined): Record<string, string> | undefined {
  const pairs: Record<string, string> = {}
  for (const pair of (text ?? '').split(',')) {
    if (pair.trim() === '') continue
    const equals = pair.indexOf('=')
    if (equals < 0 || pair.slice(0, equals).trim() === '') return undefined
    try {
      pairs[pair.slice(0, equals).trim()] = decodeURIComponent(pair.slice(equals + 1).trim())
    } catch {
      return undefined
    }
  }
  return pairs
}
