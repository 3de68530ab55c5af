// undici's dispatchers, without the rest of undici. Its index also loads
// fetch, WebSocket, EventSource, the cache stores and the mock agent, none of
// which the proxy uses: about 2.5 MiB of heap and 1 MiB of external memory
// that every idle sidecar would carry (bench/README.md, "Memory"). These are
// undici's own files: package.json takes patch releases only (~7.30), and a
// release that moved them would fail at import, in every test.
import { createRequire } from 'node:module'
import type { Dispatcher, Pool as UndiciPool, ProxyAgent as UndiciProxyAgent } from 'undici'

const require = createRequire(import.meta.url)

// What undici's index does: request() and the rest of the API on every dispatcher.
const dispatcherClass = require('undici/lib/dispatcher/dispatcher.js') as typeof Dispatcher
Object.assign(dispatcherClass.prototype, require('undici/lib/api/index.js'))

export const Pool = require('undici/lib/dispatcher/pool.js') as typeof UndiciPool
export const ProxyAgent = require('undici/lib/dispatcher/proxy-agent.js') as typeof UndiciProxyAgent
