// Fleet mode, assembled from the settings: the sealed Redis store and
// the fleet's side of each module that decides (the broker's coordination
// and credentials, the cache's second level, the rate-limit counters).
// app.ts plugs these into the same modules a lone instance uses.
import type { FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { KeyObject } from 'node:crypto'
import type { Logger } from 'pino'
import { CredentialStore } from '../adobe/credential-store.js'
import type { AdobeSettings, CacheSettings, FleetSettings, UpstreamSettings } from '../config/settings.js'
import type { ProxyError } from '../kernel/errors.js'
import { createStore } from '../store/create-store.js'
import { stateKey } from '../store/encryption-keys.js'
import { stateNamespace, type StateNamespace } from '../store/namespace.js'
import { SealedStore } from '../store/sealed-store.js'
import type { OperationObserver, StateStore, StoreStats } from '../store/state-store.js'
import { FLEET_KEY_MISMATCH, fleetKeyMismatch } from './errors.js'
import { FleetChannel, RecentTrouble } from './fleet-channel.js'
import { Membership, type MembershipState } from './membership.js'
import { fleetRateLimitStore } from './rate-limit-store.js'
import { FleetCache } from './shared-cache.js'
import { SharedCredentials } from './shared-credentials.js'
import { SupersededClients, type SupersededClient } from './superseded-clients.js'
import { FleetTokenCoordination } from './token-coordination.js'
import { Turns, type TurnCounts } from './turns.js'
import { RebuildableValues } from './unusable-values.js'

export interface FleetStatus extends StoreStats {
  /** Where, without credentials. */
  redis: string
  /** This application's keys start with this (the prefix and a fingerprint: nothing secret). */
  keyPrefix: string
  /** 'not-member': this instance cannot open the fleet's sealed values (membership.ts). */
  membership: MembershipState
  /** Turns taken alone, lock attempts released after no answer, notices and writes skipped. */
  turns: TurnCounts
  /** Values in the store that could not be used here, and notices that did not open. */
  unusableValues: number
  unreadableNotices: number
  /** Clients registered apart from the fleet and no longer used: revoke them at Adobe. */
  supersededClients: SupersededClient[]
}

/** Why /readyz says no, when the fleet is the reason. */
export interface FleetNotReady { code: string, reason: 'fleet_key_mismatch', detail: string }

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
  /** Waits briefly for the first connection (until then every call is refused as unavailable), checks membership, and subscribes. */
  start: () => Promise<void>
  close: () => Promise<void>
  status: () => FleetStatus
  /** The answer for a caller when this instance may not serve (not a member), at once and without I/O. */
  refusal: () => ProxyError | undefined
  notReady: () => FleetNotReady | undefined
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
  /** Tests shorten the quiet span that ends a run of unusable values (and its log line). */
  unusableQuietAfterMs?: number
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
  const namespace = namespaceOf(statement)
  const channel = new FleetChannel(store, namespace.channel('events'), logger)
  // Membership is about the key list, not the statement: one for every token side.
  const membership = new Membership({ store, probeKey: namespace.key('member-check'), credentialsKey: statement === undefined ? undefined : namespace.key('credentials'), logger, readOnly: deps.readOnly })
  const turns = new Turns({ store, channel, membership, logger })
  const values = new RebuildableValues(store, logger, deps.unusableQuietAfterMs === undefined ? {} : { quietAfterMs: deps.unusableQuietAfterMs })
  const tokenSide = (forStatement: string | undefined, ns: StateNamespace, events: FleetChannel): TokenSide & { superseded: SupersededClients } => {
    const sideTurns = events === channel ? turns : new Turns({ store, channel: events, membership, logger })
    const superseded = new SupersededClients({ store, key: ns.key('superseded-clients'), logger, wallNow })
    const shared = forStatement === undefined
      ? undefined
      : new SharedCredentials({ file: new CredentialStore(adobe.credentialsFile, forStatement), store, key: ns.key('credentials'), logger, onPutBack: (put) => { tokens.credentialsPutBack(put) }, isMember: () => membership.state === 'member' })
    const tokens: FleetTokenCoordination = new FleetTokenCoordination({
      store,
      namespace: ns,
      channel: events,
      turns: sideTurns,
      membership,
      credentials: shared,
      superseded,
      values,
      lockTtlMs: settings.lockTtlMs,
      // A registration and a token call, each up to its timeout, and a crashed holder's lock.
      maxWaitMs: 2 * adobe.authTimeoutMs + settings.lockTtlMs,
      logger,
      wallNow,
      ...(deps.reconcileIntervalMs === undefined ? {} : { reconcileIntervalMs: deps.reconcileIntervalMs })
    })
    return { coordination: tokens, credentials: shared, superseded }
  }
  const { coordination, credentials, superseded } = tokenSide(statement, namespace, channel)
  // Shared by the two calls on a caller's path (its rate-limit count, its cache lookup).
  const trouble = new RecentTrouble(settings.commandTimeoutMs)
  const cache = new FleetCache({ store, namespace, turns, channel, membership, lockTtlMs: settings.lockTtlMs, maxWaitMs: 2 * upstream.headersTimeoutMs, maxEntryBytes: cacheSettings.maxEntryBytes, trouble, values, logger, wallNow })
  // A member hears the fleet's notices; one that is not, does not even listen (nothing it could open).
  membership.onChange((state) => { void (state === 'not-member' ? channel.close() : channel.start().catch(() => {})) })
  return {
    store,
    coordination,
    credentials,
    cache,
    rateLimitStore: fleetRateLimitStore(store, namespace, trouble, membership, logger),
    start: async () => {
      if (!await store.waitUntilUp(FIRST_CONNECTION_WAIT_MS)) logger.warn({ redis: settings.redis.target }, 'redis is not reachable yet: serving on this instance\'s own state until it is')
      if (await membership.check() !== 'not-member') await channel.start()
    },
    close: async () => {
      coordination.close()
      values.close()
      await channel.close()
      await store.close()
    },
    status: () => ({
      redis: settings.redis.target,
      keyPrefix: namespace.base,
      ...store.stats(),
      membership: membership.state,
      turns: { ...turns.counts },
      unusableValues: values.total,
      unreadableNotices: channel.unreadable,
      supersededClients: superseded.list()
    }),
    refusal: () => membership.state === 'not-member' ? fleetKeyMismatch() : undefined,
    notReady: () => membership.state === 'not-member'
      ? { code: FLEET_KEY_MISMATCH, reason: 'fleet_key_mismatch', detail: membership.mismatch ?? 'this instance cannot open the fleet\'s sealed values' }
      : undefined,
    tokenSideFor: (next) => {
      const nextNamespace = namespaceOf(next)
      const nextChannel = new FleetChannel(store, nextNamespace.channel('events'), logger)
      return { ...tokenSide(next, nextNamespace, nextChannel), start: async () => { await nextChannel.start() }, close: async () => { await nextChannel.close() } }
    },
    useStateKeys: (keys) => {
      if (!(store instanceof SealedStore)) return
      store.useKeys(keys.map(stateKey))
      // A pod that could not open the fleet's values may open them with the new list (and the reverse).
      void membership.check()
    }
  }
}
