// A software statement that looks like Adobe's (an RS256 JWT with sub, iss,
// iat, nbf) but is signed by nobody: made fresh for the demo and the tests, so
// nothing that resembles a real credential is ever committed.
import { randomBytes, randomUUID } from 'node:crypto'

export function makeSoftwareStatement (now = Date.now()): string {
  const part = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  const issuedAt = Math.floor(now / 1000)
  const header = part({ alg: 'RS256', typ: 'JWT', kid: 'sandbox' })
  const payload = part({ sub: randomUUID(), iss: 'auth.adobe.com', iat: issuedAt, nbf: issuedAt, sandbox: true })
  return `${header}.${payload}.${randomBytes(64).toString('base64url')}`
}

/** The statement's public claims, or undefined when it is not a JWT with a JSON payload. */
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
