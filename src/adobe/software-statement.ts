// Reading the public part of a software statement (a JWT) for the admin view
// and the check command. The statement as a whole is a secret: only its
// registered claims and a short fingerprint are ever shown.
import { statementFingerprint } from './credential-store.js'

const PUBLIC_CLAIMS = ['iss', 'sub', 'aud', 'iat', 'nbf', 'exp', 'jti'] as const

/** The statement's payload, or undefined when it is not a JWT with a JSON object payload. */
export function statementClaims (statement: string): Record<string, unknown> | undefined {
  const payload = statement.split('.')[1]
  if (payload === undefined) return undefined
  try {
    const claims: unknown = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
    return typeof claims === 'object' && claims !== null && !Array.isArray(claims) ? claims as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

export function publicStatementInfo (statement: string): Record<string, unknown> {
  const claims = statementClaims(statement) ?? {}
  const info: Record<string, unknown> = { fingerprint: statementFingerprint(statement).slice(0, 12) }
  for (const name of PUBLIC_CLAIMS) if (claims[name] !== undefined) info[name] = claims[name]
  return info
}
