// What went wrong with Redis, in words an operator can act on: Redis's own
// error code (an error reply starts with it: https://redis.io/docs/latest/develop/reference/protocol-spec/#simple-errors)
// with what it means for this proxy, Node's socket or TLS error code, or a
// timeout. Never the rest of a reply (Redis may echo our arguments), never a
// credential.
import { ErrorReply, TimeoutError } from '@redis/client'
import { DeadlineError } from './redis-deadline.js'
import type { StoreProblem } from './state-store.js'

/** Codes that need an operator: retrying the same settings gets the same answer. */
const EXPLAINED: Record<string, { meaning: string, configuration: boolean }> = {
  WRONGPASS: { meaning: 'wrong user name or password (REDIS_PASSWORD or REDIS_PASSWORD_FILE, REDIS_USERNAME, or the user in REDIS_URL)', configuration: true },
  NOAUTH: { meaning: 'Redis requires a password: set REDIS_PASSWORD or REDIS_PASSWORD_FILE', configuration: true },
  NOPERM: { meaning: 'the ACL user may not run a command the proxy needs (GET, SET, DEL, EVAL, PUBLISH, SUBSCRIBE, PING, CLIENT SETNAME)', configuration: true },
  MOVED: { meaning: 'REDIS_URL is a node of a Redis Cluster: set REDIS_CLUSTER=true', configuration: true },
  ASK: { meaning: 'REDIS_URL is a node of a Redis Cluster: set REDIS_CLUSTER=true', configuration: true },
  // Transient during a Sentinel failover (node-redis asks the sentinels again); for good when REDIS_URL names a replica.
  READONLY: { meaning: 'this node is a read-only replica (a failover under way, or REDIS_URL names a replica: point it at the master, or use REDIS_SENTINELS)', configuration: false },
  CLUSTERDOWN: { meaning: 'the Redis Cluster does not serve every hash slot right now', configuration: false },
  MASTERDOWN: { meaning: 'this replica has lost its master', configuration: false },
  LOADING: { meaning: 'Redis is loading its data set into memory', configuration: false },
  OOM: { meaning: 'Redis is out of memory (maxmemory)', configuration: false }
}

const CA_HINT = 'REDIS_TLS_CA_FILE must hold the CA that signed Redis\'s certificate'
const CLIENT_HINT = 'Redis asks for a client certificate: set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE to one its CA signed'
/** Node's TLS failures (err.code): all fixed by settings, not by waiting. */
const TLS_HINTS: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: CA_HINT,
  SELF_SIGNED_CERT_IN_CHAIN: CA_HINT,
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: CA_HINT,
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: CA_HINT,
  CERT_HAS_EXPIRED: 'Redis\'s certificate has expired',
  CERT_NOT_YET_VALID: 'Redis\'s certificate is not valid yet',
  ERR_TLS_CERT_ALTNAME_INVALID: 'Redis\'s certificate does not name the host in the settings',
  ERR_SSL_WRONG_VERSION_NUMBER: 'that port does not speak TLS (rediss:// to a plain port?)',
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: CLIENT_HINT,
  ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE: CLIENT_HINT,
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: 'Redis refused the client certificate (REDIS_TLS_CERT_FILE): not signed by a CA it trusts?'
}

/** Redis's error code (the first word of an error reply), or undefined when `err` is no error reply. */
export function errorReplyCode (err: unknown): string | undefined {
  return err instanceof ErrorReply ? (err.message.split(' ', 1)[0] ?? '') : undefined
}

/** A StoreProblem for any failure of a command or a connection. */
export function describeProblem (err: unknown, timeoutMs: number): StoreProblem {
  if (err instanceof DeadlineError || err instanceof TimeoutError) return { reason: `no answer within ${timeoutMs} ms`, configuration: false }
  const code = errorReplyCode(err)
  if (code !== undefined) {
    const explained = EXPLAINED[code]
    return explained === undefined ? { reason: `Redis answered ${code}`, configuration: false } : { reason: `Redis answered ${code}: ${explained.meaning}`, configuration: explained.configuration }
  }
  const { code: systemCode, message } = (typeof err === 'object' && err !== null ? err : {}) as { code?: unknown, message?: unknown }
  const hint = typeof systemCode === 'string' ? TLS_HINTS[systemCode] : undefined
  if (hint !== undefined) return { reason: `TLS: ${String(systemCode)} (${hint})`, configuration: true }
  if (typeof systemCode === 'string') return { reason: systemCode, configuration: false }
  if (typeof message === 'string') return { reason: message, configuration: false }
  return { reason: typeof err === 'string' ? err : 'unknown error', configuration: false }
}
