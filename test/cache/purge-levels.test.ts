// The purge below the admin route: the memory level drops every variant of a
// path (cache-policy.ts cacheKeyPath), the fleet's level deletes its copies by
// name and tells every member, and a lookup that read a shared copy before a
// purge does not keep it after. On the memory store; the Redis path is in
// test/fleet/fleet-reload.test.ts.
import t, { type Test } from 'tap'
import { CacheLevels } from '../../src/cache/cache-levels.js'
import { cacheKey, cacheKeyPath } from '../../src/cache/cache-policy.js'
import { ResponseCache, type CachedResponse } from '../../src/cache/response-cache.js'
import type { FleetChannel } from '../../src/fleet/fleet-channel.js'
import { FleetCache } from '../../src/fleet/shared-cache.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import type { ReportApiName } from '../../src/upstream/target.js'
import { eventually } from '../helpers/app.js'
import { memberParts } from '../helpers/fleet-parts.js'


function keyOf (path: string, query = '', accept?: string, api: ReportApiName = 'cmu'): string {
  return cacheKey({ target: { api, path, query }, gzipAccepted: false, accept, acceptLanguage: undefined, headers: {}, id: 'r', ip: '127.0.0.1', head: false } as unknown as Parameters<typeof cacheKey>[0])
}

function entry (now: number): CachedResponse {
  return { status: 200, headers: { 'content-type': 'application/json' }, body: Buffer.from('{}'), storedAt: now, bornAt: now, freshUntil: now + 60_000, revalidateUntil: now + 60_000, errorUntil: now + 120_000, staleUntil: now + 120_000, noCache: false }
}

async function fleetCache (t: Test, store: MemoryStore): Promise<{ cache: FleetCache, channel: FleetChannel }> {
  const { cache, channel } = await memberParts(t, store)
  return { cache, channel }
}

t.test('cacheKeyPath: the path of every variant, whatever its query, Accept or encoding', async (t) => {
  t.equal(cacheKeyPath(keyOf('/v2/year', 'start=1&end=2', 'text/csv')), '/v2/year')
  t.equal(cacheKeyPath(keyOf('/v2/year')), '/v2/year')
  t.equal(cacheKeyPath(keyOf('')), '')
  t.equal(cacheKeyPath('no-query-here'), 'no-query-here')
  t.equal(cacheKeyPath(keyOf('/v2/year', 'a=1', undefined, 'esm')), 'esm:/v2/year', 'ESM\'s in its own namespace')
  t.not(keyOf('/v2/year', 'a=1', undefined, 'esm'), keyOf('/v2/year', 'a=1'), '/esm/v2/year and /cmu/v2/year never share an entry')
})

t.test('the memory level: one path\'s variants, or everything; not counted as evictions', async (t) => {
  const now = Date.now()
  const memory = new ResponseCache({ maxBytes: 1_000_000, maxEntryBytes: 10_000, now: () => now })
  for (const key of [keyOf('/v2/year'), keyOf('/v2/year', 'a=1'), keyOf('/v2/year', '', 'text/csv'), keyOf('/v2/year/month')]) memory.put(key, entry(now))
  t.equal(memory.purge((key) => cacheKeyPath(key) === '/v2/year'), 3)
  t.equal(memory.stats().entries, 1)
  t.ok(memory.peek(keyOf('/v2/year/month')) !== undefined, 'another path stays')
  t.equal(memory.purge(), 1)
  t.equal(memory.stats().entries, 0)
  t.equal(memory.stats().evictions, 0)
})

t.test('the fleet level: deletes by name and tells every member; a notice with a path that is not a string purges nothing', async (t) => {
  const store = new MemoryStore()
  const now = Date.now()
  const a = await fleetCache(t, store)
  const b = await fleetCache(t, store)
  const told: Array<string | undefined> = []
  b.cache.onPurge((path) => { told.push(path) })
  const keys = [keyOf('/v2/year'), keyOf('/v2/year', 'a=1'), keyOf('/v2/year/month')]
  for (const key of keys) a.cache.put(key, entry(now))
  t.ok(await eventually(async () => (await Promise.all(keys.map(async (key) => await b.cache.get(key)))).every((e) => typeof e === 'object')), 'shared')
  t.same(await a.cache.purge('/v2/year'), { deleted: 2, told: true })
  t.equal(await b.cache.get(keys[0] ?? ''), undefined, 'gone for every member')
  t.equal(typeof await b.cache.get(keys[2] ?? ''), 'object', 'another path stays')
  await a.channel.publish('cache-purge', { path: 5 })
  t.same(await a.cache.purge(undefined), { deleted: 1, told: true })
  t.ok(await eventually(() => told.length === 2), 'told twice')
  t.same(told, ['/v2/year', undefined], 'the path, then everything; the malformed notice did nothing')
})

t.test('the fleet level: could not tell the others, or could not reach the store', async (t) => {
  class Store extends MemoryStore {
    failPublish = false
    failDelete = false
    override async publish (channel: string, message: Buffer): Promise<void> {
      if (this.failPublish) throw new Error('publish refused')
      await super.publish(channel, message)
    }

    override async deleteByPrefix (prefix: string): Promise<number> {
      if (this.failDelete) throw new Error('store down')
      return await super.deleteByPrefix(prefix)
    }
  }
  const store = new Store()
  const { cache } = await fleetCache(t, store)
  store.failPublish = true
  t.same(await cache.purge(undefined), { deleted: 0, told: false })
  store.failDelete = true
  t.equal(await cache.purge('/v2/year'), 'unavailable')
})

t.test('a lookup that read a shared copy before a purge does not keep it after', async (t) => {
  class GatedStore extends MemoryStore {
    gate: Promise<void> | undefined
    override async get (key: string, maxBytes?: number): Promise<Buffer | undefined> {
      const value = await super.get(key, maxBytes)
      await this.gate
      return value
    }
  }
  const store = new GatedStore()
  const now = Date.now()
  const { cache: shared } = await fleetCache(t, store)
  const key = keyOf('/v2/year')
  shared.put(key, entry(now))
  t.ok(await eventually(async () => typeof await shared.get(key) === 'object'))
  const memory = new ResponseCache({ maxBytes: 1_000_000, maxEntryBytes: 10_000, now: () => now })
  const levels = new CacheLevels({ memory, shared, now: () => now, wallNow: () => now, revalidateSeconds: () => 30 })
  let open = (): void => {}
  store.gate = new Promise((resolve) => { open = resolve })
  const looking = levels.lookUp(key, undefined)
  await new Promise((resolve) => setImmediate(resolve))
  store.gate = undefined
  t.same(await levels.purge('/v2/year'), { memory: 0, shared: { deleted: 1, told: true } })
  open()
  t.same(await looking, { entry: undefined, fleet: 'turns' }, 'a miss')
  t.equal(memory.stats().entries, 0, 'nothing kept')
})
