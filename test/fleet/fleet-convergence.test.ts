// Issue 20, D6: Adobe revokes the client while Redis is unreachable, so each
// instance registers its own (rather than stop serving). When Redis returns
// they converge on one client, the newest (the generation rules), and the
// clients left alive at Adobe are listed in /admin/status and logged once.
import t from 'tap'
import { maskClientId } from '../../src/adobe/credentials.js'
import { ADMIN, allAnswerOk, fleetOf, statuses } from '../helpers/fleet.js'
import { call, eventually, startSandbox } from '../helpers/app.js'
import { startRedisServer } from '../helpers/redis-server.js'

t.test('clients registered apart during a Redis outage converge on the newest when it returns; the others are listed for revocation', async (t) => {
  const sandbox = await startSandbox(t)
  const redis = await startRedisServer(t)
  const fleet = await fleetOf(t, sandbox, redis, 3, { REDIS_COMMAND_TIMEOUT_MS: '500', REDIS_LOCK_TTL_MS: '2000' })
  t.same(statuses(await Promise.all(fleet.map(async (p) => await call(p.url, '/cmu/v2')))), [200])
  t.equal(sandbox.calls.register, 1)

  await redis.kill()
  t.ok(await eventually(async () => (await Promise.all(fleet.map(async (p) => (await call(p.url, '/metrics')).text))).every((m) => m.includes('cmu_proxy_redis_up 0'))), 'every instance sees Redis down')
  sandbox.dcr.revokeClients()
  // Each instance meets the revocation on its own and, with no fleet to ask, registers its own client.
  for (const p of fleet) t.ok(await allAnswerOk([p], '/cmu/v2', 5_000), 'it serves again')
  const apart = fleet.map((p) => p.app.broker.status().clientId)
  t.equal(new Set(apart).size, 3, 'three clients, one per instance')
  t.equal(sandbox.calls.register, 4)

  await redis.restart()
  t.ok(await eventually(() => new Set(fleet.map((p) => p.app.broker.status().clientId)).size === 1, 5_000), 'they converge on one client')
  const kept = fleet[0]?.app.broker.status().clientId ?? ''
  const newest = apart.at(-1)
  t.equal(kept, newest, 'the newest one (the last registered)')
  t.equal(sandbox.calls.register, 4, 'without registering again')
  t.same(statuses(await Promise.all(fleet.map(async (p) => await call(p.url, '/cmu/v2')))), [200])

  const superseded = apart.filter((id) => id !== kept).map((id) => maskClientId(id ?? '')).sort()
  const listed = async (): Promise<string[][]> => await Promise.all(fleet.map(async (p) =>
    ((await call(p.url, '/admin/status', { headers: { 'x-api-key': ADMIN } })).json().state.supersededClients as Array<{ clientId: string }>).map((c) => c.clientId).sort()))
  t.ok(await eventually(async () => (await listed()).some((ids) => ids.length === 2), 5_000), 'the fleet lists the two clients it no longer uses')
  t.same((await listed()).find((ids) => ids.length === 2), superseded, 'by masked client id')
  const lines = fleet.flatMap((p) => p.logs).filter((l) => l.includes('revoke the one listed in /admin/status'))
  t.equal(lines.length, 2, 'each logged once, by the instance that registered it')
  for (const id of superseded) t.ok(lines.some((l) => l.includes(id)), `${id} named`)
})
