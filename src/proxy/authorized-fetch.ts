// One upstream GET with the current token. An upstream 401 means our token
// went bad: invalidate it, get a fresh one (single-flight in the broker) and
// retry exactly once; a second 401 is Adobe refusing a fresh token (502).
import type { Dispatcher } from 'undici'
import type { TokenBroker } from '../adobe/token-broker.js'
import { upstreamRejectedToken } from '../errors.js'
import type { UpstreamTarget } from './target.js'
import type { Upstream } from './upstream.js'

export interface AuthorizedFetch {
  broker: TokenBroker
  upstream: Upstream
}

export async function fetchWithToken ({ broker, upstream }: AuthorizedFetch, target: UpstreamTarget, headers: Record<string, string>, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
  // CMU only serves GET; a caller's HEAD is answered from a GET whose body is dropped.
  const send = async (token: string): Promise<Dispatcher.ResponseData> =>
    await upstream.request({ method: 'GET', path: target.path, query: target.query, headers: { ...headers, authorization: `Bearer ${token}` }, signal })

  const token = await broker.getToken()
  const response = await send(token)
  if (response.statusCode !== 401) return response
  await response.body.dump()
  broker.invalidate(token)
  const retried = await send(await broker.getToken())
  if (retried.statusCode !== 401) return retried
  await retried.body.dump()
  throw upstreamRejectedToken()
}
