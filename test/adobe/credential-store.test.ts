import { open, readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { CredentialStore, proveWritable, statementFingerprint } from '../../src/adobe/credential-store.js'
import { CredentialsNotWritable } from '../../src/adobe/errors.js'

t.test('save then load round-trips, privately and atomically', async (t) => {
  const dir = t.testdir()
  const store = new CredentialStore(join(dir, 'nested', 'credentials.json'), 'h.p.s')
  t.same(await store.load(), { status: 'absent' })
  await store.save({ client_id: 'id', client_secret: 'secret', client_id_issued_at: 5 }, new Date('2026-01-01T00:00:00Z'))
  t.same(await store.load(), { status: 'found', credentials: { client_id: 'id', client_secret: 'secret', client_id_issued_at: 5 } }, 'credentials saved without a generation come back without one (the save time is not a generation)')
  t.equal((await stat(store.path)).mode & 0o777, 0o600, 'file 0600')
  t.equal((await stat(join(dir, 'nested'))).mode & 0o777, 0o700, 'new directory 0700')
  t.same(await readdir(join(dir, 'nested')), ['credentials.json'], 'no temp file left behind')
  const stored = JSON.parse(await readFile(store.path, 'utf8'))
  t.equal(stored.statement_sha256, statementFingerprint('h.p.s'))
  t.equal(stored.registered_at, '2026-01-01T00:00:00.000Z')
  t.notOk(JSON.stringify(stored).includes('h.p.s'), 'the statement itself is not stored')

  await store.save({ client_id: 'id2', client_secret: 'secret2', generation: 1_700_000_000_000 })
  t.match(await store.load(), { status: 'found', credentials: { client_id: 'id2', generation: 1_700_000_000_000 } }, 'overwrites, keeping the generation the credentials carry')
})

t.test('credentials of another statement, and broken files, are not used', async (t) => {
  const dir = t.testdir({ 'bad.json': '{not json', 'partial.json': '{"client_id":"x"}' })
  const path = join(dir, 'credentials.json')
  await new CredentialStore(path, 'statement-a').save({ client_id: 'a', client_secret: 'b' })
  t.same(await new CredentialStore(path, 'statement-b').load(), { status: 'other-statement' })
  t.same(await new CredentialStore(join(dir, 'bad.json'), 's').load(), { status: 'unreadable', reason: 'not JSON' })
  t.match(await new CredentialStore(join(dir, 'partial.json'), 's').load(), { status: 'unreadable' })
  t.match(await new CredentialStore(dir, 's').load(), { status: 'unreadable', reason: 'EISDIR' })
})

t.test('the file keeps the last few other statements\' credentials (a reload that switches back registers nothing); older files read as before', async (t) => {
  const dir = t.testdir({ 'old-format.json': JSON.stringify({ client_id: 'a', client_secret: 'sa', statement_sha256: statementFingerprint('statement-a'), registered_at: '2026-01-01T00:00:00.000Z' }), 'null.json': 'null' })
  const path = join(dir, 'old-format.json')
  t.match(await new CredentialStore(path, 'statement-a').load(), { status: 'found', credentials: { client_id: 'a' } }, 'a file of an older version')
  for (const name of ['b', 'c', 'd', 'e']) await new CredentialStore(path, `statement-${name}`).save({ client_id: name, client_secret: `s${name}`, generation: 7 })
  const stored = JSON.parse(await readFile(path, 'utf8'))
  t.equal(stored.client_id, 'e', 'the one saved last is the top-level entry (what older versions read)')
  t.same(stored.other_statements.map((entry: { client_id: string }) => entry.client_id), ['d', 'c', 'b'], 'three others, newest first: the oldest is dropped')
  t.same(await new CredentialStore(path, 'statement-c').load(), { status: 'found', credentials: { client_id: 'c', client_secret: 'sc', generation: 7 } })
  t.same(await new CredentialStore(path, 'statement-a').load(), { status: 'other-statement' }, 'dropped')
  await new CredentialStore(path, 'statement-c').save({ client_id: 'c2', client_secret: 'sc2' })
  const again = JSON.parse(await readFile(path, 'utf8'))
  t.same([again.client_id, ...again.other_statements.map((entry: { client_id: string }) => entry.client_id)], ['c2', 'e', 'd', 'b'], 'a statement saved again replaces its own entry')
  t.same(await new CredentialStore(join(dir, 'null.json'), 's').load(), { status: 'unreadable', reason: 'not a JSON object' })
})

t.test('a failed rename rejects and leaves no temp file behind', async (t) => {
  // A non-empty directory where the file should go makes rename fail, even for root.
  const dir = t.testdir({ 'credentials.json': { 'keep.txt': 'x' } })
  const store = new CredentialStore(join(dir, 'credentials.json'), 's')
  await t.rejects(store.save({ client_id: 'new', client_secret: 'new-secret' }))
  t.same((await readdir(dir)).sort(), ['credentials.json'], 'temp file removed')
})

t.test('a failed write or fsync rejects and removes the temp file that holds the secret', async (t) => {
  for (const failing of ['writeFile', 'sync'] as const) {
    const dir = t.testdir()
    // The real file system, except that the temp file's handle fails at one step (a full disk, an I/O error).
    const openFailing: typeof open = async (path, flags, mode) => {
      const handle = await open(path, flags, mode)
      if (!String(path).endsWith('.tmp')) return handle
      handle[failing] = async () => { throw Object.assign(new Error(`${failing} failed`), { code: 'ENOSPC' }) }
      return handle
    }
    const store = new CredentialStore(join(dir, 'credentials.json'), 's', openFailing)
    await t.rejects(store.save({ client_id: 'new', client_secret: 'new-secret' }), { code: 'ENOSPC' }, `${failing} fails`)
    t.same(await readdir(dir), [], `${failing}: no temp file left with the secret in it`)
  }
})

t.test('proveWritable: creates the directory as save() does and leaves nothing behind', async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'data', 'credentials.json')
  await proveWritable(path)
  t.equal((await stat(join(dir, 'data'))).mode & 0o777, 0o700, 'new directory 0700')
  t.same(await readdir(join(dir, 'data')), [], 'the temporary file is gone, and no credentials file was made')
  await new CredentialStore(path, 's').save({ client_id: 'id', client_secret: 'secret' })
  await proveWritable(path)
  t.same(await readdir(join(dir, 'data')), ['credentials.json'], 'an existing file is left alone')
})

