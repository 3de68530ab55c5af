// STATE_ENCRYPTION_KEY parsing, the key namespace, and createStore's choice.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { createStore } from '../../src/store/create-store.js'
import { parseStateEncryptionKeys, stateKey } from '../../src/store/encryption-keys.js'
import { StateKeyError } from '../../src/store/errors.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { DEFAULT_KEY_PREFIX, digest, stateNamespace } from '../../src/store/namespace.js'
import { SealedStore } from '../../src/store/sealed-store.js'
import { standalone } from '../helpers/redis-server.js'

t.test('STATE_ENCRYPTION_KEY: base64 (padded, unpadded, url-safe) and hex name the same key', async (t) => {
  const bytes = randomBytes(32)
  const spellings = [
    bytes.toString('base64'),
    bytes.toString('base64').replace(/=+$/, ''),
    bytes.toString('base64url'),
    bytes.toString('hex'),
    bytes.toString('hex').toUpperCase(),
    `  ${bytes.toString('base64')}\n`
  ]
  for (const spelling of spellings) {
    const [key, ...rest] = parseStateEncryptionKeys(spelling)
    t.same(rest, [])
    t.same(key?.id, stateKey(bytes).id, `${spelling.length} characters`)
    t.equal(key?.key.symmetricKeySize, 32)
  }
  t.notOk(JSON.stringify(parseStateEncryptionKeys(bytes.toString('hex'))).includes(bytes.toString('hex')), 'the parsed key does not serialise its material')
})

t.test('STATE_ENCRYPTION_KEY: a comma list keeps its order (the first seals)', async (t) => {
  const a = randomBytes(32)
  const b = randomBytes(32)
  const keys = parseStateEncryptionKeys(`${a.toString('base64')}, ${b.toString('hex')}`)
  t.same(keys.map((k) => k.id), [stateKey(a).id, stateKey(b).id])
})

t.test('STATE_ENCRYPTION_KEY: malformed values name the variable and never echo the key', async (t) => {
  const good = randomBytes(32).toString('base64')
  const short = randomBytes(31).toString('base64')
  const long = randomBytes(33).toString('hex')
  const cases: Array<[string, RegExp]> = [
    ['', /^STATE_ENCRYPTION_KEY is empty/],
    ['   ', /^STATE_ENCRYPTION_KEY is empty/],
    [short, /^STATE_ENCRYPTION_KEY must hold 32-byte keys in base64 or hex \(the key is base64 of 31 bytes, expected 32\)/],
    [long, /\(the key is 66 hex digits, expected 64\)/],
    ['correct horse battery staple, not a key at all', /\(key 1 of 2 is neither base64 nor hex\)/],
    [`${good},`, /has an empty entry \(key 2 of 2\)/],
    [`${good},${good}`, /lists the same key twice \(key 2 of 2\)/],
    [`${good},${short}`, /\(key 2 of 2 is base64 of 31 bytes, expected 32\)/]
  ]
  for (const [value, message] of cases) {
    const error = (() => { try { return parseStateEncryptionKeys(value) } catch (err) { return err } })()
    t.type(error, StateKeyError)
    t.match(error, { code: 'CMU_PROXY_STATE_KEY_INVALID', variable: 'STATE_ENCRYPTION_KEY', message })
    for (const part of value.split(',').filter((p) => p.trim().length > 8)) {
      t.notOk((error as Error).message.includes(part.trim()), 'no key material in the message')
    }
  }
  t.throws(() => parseStateEncryptionKeys(short, 'STATE_ENCRYPTION_KEY_FILE'), { message: /^STATE_ENCRYPTION_KEY_FILE / }, 'names the variable it was given')
  t.throws(() => stateKey(randomBytes(16)), RangeError)
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
