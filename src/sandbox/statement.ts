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

/**
 * The payload of a JWT-shaped statement, or undefined when it has no JSON
 * object there. The sandbox's own reading (signatures are not checked): it
 * must not share code with the client it stands in for, or a shared bug
 * would pass both sides.
 */
export function statementClaims (statement: string): Record<string, unknown> | undefined {
  const [, payload = ''] = statement.split('.')
  let claims: unknown
  try {
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
  } catch {
    return undefined
  }
  return typeof claims === 'object' && claims !== null && !Array.isArray(claims) ? claims as Record<string, unknown> : undefined
}
