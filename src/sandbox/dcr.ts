// Adobe Pass DCR as documented: POST /o/client/register (201 with every
// field, or 400 with an OAuth error) and POST /o/client/token (parameters in a
// form body or the query string). Clients and tokens live in bounded maps.
import { randomBytes, randomUUID } from 'node:crypto'
import { statementClaims } from './statement.js'

export interface DcrAnswer { status: number, body: Record<string, unknown> }

export interface IssuedTokenRecord { token: string, issuedAt: number, expiresAt: number }

interface Client { secret: string, revoked: boolean }
interface IssuedToken { clientId: string, expiresAt: number }

const MAX_CLIENTS = 10_000
const MAX_TOKENS = 100_000
const MAX_RECORDED = 1_000

export class SandboxDcr {
  tokenLifetimeSeconds: number
  /** When set, every registration is refused with this OAuth error. */
  rejectStatementsWith: 'invalid_software_statement' | 'unapproved_software_statement' | undefined
  /** The last tokens issued, oldest first (tests check refresh timing and look for leaks). */
  readonly issued: IssuedTokenRecord[] = []
  readonly #clients = new Map<string, Client>()
  readonly #tokens = new Map<string, IssuedToken>()
  readonly #now: () => number

  constructor (tokenLifetimeSeconds: number, now: () => number) {
    this.tokenLifetimeSeconds = tokenLifetimeSeconds
    this.#now = now
  }

  register (body: unknown): DcrAnswer {
    const statement = (body as { software_statement?: unknown } | undefined)?.software_statement
    if (typeof statement !== 'string' || statement === '') return oauthError('invalid_request')
    const claims = statementClaims(statement)
    if (claims === undefined || statement.split('.').length !== 3) return oauthError('invalid_software_statement')
    if (this.rejectStatementsWith !== undefined) return oauthError(this.rejectStatementsWith)
    if (this.#clients.size >= MAX_CLIENTS) this.#clients.delete(this.#clients.keys().next().value as string)
    const clientId = randomUUID()
    const secret = randomBytes(24).toString('base64url')
    this.#clients.set(clientId, { secret, revoked: false })
    return {
      status: 201,
      body: { client_id: clientId, client_secret: secret, client_id_issued_at: this.#now(), redirect_uris: [], grant_types: ['client_credentials'], scopes: [] }
    }
  }

  token (params: URLSearchParams): DcrAnswer {
    const grantType = params.get('grant_type')
    const clientId = params.get('client_id')
    const clientSecret = params.get('client_secret')
    if (grantType === null || clientId === null || clientSecret === null) return oauthError('invalid_request')
    if (grantType !== 'client_credentials') return oauthError('unsupported_grant_type')
    const client = this.#clients.get(clientId)
    if (client === undefined || client.revoked || client.secret !== clientSecret) return oauthError('invalid_client')
    this.#pruneTokens()
    const now = this.#now()
    const expiresIn = this.tokenLifetimeSeconds
    const token = makeToken(clientId, now, expiresIn)
    this.#tokens.set(token, { clientId, expiresAt: now + expiresIn * 1000 })
    if (this.issued.length >= MAX_RECORDED) this.issued.shift()
    this.issued.push({ token, issuedAt: now, expiresAt: now + expiresIn * 1000 })
    return { status: 201, body: { id: randomUUID(), access_token: token, created_at: now, expires_in: expiresIn, token_type: 'bearer' } }
  }

  isValidToken (token: string): boolean {
    const issued = this.#tokens.get(token)
    return issued !== undefined && issued.expiresAt > this.#now() && this.#clients.get(issued.clientId)?.revoked === false
  }

  /** Every issued token stops working (clients stay valid). */
  revokeTokens (): void {
    this.#tokens.clear()
  }

  /** Every registered client is refused with invalid_client; its tokens stop working. */
  revokeClients (): void {
    for (const client of this.#clients.values()) client.revoked = true
  }

  #pruneTokens (): void {
    const now = this.#now()
    for (const [token, issued] of this.#tokens) if (issued.expiresAt <= now) this.#tokens.delete(token)
    while (this.#tokens.size >= MAX_TOKENS) this.#tokens.delete(this.#tokens.keys().next().value as string)
  }
}

function oauthError (error: string): DcrAnswer {
  return { status: 400, body: { error } }
}

/** Shaped like Adobe's (a JWT with exp); signed by nobody. */
function makeToken (clientId: string, now: number, expiresIn: number): string {
  const part = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  const payload = { sub: clientId, iss: 'sandbox.auth', iat: Math.floor(now / 1000), exp: Math.floor(now / 1000) + expiresIn, jti: randomUUID() }
  return `${part({ alg: 'RS256', typ: 'JWT' })}.${part(payload)}.${randomBytes(32).toString('base64url')}`
}
