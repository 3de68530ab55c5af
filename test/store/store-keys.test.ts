// State keys (their format is config's: test/config/settings.test.ts), the key namespace, and createStore's choice.
import { createSecretKey, randomBytes } from 'node:crypto'
import t from 'tap'
import { createStore } from '../../src/store/create-store.js'
import { stateKey } from '../../src/store/encryption-keys.js'
import { StateKeyError } from '../../src/store/errors.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { DEFAULT_KEY_PREFIX, digest, stateNamespace } from '../../src/store/namespace.js'
import { SealedStore } from '../../src/store/sealed-store.js'
import { standalone } from '../helpers/redis-server.js'

t.test('stateKey: the same key and id from raw bytes and from a secret KeyObject (the settings); 32 bytes only', async (t) => {
  const bytes = randomBytes(32)
  const fromBytes = stateKey(bytes)
  const fromKeyObject = stateKey(createSecretKey(bytes))
  t.same(fromKeyObject.id, fromBytes.id)
  t.equal(fromKeyObject.key.symmetricKeySize, 32)
  t.ok(fromKeyObject.key.equals(fromBytes.key))
  t.notOk(JSON.stringify(fromBytes).includes(bytes.toString('hex')), 'a key does not serialise its material')
  t.throws(() => stateKey(randomBytes(16)), RangeError)
  t.throws(() => stateKey(createSecretKey(randomBytes(16))), RangeError)
})

t.test('namespace: prefix, then the application\'s fingerprint, then the name', async (t) => {
  const statement = 'header.payload.signature'
  const ns = stateNamespace(DEFAULT_KEY_PREFIX, { softwareStatement: statement })
  t.match(ns.base, /^cmu-proxy:s-[0-9a-f]{16}:$/)
  t.notOk(ns.base.includes('payload'), 'the statement is not in the key')
  t.equal(ns.key('credentials'), `${ns.base}credentials`)
  t.equal(ns.key('lock', 'token'), `${ns.base}lock:token`)
  t.equal(ns.channel('token'), `${ns.base}channel:token`)
  t.equal(stateNamespace(DEFAULT_KEY_PREFIX, { softwareStatement: statement }).base, ns.base, 'stable across instances')
  t.not(stateNamespace(DEFAULT_KEY_PREFIX, { softwareStatement: 'other.statement.sig' }).base, ns.base, 'two applications never share keys')
  const byClient = stateNamespace('team-a:', { clientId: 'client-1' })
  t.match(byClient.base, /^team-a:c-[0-9a-f]{16}:$/, 'pre-provisioned credentials: the client id names the application')
  t.notOk(byClient.base.includes('client-1'))
  t.not(stateNamespace('team-a:', { clientId: statement }).base, stateNamespace('team-a:', { softwareStatement: statement }).base, 'a statement and a client id with the same text never collide')
  t.match(stateNamespace('', { clientId: 'x' }).base, /^c-/, 'an empty prefix is allowed')
  const tagged = stateNamespace(DEFAULT_KEY_PREFIX, { softwareStatement: statement }, { hashTag: true })
  t.equal(tagged.base, ns.base.replace(/(s-[0-9a-f]{16})/, '{$1}'), 'Redis Cluster: the fingerprint is a hash tag')
  t.equal(tagged.channel('token'), `${tagged.base}channel:token`, 'channels too: one slot for everything')

  t.throws(() => ns.key(), RangeError)
  t.throws(() => ns.key('cache', '/cmu/v2/year?x=1'), { message: /hash it with digest\(\)/ })
  t.throws(() => ns.key('a b'), RangeError)
  t.throws(() => stateNamespace('bad prefix:', { clientId: 'x' }), RangeError)
  t.throws(() => stateNamespace('nul\0:', { clientId: 'x' }), RangeError)

  const cacheKey = digest('gzip application/json /v2/year/month?start=2026')
  t.match(cacheKey, /^[A-Za-z0-9_-]{22}$/)
  t.equal(digest('gzip application/json /v2/year/month?start=2026'), cacheKey, 'stable')
  t.equal(ns.key('cache', cacheKey), `${ns.base}cache:${cacheKey}`, 'digests are valid key parts')
})

t.test('createStore: memory without Redis; sealed Redis with it, and only with a key', async (t) => {
  const memory = createStore({})
  t.type(memory, MemoryStore)
  await memory.close()
  const redis = { ...standalone({ port: 1 }), password: 'p', commandTimeoutMs: 100, variable: 'REDIS_URL' as const }
  t.throws(() => createStore({ redis }), { name: 'StateKeyError', variable: 'STATE_ENCRYPTION_KEY', message: /required with REDIS_URL/ })
  t.throws(() => createStore({ redis: { ...redis, variable: 'REDIS_SENTINELS' }, encryptionKeys: [] }), StateKeyError)
  t.throws(() => createStore({ redis: { ...redis, variable: 'REDIS_SENTINELS' } }), { message: /required with REDIS_SENTINELS/ })
  const sealed = createStore({ redis, encryptionKeys: [stateKey(randomBytes(32))], tuning: { reconnectMaxMs: 50 } })
  t.type(sealed, SealedStore)
  t.match(sealed.stats(), { backend: 'redis', up: false, unsealFailures: 0 })
  await t.rejects(sealed.get('k'), { name: 'StoreUnavailableError' }, 'nothing listens on port 1: unavailable, not absent')
  await sealed.close()
})
