// Adobe's ESM documentation shows HAL links relative to the API's base
// (`/v3/year/month`, where CMU writes `/cmu/v2/...`): through the proxy such
// an href would miss the /esm prefix. These rules put the local prefix in
// front of exactly that form, in HAL JSON (`"href":"/v3/..."`) and HAL XML
// (`<link href="/v3/..."/>`, `<resource href="/v3/...">`), and change nothing
// else: an href already under the prefix, an absolute URL, a path of another
// shape. The result is the prefix plus an absolute path, so it can never
// name another host. Text, not a parse and re-serialisation: every other
// byte (number spelling, whitespace, report values) stays as Adobe sent it.
// https://experienceleague.adobe.com/en/docs/pass/authentication/integration-guide-programmers/features-premium/esm/entitlement-service-monitoring-api

/** Which HAL representation a Content-Type is; undefined: not one whose links are rewritten (CSV, HTML, text). */
export type HalKind = 'json' | 'xml'

export function halKind (contentType: string | string[] | undefined): HalKind | undefined {
  const type = (Array.isArray(contentType) ? contentType[0] : contentType)?.split(';')[0]?.trim().toLowerCase()
  if (type === undefined) return undefined
  if (type === 'application/json' || type === 'application/hal+json') return 'json'
  if (type === 'application/xml' || type === 'text/xml' || type === 'application/hal+xml') return 'xml'
  return undefined
}

/**
 * An href relative to the API's base: `/v<digits>` then the end, `/`, `?`,
 * `.` or `#` (JSON may escape the slash: `\/v3`). Nothing else is touched.
 */
const RELATIVE_HREF = String.raw`(?=\\?/v\d+(?:[\\/?.#"]|$))`
/**
 * A JSON `href` member: in valid JSON an unescaped `"href"` after `{` or `,`
 * can only be a key (a quote inside a string is escaped).
 */
const JSON_HREF = new RegExp(String.raw`([{,]\s*"href"\s*:\s*")${RELATIVE_HREF}`, 'g')
/**
 * The href attribute of a <link> or <resource> start tag (a literal `<` opens
 * a tag: in text and attribute values it is escaped).
 */
const XML_HREF = new RegExp(String.raw`(<(?:link|resource)\b[^<>]*?\shref\s*=\s*")${RELATIVE_HREF}`, 'g')

/** `text` with every relative HAL href under `prefix` (e.g. `/esm`); the same string when there is none. */
export function localLinks (text: string, kind: HalKind, prefix: string): string {
  // A replacement string, not a function: a function call per link made a 4 MiB body of links 3x slower.
  return text.replace(kind === 'json' ? JSON_HREF : XML_HREF, `$&${prefix.replaceAll('$', '$$$$')}`)
}
