// `npm run bench:front-door`: issue 19's figures against the proxy as a user
// runs it (node dist/main.js, defaults, info logging to a discarded stdout),
// loopback only, every phase bounded in time:
//  1. a pipelined flood: 50 connections each write 20,000 `GET /cmu/v2/year`
//     and never read; the proxy's RSS and /healthz latency are sampled during
//     the flood and after the attacker leaves;
//  2. 1 MB JSON bodies POSTed at 4 a second to a route that does not exist,
//     while one caller measures its p50 on cached reports;
//  3. a slow body: headers announcing 1,000,000 bytes, then one byte a
//     second: how long until the proxy has answered and closed.
import { connect } from 'node:net'
import { request } from 'node:http'
import { Sandbox } from '../src/sandbox/server.js'
import { spawnGroup } from './process-group.js'
import { rssBytes, spawnProxy } from './processes.js'

const FLOOD_CONNECTIONS = Number(process.env.FLOOD_CONNECTIONS ?? 50)
const FLOOD_REQUESTS = Number(process.env.FLOOD_REQUESTS ?? 20_000)
const FLOOD_SECONDS = Number(process.env.FLOOD_SECONDS ?? 15)
const AFTER_SECONDS = 5
const BODY_SECONDS = 10

/** Milliseconds for one GET on a fresh connection, or Infinity when none came within `deadlineMs`. */
async function timedGet (base: string, path: string, deadlineMs = 5_000): Promise<number> {
  const started = performance.now()
  return await new Promise((resolve) => {
    const req = request(`${base}${path}`, { agent: false, timeout: deadlineMs }, (res) => {
      res.resume()
      res.on('end', () => { resolve(performance.now() - started) })
    })
    req.on('timeout', () => { req.destroy() })
    req.on('error', () => { resolve(Infinity) })
    req.end()
  })
}

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }
const percentile = (values: number[], p: number): number => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * p))] ?? NaN
const mb = (bytes: number): number => Math.round(bytes / 2 ** 20)

/**
 * The attacker, in its own process (its megabytes of writes must not delay the
 * probes): FLOOD_CONNECTIONS connections, each writing FLOOD_REQUESTS pipelined
 * GETs and never reading; a connection the proxy closes is opened again.
 */
const ATTACKER = `
const { connect } = require('node:net')
const [port, connections, requests] = process.argv.slice(1).map(Number)
const burst = Buffer.from(\`GET /cmu/v2/year HTTP/1.1\\r\\nHost: localhost:\${port}\\r\\n\\r\\n\`.repeat(requests))
let opened = 0
function attack () {
  const socket = connect(port, '127.0.0.1')
  opened++
  socket.on('error', () => {})
  socket.on('close', () => { setTimeout(attack, 10) })
  socket.pause()
  socket.write(burst)
}
for (let i = 0; i < connections; i++) attack()
setInterval(() => { process.stdout.write(opened + '\\n') }, 1000)
`

async function pipelinedFlood (base: string, pid: number | undefined): Promise<Record<string, number>> {
  const { port } = new URL(base)
  const attacker = spawnGroup(process.execPath, ['-e', ATTACKER, port, String(FLOOD_CONNECTIONS), String(FLOOD_REQUESTS)], { name: 'node -e attacker' })
  let peakRss = 0
  const during: number[] = []
  const floodEnds = Date.now() + FLOOD_SECONDS * 1000
  while (Date.now() < floodEnds) {
    peakRss = Math.max(peakRss, rssBytes(pid) ?? 0)
    during.push(await timedGet(base, '/healthz'))
    await sleep(200)
  }
  const connections = Number(/(\d+)\s*$/.exec(attacker.output())?.[1] ?? NaN)
  await attacker.stop('SIGKILL')
  const after: number[] = []
  const afterEnds = Date.now() + AFTER_SECONDS * 1000
  while (Date.now() < afterEnds) {
    peakRss = Math.max(peakRss, rssBytes(pid) ?? 0)
    after.push(await timedGet(base, '/healthz'))
    await sleep(200)
  }
  if (process.env.FLOOD_DEBUG !== undefined) process.stderr.write(`during ${during.map(Math.round).join(' ')}\nafter ${after.map(Math.round).join(' ')}\n`)
  return { attackerConnections: connections, peakRssMb: mb(peakRss), healthzMaxMsDuring: Math.round(Math.max(...during)), healthzMaxMsAfter: Math.round(Math.max(...after)), healthzProbes: during.length + after.length }
}

async function jsonBodies (base: string): Promise<Record<string, number>> {
  const { port } = new URL(base)
  const body = '['.repeat(1_000_000)
  let sent = 0
  const poster = setInterval(() => {
    const socket = connect(Number(port), '127.0.0.1')
    socket.on('error', () => {})
    socket.on('data', () => {})
    socket.end(`POST /nope HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
    sent++
  }, 250)
  const latencies: number[] = []
  const ends = Date.now() + BODY_SECONDS * 1000
  while (Date.now() < ends) {
    latencies.push(await timedGet(base, '/cmu/v2/year'))
    await sleep(20)
  }
  clearInterval(poster)
  return { bodiesSent: sent, othersP50Ms: Number(percentile(latencies, 0.5).toFixed(2)), othersP99Ms: Number(percentile(latencies, 0.99).toFixed(2)) }
}

async function slowBody (base: string): Promise<Record<string, number>> {
  const { port } = new URL(base)
  const socket = connect(Number(port), '127.0.0.1')
  socket.on('error', () => {})
  const started = performance.now()
  let answeredMs = Infinity
  socket.once('data', () => { answeredMs = performance.now() - started })
  const closed = new Promise<number>((resolve) => socket.on('close', () => { resolve(performance.now() - started) }))
  socket.write('POST /cmu/v2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n')
  const drip = setInterval(() => { if (!socket.destroyed) socket.write('[') }, 1_000)
  const closedMs = await Promise.race([closed, sleep(30_000).then(() => Infinity)])
  clearInterval(drip)
  socket.destroy()
  return { answeredMs: Math.round(answeredMs), closedMs: Math.round(closedMs) }
}

const sandbox = new Sandbox()
await sandbox.listen(0, '127.0.0.1')
const { child, base } = await spawnProxy({ ...sandbox.adobeUrls })
try {
  await timedGet(base, '/cmu/v2/year')
  const flood = await pipelinedFlood(base, child.pid)
  process.stderr.write(`flood: ${JSON.stringify(flood)}\n`)
  const bodies = await jsonBodies(base)
  process.stderr.write(`1 MB bodies: ${JSON.stringify(bodies)}\n`)
  const slow = await slowBody(base)
  process.stderr.write(`slow body: ${JSON.stringify(slow)}\n`)
  const met = flood.peakRssMb! < 300 && flood.healthzMaxMsDuring! < 1000 && flood.healthzMaxMsAfter! < 1000 && bodies.othersP50Ms! < 10 && slow.closedMs! < 2000
  process.stdout.write(`${JSON.stringify({ flood, bodies, slow, met }, null, 2)}\n`)
  process.exitCode = met ? 0 : 1
} finally {
  await child.stop()
  await sandbox.close()
}
