// Persists the registered client credentials next to the fingerprint of the
// software statement they came from, so a restart reuses them (Adobe: register
// once, re-register only on invalid_client) and a new statement does not pick
// up another application's credentials. Writes are atomic and private (0600).
// The file also keeps the credentials of the last few other statements
// (`other_statements`), so a reload that switches statements (ops/switchable-
// broker.ts) and is given up or reverted does not cost a registration. The
// top-level entry is the one saved last: files of older versions read as before.
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { ClientCredentials } from './dcr-client.js'
import { CredentialsNotWritable } from './errors.js'

interface StoredCredentials extends ClientCredentials {
  statement_sha256: string
  /** ISO 8601: when this file was written (for people; the generation is `generation`). */
  registered_at: string
  /** Other statements' credentials, newest first. */
  other_statements?: StoredCredentials[]
}

/** How many other statements' credentials a file keeps. */
const OTHER_STATEMENTS_KEPT = 3

export type LoadResult =
  | { status: 'found', credentials: ClientCredentials }
  | { status: 'absent' }
  | { status: 'other-statement' }
  | { status: 'unreadable', reason: string }
  /** Where they are kept cannot be read now (the fleet's store is down): not "absent", so never a reason to register. */
  | { status: 'unavailable', reason: string }

/** Where the broker's client credentials persist: this file, or in fleet mode the shared store with this file as its durable copy. */
export interface CredentialSource {
  /** The local file (logs). */
  readonly path: string
  load: () => Promise<LoadResult>
  save: (credentials: ClientCredentials) => Promise<void>
}

/** The same client (another copy of the same credentials), whatever generation each copy says. */
export function sameClient (a: ClientCredentials, b: ClientCredentials): boolean {
  return a.client_id === b.client_id && a.client_secret === b.client_secret
}

/**
 * True only when both copies carry a generation and `a` was registered later.
 * A copy without one (written before generations were kept) is never called
 * newer or older: callers then keep the rule from before (the fleet's copy wins).
 */
export function newerThan (a: ClientCredentials, b: ClientCredentials): boolean {
  return a.generation !== undefined && b.generation !== undefined && a.generation > b.generation
}

export function statementFingerprint (softwareStatement: string): string {
  return createHash('sha256').update(softwareStatement).digest('hex')
}

/** fs/promises' open(); tests pass one whose handle fails, as a full disk would. */
export type OpenFile = typeof open

export class CredentialStore implements CredentialSource {
  readonly path: string
  readonly #fingerprint: string
  readonly #open: OpenFile

  constructor (path: string, softwareStatement: string, openFile: OpenFile = open) {
    this.path = path
    this.#fingerprint = statementFingerprint(softwareStatement)
    this.#open = openFile
  }

  async load (): Promise<LoadResult> {
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      return code === 'ENOENT' ? { status: 'absent' } : { status: 'unreadable', reason: code ?? 'read failed' }
    }
    let stored: Partial<StoredCredentials>
    try {
      stored = JSON.parse(text) as Partial<StoredCredentials>
    } catch {
      return { status: 'unreadable', reason: 'not JSON' }
    }
    if (typeof stored !== 'object' || stored === null) return { status: 'unreadable', reason: 'not a JSON object' }
    if (typeof stored.client_id !== 'string' || typeof stored.client_secret !== 'string' || stored.client_id === '' || stored.client_secret === '') {
      return { status: 'unreadable', reason: 'client_id or client_secret missing' }
    }
    const entry = entriesOf(stored).find((candidate) => candidate.statement_sha256 === this.#fingerprint)
    return entry === undefined ? { status: 'other-statement' } : { status: 'found', credentials: credentialsOf(entry) }
  }

