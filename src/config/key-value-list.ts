// The OTel list format of OTEL_EXPORTER_OTLP_HEADERS and
// OTEL_RESOURCE_ATTRIBUTES: comma-separated key=value pairs, values
// percent-encoded. Parsed once at start (settings.ts), so a malformed value is
// a configuration error rather than a crash when tracing starts.

/** The pairs, or undefined when a value is not valid percent-encoding. */
export function parseKeyValueList (text: string | undefined): Record<string, string> | undefined {
  const pairs: Record<string, string> = {}
  for (const pair of (text ?? '').split(',')) {
    const equals = pair.indexOf('=')
    if (equals <= 0) continue
    try {
      pairs[pair.slice(0, equals).trim()] = decodeURIComponent(pair.slice(equals + 1).trim())
    } catch {
      return undefined
    }
  }
  return pairs
}
