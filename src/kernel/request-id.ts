// Every request gets an id: the caller's X-Request-Id when it is sane (so a
// trace survives the hop), else a new UUID. Fastify's genReqId.
import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'

const MAX_REQUEST_ID_LENGTH = 128
const SAFE_REQUEST_ID = /^[A-Za-z0-9._:@/+=-]+$/

export function requestId (headers: IncomingHttpHeaders): string {
  const given = headers['x-request-id']
  return typeof given === 'string' && given.length <= MAX_REQUEST_ID_LENGTH && SAFE_REQUEST_ID.test(given) ? given : randomUUID()
}
