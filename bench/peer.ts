// The Node peer: what a team would write instead of cmu-proxy with the
// Fastify-maintained proxy plugin, @fastify/http-proxy (over
// @fastify/reply-from and undici), a static bearer token and Fastify's
// default info logging. Run as its own process by the benchmark:
//   node dist-bench/bench/peer.js <port> <upstream origin> <token>
import proxy from '@fastify/http-proxy'
import Fastify from 'fastify'

const [port = '0', upstream = '', token = ''] = process.argv.slice(2)
const authorization = `Bearer ${token}`
const app = Fastify({ logger: { level: 'info' } })
await app.register(proxy, {
  upstream,
  prefix: '/cmu',
  rewritePrefix: '/cmu',
  replyOptions: { rewriteRequestHeaders: (_request, headers) => ({ ...headers, authorization }) }
})
app.get('/ready', async () => 'ok')
await app.listen({ host: '127.0.0.1', port: Number(port) })
