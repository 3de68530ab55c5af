// The store over TLS (rediss://) to a real redis-server that asks for client
// certificates, with a CA and a client certificate made for this test:
// commands and the subscriber connection both go encrypted.
import t from 'tap'
import { RedisStore } from '../../src/store/redis-store.js'
import { eventually } from '../helpers/app.js'
import { makeTlsFiles, startTlsRedisServer } from '../helpers/redis-topologies.js'
import { readFileSync } from 'node:fs'

t.test('rediss:// with a private CA and a client certificate: values and notifications', async (t) => {
  const files = await makeTlsFiles(t)
  const { tlsPort } = await startTlsRedisServer(t, files, true)
  const store = new RedisStore({
    redis: {
      topology: { kind: 'standalone', node: { host: '127.0.0.1', port: tlsPort }, database: 0 },
      target: `rediss://127.0.0.1:${tlsPort}`,
      tls: { ca: files.ca, cert: readFileSync(files.clientCertFile, 'utf8'), key: readFileSync(files.clientKeyFile, 'utf8') }
    },
    commandTimeoutMs: 1_000
  })
  t.teardown(async () => { await store.close() })
  t.ok(await store.waitUntilUp(5_000), 'connected over TLS')
  await store.set('k', Buffer.from('over tls'))
  t.equal((await store.get('k'))?.toString(), 'over tls')
  const seen: string[] = []
  await store.subscribe('events', (m) => { seen.push(m.toString()) })
  t.ok(await eventually(async () => {
    await store.publish('events', Buffer.from('notice'))
    return seen.includes('notice')
  }, 5_000), 'notifications arrive on the (TLS) subscriber connection')
})
