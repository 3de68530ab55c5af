// Fleet members for the fleet tests: in-process proxies sharing one real
// redis-server (redis-server.ts), each with its own, initially empty,
// credentials file, against the sandbox.
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { Test } from 'tap'
import type { Sandbox } from '../../src/sandbox/server.js'
import { makeSoftwareStatement } from '../../src/sandbox/statement.js'
import { call, eventually, startProxy, temporaryDirectory, type RunningProxy } from './app.js'
import { rawRedisClient, type RedisServer } from './redis-server.js'

export const KEY = randomBytes(32)
/**
 * Roomy timings for the tests that count calls: one instance whose event loop
 * stalls past a command timeout (a loaded CI machine, four test files at a
 * time) rightly acts alone, and would make a second token call the test did
 * not expect. The lock TTL stays at least three command timeouts (config.ts).
 */
export const LOCK_TTL_MS = 9_000
export const COMMAND_TIMEOUT_MS = 3_000
/**
 * Shorter timings, for the tests that measure waits on a dead holder or a
 * frozen Redis: short enough to tell one wait from two, long enough that a
 * loaded machine's stall is not taken for a hung Redis.
 */
export const SHORT_LOCK_TTL_MS = 1_200
export const SHORT_COMMAND_TIMEOUT_MS = 400
export const SHORT_TIMINGS = { REDIS_LOCK_TTL_MS: String(SHORT_LOCK_TTL_MS), REDIS_COMMAND_TIMEOUT_MS: String(SHORT_COMMAND_TIMEOUT_MS) }
export const ADMIN = 'fleet-admin-key-0123456789'

export interface MemberOptions {
  statement: string
  env?: Record<string, string | undefined>
  credentialsFile?: string
  /** A clock the test moves (both the deadline and the wall clock of the member). */
  now?: () => number
  fleetReconcileIntervalMs?: number
}

export function fleetEnv (redis: RedisServer, env: Record<string, string | undefined> = {}): Record<string, string> {
  const merged: Record<string, string | undefined> = {
    REDIS_URL: redis.url,
    STATE_ENCRYPTION_KEY: KEY.toString('base64'),
    REDIS_LOCK_TTL_MS: String(LOCK_TTL_MS),
    REDIS_COMMAND_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS),
    TOKEN_RETRY_BASE_MS: '50',
    TOKEN_RETRY_MAX_MS: '500',
    ADMIN_API_KEY: ADMIN,
    LOG_LEVEL: 'info',
    ...env
  }
  return Object.fromEntries(Object.entries(merged).filter((entry): entry is [string, string] => entry[1] !== undefined))
}

/** One in-process member with its own, initially empty, credentials file. */
export async function member (t: Test, sandbox: Sandbox, redis: RedisServer, options: MemberOptions): Promise<RunningProxy> {
  return await startProxy(t, sandbox, {
    statement: options.statement,
    credentialsFile: options.credentialsFile ?? join(temporaryDirectory(t), 'credentials.json'),
    env: fleetEnv(redis, options.env),
    ...(options.now === undefined ? {} : { now: options.now }),
    ...(options.fleetReconcileIntervalMs === undefined ? {} : { fleetReconcileIntervalMs: options.fleetReconcileIntervalMs })
  })
}

export async function fleetOf (t: Test, sandbox: Sandbox, redis: RedisServer, n: number, env?: Record<string, string | undefined>, statement = makeSoftwareStatement()): Promise<RunningProxy[]> {
  return await Promise.all(Array.from({ length: n }, async () => await member(t, sandbox, redis, { statement, ...(env === undefined ? {} : { env }) })))
}

export const rawRedis = rawRedisClient

/** True once every member answers `path` with 200 (polled up to `timeoutMs`). */
export async function allAnswerOk (fleet: RunningProxy[], path: string, timeoutMs = 2_000): Promise<boolean> {
  return await eventually(async () => (await Promise.all(fleet.map(async (p) => (await call(p.url, path)).status))).every((s) => s === 200), timeoutMs)
}

/** How many times `member` has sent `operation` (e.g. 'publish') to Redis, from its /metrics. */
export async function storeOperations (member: RunningProxy, operation: string): Promise<number> {
  const metrics = (await call(member.url, '/metrics')).text
  const line = metrics.split('\n').find((l) => l.startsWith(`cmu_proxy_redis_operation_duration_seconds_count{operation="${operation}"} `))
  return Number(line?.split(' ')[1] ?? 0)
}

/** How many times `member` has tried to take a fleet lock (its Redis `lock.obtain` count in /metrics). */
export async function lockAttempts (member: RunningProxy): Promise<number> {
  return await storeOperations(member, 'lock.obtain')
}

/**
 * True once each member has tried a fleet lock more times than `before` (its
 * counts then): with the lock held elsewhere, it is waiting on the holder's
 * notice (a waiter registers for the notice before it tries the lock).
 */
export async function waitingOnLock (members: RunningProxy[], before: number[]): Promise<boolean> {
  return await eventually(async () => (await Promise.all(members.map(lockAttempts))).every((n, i) => n > (before[i] ?? 0)), 5_000)
}

export const urlOf = (fleet: RunningProxy[], i: number): string => fleet[i % fleet.length]?.url ?? ''
export const statuses = (answers: Array<{ status: number }>): number[] => [...new Set(answers.map((a) => a.status))]
