// The registration lock holder and a store that blinks: unit level, on the
// memory store (the Redis paths are in fleet.test.ts).
import t, { type Test } from 'tap'
import type { FailureNotice } from '../../src/adobe/coordination.js'
import type { ClientCredentials } from '../../src/adobe/dcr-client.js'
import type { SharedCredentials } from '../../src/fleet/shared-credentials.js'
import type { FleetTokenCoordination } from '../../src/fleet/token-coordination.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import { memberParts } from '../helpers/fleet-parts.js'

/** A memory store whose first `failSets` writes fail, as a Redis that blinked would. */
class BlinkingStore extends MemoryStore {
  failSets = 0
  override async set (key: string, value: Buffer, ttlMs?: number): Promise<void> {
    if (this.failSets > 0) {
      this.failSets--
      throw new Error('connection lost')
    }
    await super.set(key, value, ttlMs)
  }
}

async function fleetParts (t: Test, store: MemoryStore): Promise<{ coordination: FleetTokenCoordination, shared: SharedCredentials, key: string }> {
  const { coordination, shared, namespace } = await memberParts(t, store, { lockTtlMs: 200, maxWaitMs: 1_000 })
  return { coordination, shared, key: namespace.key('credentials') }
}

const describeFailure = (err: unknown): FailureNotice => ({ code: 'CMU_PROXY_NOT_REGISTERED', detail: (err as Error).message, minDelayMs: 0, slow: false })

t.test('a store that loses the new credentials\' write still holds them before the registration lock is released', async (t) => {
  const store = new BlinkingStore()
  const { coordination, shared, key } = await fleetParts(t, store)
  let registrations = 0
  const result = await coordination.register({
    rejected: undefined,
    register: async () => {
      registrations++
      const credentials: ClientCredentials = { client_id: 'id-1', client_secret: 'secret-1', generation: 1_000 }
      store.failSets = 1 // the save's write to the fleet's copy is lost
      await shared.save(credentials)
      return credentials
    },
    describeFailure
  })
  t.equal(registrations, 1)
  t.equal(result.registeredHere, true)
  t.match(JSON.parse((await store.get(key))?.toString() ?? '{}'), { client_id: 'id-1' }, 'written again by the lock holder')

  // The next instance that looks finds them and does not register.
  const second = await coordination.register({ rejected: undefined, register: async () => { registrations++; throw new Error('must not register') }, describeFailure })
  t.equal(second.registeredHere, false)
  t.equal(registrations, 1, 'one registration for the fleet')
})

t.test('older credentials in the fleet\'s copy are replaced by newer ones from the file, never the other way round', async (t) => {
  const store = new MemoryStore()
  const { shared, key } = await fleetParts(t, store)
  await shared.save({ client_id: 'new', client_secret: 'new-secret', generation: 2_000 })
  // Someone writes an older copy back (a rollback, or a replayed value).
  await store.set(key, Buffer.from(JSON.stringify({ client_id: 'old', client_secret: 'old-secret', generation: 1_000 })))
  t.match(await shared.load(), { status: 'found', credentials: { client_id: 'new' } }, 'the newer file wins')
  t.match(JSON.parse((await store.get(key))?.toString() ?? '{}'), { client_id: 'new' }, 'and replaces the older shared copy')
  t.notOk(await shared.share({ client_id: 'old', client_secret: 'old-secret', generation: 1_000 }) && JSON.parse((await store.get(key))?.toString() ?? '{}').client_id === 'old', 'sharing older credentials does not overwrite newer ones')
})

t.test('copies written before generations were kept are never called older: the fleet\'s copy wins, as before', async (t) => {
  const store = new MemoryStore()
  const { shared, key } = await fleetParts(t, store)
  // A file from an earlier registration (no generation), and the fleet's current copy, also without one.
  await shared.save({ client_id: 'from-an-old-volume', client_secret: 'old-secret' })
  await store.set(key, Buffer.from(JSON.stringify({ client_id: 'current', client_secret: 'current-secret' })))
  t.match(await shared.load(), { status: 'found', credentials: { client_id: 'current' } }, 'the fleet\'s copy is used')
  t.match(JSON.parse((await store.get(key))?.toString() ?? '{}'), { client_id: 'current' }, 'and never replaced by the file\'s')

  // The same client in both, the file with a generation: the fleet's copy gains it.
  await shared.keepLocalCopy({ client_id: 'current', client_secret: 'current-secret', generation: 5_000 })
  await shared.save({ client_id: 'current', client_secret: 'current-secret', generation: 5_000 })
  await store.set(key, Buffer.from(JSON.stringify({ client_id: 'current', client_secret: 'current-secret' })))
  await shared.load()
  t.match(JSON.parse((await store.get(key))?.toString() ?? '{}'), { client_id: 'current', generation: 5_000 })

  // The other way round: a file from before generations gains the fleet's.
  await shared.save({ client_id: 'current', client_secret: 'current-secret' })
  await shared.keepLocalCopy({ client_id: 'current', client_secret: 'current-secret', generation: 6_000 })
  t.match(await shared.load(), { status: 'found', credentials: { client_id: 'current', generation: 6_000 } })
})

t.test('re-registering after invalid_client: older credentials put back meanwhile are not taken', async (t) => {
  const store = new MemoryStore()
  const { coordination, shared, key } = await fleetParts(t, store)
  const rejected: ClientCredentials = { client_id: 'rejected', client_secret: 'rejected-secret', generation: 2_000 }
  // Another instance's file put back an older client after the rejected one was dropped.
  await store.set(key, Buffer.from(JSON.stringify({ client_id: 'older', client_secret: 'older-secret', generation: 1_000 })))
  let registrations = 0
  const result = await coordination.register({
    rejected,
    register: async () => {
      registrations++
      const credentials: ClientCredentials = { client_id: 'new', client_secret: 'new-secret', generation: 3_000 }
      await shared.save(credentials)
      return credentials
    },
    describeFailure
  })
  t.equal(registrations, 1, 'registered instead of taking the older client')
  t.match(result, { registeredHere: true, credentials: { client_id: 'new' } })
})
