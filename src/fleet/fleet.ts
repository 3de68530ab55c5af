// Fleet mode, assembled from the settings: the sealed Redis store and
// the fleet's side of each module that decides (the broker's coordination
// and credentials, the cache's second level, the rate-limit counters).
// app.ts plugs these into the same modules a lone instance uses.
import type { FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { KeyObject } from 'node:crypto'
import type { Logger } from 'pino'
import { CredentialStore } from '../adobe/credential-store.js'
import type { AdobeSettings, CacheSettings, FleetSettings, UpstreamSettings } from '../config/settings.js'
import { createStore } from '../store/create-store.js'
import { stateKey } from '../store/encryption-keys.js'
import { stateNamespace, type StateNamespace } from '../store/namespace.js'
import { SealedStore } from '../store/sealed-store.js'
import type { OperationObserver, StateStore, StoreStats } from '../store/state-store.js'
import { FleetChannel, RecentTrouble } from './fleet-channel.js'
import { fleetRateLimitStore } from './rate-limit-store.js'
import { FleetCache } from './shared-cache.js'
import { SharedCredentials } from './shared-credentials.js'
import { FleetTokenCoordination } from './token-coordination.js'

export interface FleetStatus extends StoreStats {
  /** Where, without credentials. */
  redis: string
  /** This application's keys start with this (the prefix and a fingerprint: nothing secret). */
  keyPrefix: string
}

/** The broker's side of the fleet for one software statement: its state lives under that statement's namespace. */
export interface TokenSide {
  readonly coordination: FleetTokenCoordination
  readonly credentials: SharedCredentials | undefined
}

/** The token side for a statement a reload brought (ops/switchable-broker.ts): its own notices, started and closed with it. */
export interface StatementSide extends TokenSide {
  start: () => Promise<void>
  close: () => Promise<void>
}

export interface Fleet extends TokenSide {
  readonly store: StateStore
  readonly cache: FleetCache
  readonly rateLimitStore: FastifyRateLimitStoreCtor
  /** Waits briefly for the first connection (until then every call is refused as unavailable) and subscribes. */
  start: () => Promise<void>
  close: () => Promise<void>
  status: () => FleetStatus
  /**
   * The token side for another statement: one registration per fleet and
   * statement, as at start, because an instance started with that statement
   * uses the same namespace. The cache and rate-limit counters stay where they
   * are until a restart.
   */
  tokenSideFor: (statement: string) => StatementSide
  /** A reloaded STATE_ENCRYPTION_KEY: the first key seals from now on, all open. */
  useStateKeys: (keys: readonly KeyObject[]) => void
}

/** How long start-up waits for Redis before serving on its own (it connects later by itself). */
const FIRST_CONNECTION_WAIT_MS = 1_000

export interface FleetDependencies {
  logger: Logger
  onOperation?: OperationObserver
  wallNow?: () => number
  /** Tests shorten the periodic look at the shared state. */
  reconcileIntervalMs?: number
  /** `cmu-proxy check`: read the fleet's state, never write it (not even a re-seal). */
  readOnly?: boolean
}

/** What the fleet needs from the other sections: whose state it shares, and how long each turn may take. */
export interface FleetSections {
  fleet: FleetSettings
  adobe: Pick<AdobeSettings, 'softwareStatement' | 'staticCredentials' | 'credentialsFile' | 'authTimeoutMs'>
  upstream: Pick<UpstreamSettings, 'headersTimeoutMs'>
  cache: Pick<CacheSettings, 'maxEntryBytes'>
}

export function createFleet ({ fleet: settings, adobe, upstream, cache: cacheSettings }: FleetSections, deps: FleetDependencies): Fleet {
  const logger = deps.logger.child({ component: 'fleet' })
  const statement = adobe.softwareStatement
  const store = createStore({
    redis: settings.redis,
    encryptionKeys: settings.stateKeys.map(stateKey),
    logger,
    onOperation: deps.onOperation,
    readOnly: deps.readOnly
  })
  const wallNow = deps.wallNow ?? Date.now
  const namespaceOf = (forStatement: string | undefined): StateNamespace => {
    const identity = forStatement !== undefined ? { softwareStatement: forStatement } : { clientId: adobe.staticCredentials?.client_id ?? '' }
    // A Cluster keeps the application's keys in one hash slot, so its multi-key commands stay legal.
    return stateNamespace(settings.keyPrefix, identity, { hashTag: settings.redis.topology.kind === 'cluster' })
  }
  const tokenSide = (forStatement: string | undefined, ns: StateNamespace, events: FleetChannel): TokenSide => {
    const shared = forStatement === undefined
      ? undefined
      : new SharedCredentials({ file: new CredentialStore(adobe.credentialsFile, forStatement), store, key: ns.key('credentials'), logger })
    const tokens = new FleetTokenCoordination({
      store,
      namespace: ns,
      channel: events,
      credentials: shared,
      lockTtlMs: settings.lockTtlMs,
      // A registration and a token call, each up to its timeout, and a crashed holder's lock.
      maxWaitMs: 2 * adobe.authTimeoutMs + settings.lockTtlMs,
      logger,
      wallNow,
      ...(deps.reconcileIntervalMs === undefined ? {} : { reconcileIntervalMs: deps.reconcileIntervalMs })
    })
    return { coordination: tokens, credentials: shared }
  }
  const namespace = namespaceOf(statement)
  const channel = new FleetChannel(store, namespace.channel('events'), logger)
  const { coordination, credentials } = tokenSide(statement, namespace, channel)
  // Shared by the two calls on a caller's path (its rate-limit count, its cache lookup).
  const trouble = new RecentTrouble(settings.commandTimeoutMs)
  const cache = new FleetCache({ store, namespace, channel, lockTtlMs: settings.lockTtlMs, maxWaitMs: 2 * upstream.headersTimeoutMs, maxEntryBytes: cacheSettings.maxEntryBytes, trouble, logger, wallNow })
  return {
    store,
    coordination,
    credentials,
    cache,
    rateLimitStore: fleetRateLimitStore(store, namespace, trouble, logger),
    start: async () => {
      if (!await store.waitUntilUp(FIRST_CONNECTION_WAIT_MS)) logger.warn({ redis: settings.redis.target }, 'redis is not reachable yet: serving on this instance\'s own state until it is')
      await channel.start()
    },
    close: async () => {
      coordination.close()
      await channel.close()
      await store.close()
    },
    status: () => ({ redis: settings.redis.target, keyPrefix: namespace.base, ...store.stats() }),
    tokenSideFor: (next) => {
      const nextNamespace = namespaceOf(next)
      const nextChannel = new FleetChannel(store, nextNamespace.channel('events'), logger)
      return { ...tokenSide(next, nextNamespace, nextChannel), start: async () => { await nextChannel.start() }, close: async () => { await nextChannel.close() } }
    },
    useStateKeys: (keys) => {
      if (store instanceof SealedStore) store.useKeys(keys.map(stateKey))
    }
  }
}
