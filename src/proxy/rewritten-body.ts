// An ESM answer's body with its HAL links under the local prefix
// (hal-links.ts), made within a byte budget: for report-origin.ts, which
// decides which answers are rewritten.
//
// Besides the raw body (charged by the caller), a rewrite holds copies of the
// decoded body: for gzip the decoded chunks and the decoded body, then its
// text, the rewritten text and the rewritten bytes. Each is charged as it is
// made (the decoded chunks one by one as zlib gives them, so a body labelled
// gzip is charged for what it decodes to, never for what it claims, and a gzip
// bomb stops one chunk past the bound); past the budget the rewrite is shed
// (503). All of it is given back once the rewrite is done: the caller charges
// the body it hands on. Not charged: the gzip output's own chunks while it is
// encoded, which the dead decoded chunks (still charged) more than cover.
import { promisify } from 'node:util'
import { createGunzip, gzip } from 'node:zlib'
import type { ByteBudget } from '../cache/buffered-fetch.js'
import { overloaded } from '../kernel/errors.js'
import { localLinks, type HalKind } from './hal-links.js'

const gzipAsync = promisify(gzip)

/**
 * The body with its links under `prefix`, encoded as it came (identity or
 * gzip: upstream/origin.ts refused any other); the very same bytes when no
 * link needed it, or when a gzip body does not decode within `maxBytes`.
 * Throws 503 CMU_PROXY_OVERLOADED when the budget cannot hold a copy.
 */
export async function rewritten (raw: Buffer, encoding: string | string[] | undefined, kind: HalKind, prefix: string, maxBytes: number, budget: ByteBudget): Promise<Buffer> {
  const gzipped = typeof encoding === 'string' && encoding.trim().toLowerCase() === 'gzip'
  let held = 0
  const charge = (bytes: number): void => {
    if (!budget.take(bytes)) throw overloaded()
    held += bytes
  }
  try {
    const decoded = gzipped ? await gunzipWithin(raw, maxBytes, charge) : raw
    // Larger than the bound once decoded, or not gzip after all: passed on as it came.
    if (decoded === undefined) return raw
    // latin1: one character per byte, so every byte but the inserted prefixes comes back as it was, whatever the charset.
    charge(decoded.length)
    const text = decoded.toString('latin1')
    const local = localLinks(text, kind, prefix)
    if (local === text) return raw
    charge(2 * local.length)
    const bytes = Buffer.from(local, 'latin1')
    return gzipped ? await gzipAsync(bytes) : bytes
  } finally {
    budget.give(held)
  }
}

/** The copies of the decoded body a gzip rewrite holds at most (chunks, decoded, text, rewritten text, rewritten bytes); prefixes aside. */
export const MAX_WORKING_COPIES = 5

/**
 * `raw` gunzipped, every member (as zlib decodes them), each decoded chunk
 * charged as it comes; undefined when it decodes to more than `maxBytes` or
 * is not gzip. Throws what `charge` throws (the budget is spent).
 */
export async function gunzipWithin (raw: Buffer, maxBytes: number, charge: (bytes: number) => void): Promise<Buffer | undefined> {
  const gunzip = createGunzip()
  const chunks: Buffer[] = []
  let size = 0
  return await new Promise((resolve, reject) => {
    const stop = (outcome: () => void): void => {
      gunzip.removeAllListeners('data').on('error', () => {}).destroy()
      outcome()
    }
    gunzip.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > maxBytes) return stop(() => { resolve(undefined) })
      try {
        charge(chunk.length)
      } catch (err) {
        return stop(() => { reject(err) })
      }
      chunks.push(chunk)
    })
    gunzip.once('end', () => {
      try {
        // The decoded body is one more copy while the chunks are still held.
        charge(size)
        resolve(Buffer.concat(chunks, size))
      } catch (err) {
        reject(err)
      }
    })
    gunzip.once('error', () => { resolve(undefined) })
    gunzip.end(raw)
  })
}
