// One fleet member's parts over any StateStore (usually a MemoryStore, or a
// store that misbehaves on purpose), for the unit-level fleet tests: the
// same classes createFleet() wires, without settings or HTTP.
import { join } from 'node:path'
import type { Test } from 'tap'
import { CredentialStore } from '../../src/adobe/credential-store.js'
import { FleetChannel, RecentTrouble } from '../../src/fleet/fleet-channel.js'
import { Membership } from '../../src/fleet/membership.js'
import { FleetCache } from '../../src/fleet/shared-cache.js'
import { SharedCredentials } from '../../src/fleet/shared-credentials.js'
import { SupersededClients } from '../../src/fleet/superseded-clients.js'
import { FleetTokenCoordination } from '../../src/fleet/token-coordination.js'
import { Turns } from '../../src/fleet/turns.js'
import { RebuildableValues } from '../../src/fleet/unusable-values.js'
import { stateNamespace, type StateNamespace } from '../../src/store/namespace.js'
import type { StateStore } from '../../src/store/state-store.js'
import { capturedLogger, temporaryDirectory } from './app.js'

export const STATEMENT = 'h.p.s'

export interface PartsOptions {
  lockTtlMs?: number
  maxWaitMs?: number
  wallNow?: () => number
  /** Ends a run of unusable values after this much quiet (default a minute). */
  quietAfterMs?: number
}

export interface MemberParts {
  store: StateStore
  namespace: StateNamespace
  channel: FleetChannel
  membership: Membership
  turns: Turns
  values: RebuildableValues
  shared: SharedCredentials
  coordination: FleetTokenCoordination
  cache: FleetCache
  /** What the member logged, one JSON line each. */
  logs: string[]
}

/** A member on `store`: subscribed, a member (or not) as its store says, closed when `t` ends. */
export async function memberParts (t: Test, store: StateStore, options: PartsOptions = {}): Promise<MemberParts> {
  const { logger, lines: logs } = capturedLogger('debug')
  const namespace = stateNamespace('test:', { softwareStatement: STATEMENT })
  const lockTtlMs = options.lockTtlMs ?? 5_000
  const maxWaitMs = options.maxWaitMs ?? 10_000
  const wallNow = options.wallNow ?? Date.now
  const channel = new FleetChannel(store, namespace.channel('events'), logger)
  const membership = new Membership({ store, probeKey: namespace.key('member-check'), credentialsKey: namespace.key('credentials'), logger })
  const turns = new Turns({ store, channel, membership, logger })
  const values = new RebuildableValues(store, logger, options.quietAfterMs === undefined ? {} : { quietAfterMs: options.quietAfterMs })
  const shared = new SharedCredentials({
    file: new CredentialStore(join(temporaryDirectory(t), 'credentials.json'), STATEMENT),
    store,
    key: namespace.key('credentials'),
    logger,
    onPutBack: (credentials) => { coordination.credentialsPutBack(credentials) }
  })
  const superseded = new SupersededClients({ store, key: namespace.key('superseded-clients'), logger, wallNow })
  const coordination = new FleetTokenCoordination({ store, namespace, channel, turns, membership, credentials: shared, superseded, values, lockTtlMs, maxWaitMs, logger, wallNow })
  const cache = new FleetCache({ store, namespace, turns, channel, membership, lockTtlMs, maxWaitMs, maxEntryBytes: 1024 * 1024, trouble: new RecentTrouble(100), values, logger, wallNow })
  if (await membership.check() !== 'not-member') await channel.start()
  t.teardown(async () => {
    coordination.close()
    values.close()
    await channel.close()
  })
  return { store, namespace, channel, membership, turns, values, shared, coordination, cache, logs }
}
