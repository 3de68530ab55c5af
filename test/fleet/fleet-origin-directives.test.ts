// RFC 9111 in a fleet: the cases of issue 21 (test/cache/directives-cases.ts)
// against two instances sharing one redis-server, so that what one stores
// reaches the other only through the shared level, under the same rules.
import t from 'tap'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { directiveCases, manualClock, type Start } from '../cache/directives-cases.js'
import { startSandbox } from '../helpers/app.js'
import { member } from '../helpers/fleet.js'
import { startRedisServer } from '../helpers/redis-server.js'

const redis = await startRedisServer(t)

const start: Start = async (t, env = {}) => {
  const clock = manualClock()
  const sandbox = await startSandbox(t)
  // A statement per case: its own namespace in the one redis-server.
  const statement = makeSoftwareStatement()
  const options = { statement, env: { CACHE_ENABLED: 'true', ...env }, now: clock.now }
  const a = await member(t, sandbox, redis, options)
  const b = await member(t, sandbox, redis, options)
  return { sandbox, a, b, clock }
}

directiveCases(t, start)
