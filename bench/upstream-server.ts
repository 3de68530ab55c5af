// A fast fixed-response stand-in for Adobe, run as its own process by the
// benchmark: minimal DCR, a 2 KB JSON and a 200 KB CSV report, and a bearer
// check on every report. Bodies are built once so it costs as little as it can.
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

export const SMALL_PATH = '/cmu/v2/small'
export const LARGE_PATH = '/cmu/v2/large.csv'

function jsonBody (bytes: number): Buffer {
  const record = '{"year":"2026","month":"11","mvpd":"Comcast_SSO","active-users":"12345","started-sessions":"6789"}'
  const records: string[] = []
  let size = 40
  while (size + record.length + 1 < bytes) { records.push(record); size += record.length + 1 }
  const text = `{"_links":{"self":{"href":"/cmu/v2/small"}},"report":[${records.join(',')}]}`
  return Buffer.from(text.padEnd(bytes, ' '))
}

function csvBody (bytes: number): Buffer {
  const line = '2026,11,27,10,Comcast_SSO,acme-tv,12345,6789,101,3\n'
  return Buffer.from(`year,month,day,hour,mvpd,tenant,active-users,started-sessions,failed-attempts,killed-sessions\n${line.repeat(Math.ceil(bytes / line.length))}`.slice(0, bytes))
}

export async function startUpstream (port = 0): Promise<{ port: number, token: string, close: () => Promise<void> }> {
  const token = randomBytes(24).toString('base64url')
  const bearer = `Bearer ${token}`
  const small = jsonBody(2 * 1024)
  const large = csvBody(200 * 1024)
  const smallHeaders = { 'content-type': 'application/json', 'content-length': String(small.length) }
  const largeHeaders = { 'content-type': 'text/csv', 'content-length': String(large.length) }
  const registration = JSON.stringify({ client_id: 'bench-client', client_secret: randomBytes(16).toString('hex'), client_id_issued_at: Date.now(), redirect_uris: [], grant_types: ['client_credentials'], scopes: [] })
  const tokenAnswer = JSON.stringify({ id: 'bench', access_token: token, created_at: Date.now(), expires_in: 86_400, token_type: 'bearer' })

  const server = createServer((req, res) => {
    const url = req.url ?? ''
    if (req.method === 'POST') {
      req.resume()
      req.on('end', () => {
        res.writeHead(201, { 'content-type': 'application/json' })
        res.end(url.startsWith('/o/client/register') ? registration : tokenAnswer)
      })
      return
    }
    if (req.headers.authorization !== bearer) {
      res.writeHead(401, { 'content-type': 'text/plain' })
      res.end('Unauthorized')
      return
    }
    if (url.startsWith(SMALL_PATH)) {
      res.writeHead(200, smallHeaders)
      res.end(small)
    } else if (url.startsWith(LARGE_PATH)) {
      res.writeHead(200, largeHeaders)
      res.end(large)
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' })
      res.end('Not found')
    }
  })
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    token,
    close: async () => { server.closeAllConnections(); await new Promise((resolve) => server.close(resolve)) }
  }
}

// As a process: print the port and token on one line for the parent.
if (process.argv[2] === '--serve') {
  const upstream = await startUpstream(Number(process.argv[3] ?? 0))
  process.stdout.write(`listening ${upstream.port} ${upstream.token}\n`)
}
