// The front door's section (config/front-door-settings.ts): Node's server
// limits with their defaults, and which Host names the proxied routes serve.
import t from 'tap'
import { loadSettings } from '../../src/config/load.js'
import { ConfigError } from '../../src/config/problems.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'

const KEY = 'key-a-0123456789abcdef'
const base = { CMU_PROXY_ENV_FILE: '/dev/null', ADOBE_SOFTWARE_STATEMENT: makeSoftwareStatement() }

t.test('defaults: 60 s for a request, 72 s of keep-alive, 1000 requests and 16 pipelined per connection, 4096 connections', async (t) => {
  t.same(loadSettings({ env: base }).frontDoor, {
    requestTimeoutMs: 60_000,
    keepAliveTimeoutMs: 72_000,
    maxRequestsPerConnection: 1000,
    maxConnections: 4096,
    maxPipelinedRequests: 16,
    allowedHosts: new Set()
  })
})

t.test('allowed hosts: loopback only without keys; any with keys; PROXY_ALLOWED_HOSTS adds names either way', async (t) => {
  t.same(loadSettings({ env: base }).frontDoor.allowedHosts, new Set(), 'anonymous: loopback names only')
  t.equal(loadSettings({ env: { ...base, PROXY_API_KEYS: KEY } }).frontDoor.allowedHosts, undefined, 'keys: no Host check')
  const listed = new Set(['cmu-proxy', 'reports.example.com', '10.0.0.7', '[fd00::7]'])
  const value = ' cmu-proxy, Reports.Example.COM., 10.0.0.7,fd00::7 ,'
  t.same(loadSettings({ env: { ...base, PROXY_ALLOWED_HOSTS: value } }).frontDoor.allowedHosts, listed, 'lower case, no trailing dot, IPv6 in brackets')
  t.same(loadSettings({ env: { ...base, PROXY_API_KEYS: KEY, PROXY_ALLOWED_HOSTS: value } }).frontDoor.allowedHosts, listed, 'with keys too')
})

t.test('a bad entry stops start-up with one line naming PROXY_ALLOWED_HOSTS', async (t) => {
  for (const bad of ['cmu-proxy:8080', 'http://cmu-proxy', 'a b', '*.example.com']) {
    t.throws(() => loadSettings({ env: { ...base, PROXY_ALLOWED_HOSTS: `localhost,${bad}` } }), new ConfigError([{ variable: 'PROXY_ALLOWED_HOSTS', problem: `must be a comma-separated list of host names or IP addresses, without ports (any port is accepted); ${JSON.stringify(bad)} is not one` }]), bad)
  }
})

t.test('limits out of range are refused', async (t) => {
  for (const [name, value] of [['INBOUND_MAX_PIPELINED_REQUESTS', '0'], ['INBOUND_MAX_CONNECTIONS', '0'], ['INBOUND_REQUEST_TIMEOUT_MS', '0'], ['INBOUND_MAX_REQUESTS_PER_CONNECTION', '-1']] as const) {
    t.throws(() => loadSettings({ env: { ...base, [name]: value } }), { name: 'ConfigError', variable: name }, `${name}=${value}`)
  }
})
