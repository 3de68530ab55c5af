// Reads one mounted secret file (NAME_FILE, load.ts) without trusting what the
// path now points at: a file swapped for a symlink to /dev/zero, a FIFO or a
// multi-GB file would otherwise block the event loop or exhaust memory, at
// start and at every reload. A symlink to a regular file is fine: Kubernetes
// Secret volumes are symlinks through `..data`.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs'

/** A key list or a statement is a few KiB; a CA bundle some hundred. More is a mistake. */
export const SECRET_FILE_MAX_BYTES = 1024 * 1024

export type SecretFileContent = { ok: true, content: string } | { ok: false, problem: string }

/**
 * Opens without blocking (a FIFO would wait for a writer), requires a regular
 * file of at most SECRET_FILE_MAX_BYTES (fstat on the open file, so what was
 * checked is what is read), and never reads more than that, even from a file
 * that grows meanwhile. `problem` says why not, without the content.
 */
export function readSecretFile (path: string): SecretFileContent {
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0))
  } catch (err) {
    return { ok: false, problem: `cannot be read (${errnoOf(err)})` }
  }
  try {
    const stats = fstatSync(fd)
    if (!stats.isFile()) return { ok: false, problem: 'is not a regular file' }
    if (stats.size > SECRET_FILE_MAX_BYTES) return { ok: false, problem: 'is larger than 1 MiB' }
    const buffer = Buffer.alloc(SECRET_FILE_MAX_BYTES + 1)
    let length = 0
    while (length < buffer.length) {
      const read = readSync(fd, buffer, length, buffer.length - length, null)
      if (read === 0) break
      length += read
    }
    if (length > SECRET_FILE_MAX_BYTES) return { ok: false, problem: 'is larger than 1 MiB' }
    return { ok: true, content: buffer.toString('utf8', 0, length) }
  } catch (err) {
    return { ok: false, problem: `cannot be read (${errnoOf(err)})` }
  } finally {
    closeSync(fd)
  }
}

function errnoOf (err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'unreadable'
}
