// The one reading of a query parameter's name, for the two places that look
// for a caller's `access_token`: the forwarder removes it, the request log
// masks it. Any percent-encoding of the name (`%61ccess_token`) must be seen
// through, or the token slips past both.

/** Whether `query` may hold an access_token parameter at all (a cheap test before splitting). */
export function mayHoldAccessToken (query: string): boolean {
  return query.includes('%') || /access/i.test(query)
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

export function isAccessToken (pair: string): boolean {
  return parameterName(pair).toLowerCase() === 'access_token'
}
