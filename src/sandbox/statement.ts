// A software statement that looks like Adobe's (an RS256 JWT with sub, iss,
// iat, nbf) but is signed by nobody: made fresh for the demo and the tests, so
// nothing that resembles a real credential is ever committed.
import { randomBytes, randomUUID } from 'node:crypto'

export { statementClaims } from '../adobe/software-statement.js'

export function makeSoftwareStatement (now = Date.now()): string {
  const part = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  const issuedAt = Math.floor(now / 1000)
  const header = part({ alg: 'RS256', typ: 'JWT', kid: 'sandbox' })
  const payload = part({ sub: randomUUID(), iss: 'auth.adobe.com', iat: issuedAt, nbf: issuedAt, sandbox: true })
  return `${header}.${payload}.${randomBytes(64).toString('base64url')}`
}