t.test('proveWritable: each way it cannot write names the real errno', async (t) => {
  const dir = t.testdir({ file: 'x', 'credentials.json': { 'keep.txt': 'x' } })
  const failingSync: typeof open = async (path, flags, mode) => {
    const handle = await open(path, flags, mode)
    handle.sync = async () => { throw Object.assign(new Error('sync failed'), { code: 'ENOSPC' }) }
    return handle
  }
  const rows: Array<[string, () => Promise<void>, string]> = [
    ['a regular file where a directory should be', async () => { await proveWritable(join(dir, 'file', 'credentials.json')) }, 'ENOTDIR'],
    ['a regular file deeper up the path', async () => { await proveWritable(join(dir, 'file', 'sub', 'credentials.json')) }, 'ENOTDIR'],
    ['a directory where the file should go (rename cannot replace it)', async () => { await proveWritable(join(dir, 'credentials.json')) }, 'EISDIR'],
    ['a disk that fails the fsync', async () => { await proveWritable(join(dir, 'full', 'credentials.json'), failingSync) }, 'ENOSPC']
  ]
  for (const [name, prove, errno] of rows) {
    const err = await prove().then(() => undefined, (failure: unknown) => failure)
    t.type(err, CredentialsNotWritable, name)
    t.match(err, { errno, message: new RegExp(`^CREDENTIALS_FILE /.+ cannot be written \\(${errno}`) }, `${name}: ${errno}, in one line naming the variable`)
  }
  t.same(await readdir(join(dir, 'full')), [], 'no temporary file left after a failed fsync')
})

t.test('save: a regular file where the directory should be fails with ENOTDIR, not mkdir\'s EEXIST', async (t) => {
  const dir = t.testdir({ file: 'x' })
  await t.rejects(new CredentialStore(join(dir, 'file', 'credentials.json'), 's').save({ client_id: 'id', client_secret: 'secret' }), { code: 'ENOTDIR' })
})
