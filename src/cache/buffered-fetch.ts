// An upstream answer read into memory so it can be cached and shared with
// coalesced waiters, unless it is too large: then the bytes read so far and
// the rest of the stream go to exactly one caller, uncached.
import { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { callerResponseHeaders } from '../proxy/headers.js'
import { transportError } from '../proxy/upstream.js'

export interface BufferedAnswer {
  kind: 'buffered'
  status: number
  headers: Record<string, string | string[]>
  /** All upstream headers, for the storability check. */
  upstreamHeaders: Record<string, string | string[] | undefined>
  body: Buffer
}

export interface StreamedAnswer {
  kind: 'streamed'
  status: number
  headers: Record<string, string | string[]>
  /** The body, for the first caller that claims it; undefined afterwards. */
  claim: () => Readable | undefined
}

export type Answer = BufferedAnswer | StreamedAnswer

export async function readAnswer (response: Dispatcher.ResponseData, maxBytes: number): Promise<Answer> {
  const status = response.statusCode
  const headers = callerResponseHeaders(response.headers)
  const declared = Number(response.headers['content-length'])
  if (declared > maxBytes) return streamed(status, headers, [], response.body)

  const chunks: Buffer[] = []
  let size = 0
  let overflow: boolean
  try {
    overflow = await new Promise<boolean>((resolve, reject) => {
      const body = response.body
      const onData = (chunk: Buffer): void => {
        chunks.push(chunk)
        size += chunk.length
        if (size > maxBytes) {
          body.pause()
          body.off('data', onData).off('end', onEnd).off('error', reject)
          resolve(true)
        }
      }
      const onEnd = (): void => { resolve(false) }
      body.on('data', onData).once('end', onEnd).once('error', reject)
    })
  } catch (err) {
    throw transportError(err)
  }
  if (overflow) return streamed(status, headers, chunks, response.body)
  return { kind: 'buffered', status, headers, upstreamHeaders: response.headers, body: Buffer.concat(chunks, size) }
}

function streamed (status: number, headers: Record<string, string | string[]>, prefix: Buffer[], rest: Readable): StreamedAnswer {
  // Until a caller claims it, an upstream failure must not be an unhandled 'error'
  // event; the stream keeps the error and the claimant's reader sees it.
  rest.on('error', () => {})
  let claimed = false
  return {
    kind: 'streamed',
    status,
    headers,
    claim: () => {
      if (claimed) return undefined
      claimed = true
      if (prefix.length === 0) return rest
      return Readable.from((async function * () {
        yield * prefix
        yield * rest
      })(), { objectMode: false })
    }
  }
}