  /** Write to a private temp file, fsync, rename over the old file, fsync the directory. */
  async save (credentials: ClientCredentials, now = new Date()): Promise<void> {
    const others = (await this.#entries()).filter((entry) => entry.statement_sha256 !== this.#fingerprint).slice(0, OTHER_STATEMENTS_KEPT)
    const stored: StoredCredentials = { ...credentials, statement_sha256: this.#fingerprint, registered_at: now.toISOString(), ...(others.length > 0 ? { other_statements: others } : {}) }
    const dir = dirname(this.path)
    await makeDirectory(dir)
    const temp = temporaryPath(this.path)
    const file = await this.#open(temp, 'wx', 0o600)
    try {
      try {
        await file.writeFile(`${JSON.stringify(stored, null, 2)}\n`)
        await file.sync()
      } finally {
        await file.close()
      }
      await rename(temp, this.path)
    } catch (err) {
      // Whatever step failed, a (possibly partial) copy of the secret must not stay behind.
      await unlink(temp).catch(() => {})
      throw err
    }
    await syncDirectory(dir)
  }

  /** Every well-formed entry of the file as it is (none when it is absent or broken: save() then starts afresh). */
  async #entries (): Promise<StoredCredentials[]> {
    try {
      return entriesOf(JSON.parse(await readFile(this.path, 'utf8')) as Partial<StoredCredentials>)
    } catch {
      return []
    }
  }
}

/** The top-level entry, then the other statements' ones; each with the fields this version knows, malformed ones left out. */
function entriesOf (stored: Partial<StoredCredentials>): StoredCredentials[] {
  const all: unknown[] = [stored, ...(Array.isArray(stored.other_statements) ? stored.other_statements : [])]
  return all.flatMap((entry) => {
    const e = entry as Partial<StoredCredentials> | null
    if (typeof e?.client_id !== 'string' || typeof e.client_secret !== 'string' || e.client_id === '' || e.client_secret === '' || typeof e.statement_sha256 !== 'string') return []
    return [{ ...credentialsOf(e as StoredCredentials), statement_sha256: e.statement_sha256, registered_at: String(e.registered_at) }]
  })
}

function credentialsOf (stored: StoredCredentials): ClientCredentials {
  return {
    client_id: stored.client_id,
    client_secret: stored.client_secret,
    ...(typeof stored.client_id_issued_at === 'number' ? { client_id_issued_at: stored.client_id_issued_at } : {}),
    ...(typeof stored.generation === 'number' && Number.isFinite(stored.generation) ? { generation: stored.generation } : {})
  }
}

/**
 * Proves, before anything is registered, that save() can write `path`:
 * creates its directory as save() does, then creates, writes, fsyncs and
 * removes a private temporary file beside it. Credentials that cannot be
 * saved would cost a registration on every start. Rejects with
 * CredentialsNotWritable, naming the errno of the step that failed.
 */
export async function proveWritable (path: string, openFile: OpenFile = open): Promise<void> {
  const temp = temporaryPath(path)
  try {
    await makeDirectory(dirname(path))
    const file = await openFile(temp, 'wx', 0o600)
    try {
      await file.writeFile('{}\n')
      await file.sync()
    } finally {
      await file.close()
    }
    await unlink(temp)
    // rename() cannot replace a directory with the file.
    if ((await stat(path).catch(() => undefined))?.isDirectory() === true) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' })
  } catch (err) {
    await unlink(temp).catch(() => {})
    throw new CredentialsNotWritable(path, (err as NodeJS.ErrnoException).code ?? 'error')
  }
}

function temporaryPath (path: string): string {
  return `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
}

/**
 * mkdir -p, private. Node answers EEXIST when a part of the path is a regular
 * file: that is left to the next step, which names it for what it is (ENOTDIR)
 * instead of the misleading EEXIST.
 */
async function makeDirectory (dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  })
}

async function syncDirectory (dir: string): Promise<void> {
  // Makes the rename durable; some file systems refuse fsync on a directory, which is harmless.
  try {
    const handle = await open(dir, 'r')
    try { await handle.sync() } finally { await handle.close() }
  } catch {}
}
