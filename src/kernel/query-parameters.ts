// The one reading of a query parameter's name, for the two places that look
// for a credential a caller put in the query string: the forwarder removes
// it (upstream/target.ts), logs and traces mask it (logger.ts). Any case and
// any percent-encoding of the name (`%61ccess_token`, `API%5FKEY`) must be
// seen through, or the credential slips past both.

/**
 * Names that carry a credential: Adobe's own `access_token`, and the names
 * clients use for API keys and secrets. No CMU or ESM parameter or dimension
 * has one of these names (shared/adobe-api.md).
 */
const CREDENTIAL_NAMES: ReadonlySet<string> = new Set([
  'access_token', 'access-token', 'accesstoken', 'api_key', 'api-key', 'apikey', 'x-api-key', 'key', 'token',
  'client_secret', 'client-secret', 'secret', 'password', 'passwd'
])

/** Whether `query` may hold a credential parameter at all (a cheap test before splitting). */
export function mayHoldCredential (query: string): boolean {
  return /%|key|token|secret|passw/i.test(query)
}

/** The decoded name of one `name=value` pair (`+` as space, as forms encode it). */
export function parameterName (pair: string): string {
  const equals = pair.indexOf('=')
  const raw = equals === -1 ? pair : pair.slice(0, equals)
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '))
  } catch {
    return raw
  }
}

/** Whether this pair is a credential: by its name in any case, also as a CMU not-equals filter (`token!=…`). */
export function isCredential (pair: string): boolean {
  return CREDENTIAL_NAMES.has(parameterName(pair).trim().toLowerCase().replace(/!$/, ''))
}
