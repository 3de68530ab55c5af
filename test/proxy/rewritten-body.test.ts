// The ESM link rewrite within its byte budget (proxy/rewritten-body.ts and
// ReportOrigin's hand-off), with a budget the test reads: every path gives
// back all it took, and the peak stays within what was charged. The same
// rules over real HTTP are in esm.test.ts.
import { Readable } from 'node:stream'
import { gzipSync, gunzipSync } from 'node:zlib'
import t from 'tap'
import { ByteBudget } from '../../src/cache/buffered-fetch.js'
import { ProxyError } from '../../src/kernel/errors.js'
import { reportApis } from '../../src/proxy/report-apis.js'
import { ReportOrigin } from '../../src/proxy/report-origin.js'
import { rewritten } from '../../src/proxy/rewritten-body.js'
import type { OriginRequest, OriginResponse } from '../../src/upstream/origin.js'

/** A budget that remembers the most it held. */
class RecordingBudget extends ByteBudget {
  peak = 0
  override take (bytes: number): boolean {
    const taken = super.take(bytes)
    if (taken) this.peak = Math.max(this.peak, this.used)
    return taken
  }
}

/** A HAL JSON report of about `bytes` bytes, with many relative links. */
function report (bytes: number): Buffer {
  const links = []
  for (let size = 0; size < bytes; size += 40) links.push(`{"href":"/v3/year/month/${String(links.length).padStart(8, '0')}"}`)
  return Buffer.from(`{"_links":{"self":{"href":"/v3"},"drill-down":[${links.join(',')}]}}`)
}

/** What `rewritten` made of `raw`, or the problem code it refused with. */
async function outcome (raw: Buffer, encoding: string | undefined, maxBytes: number, budget: ByteBudget): Promise<Buffer | string> {
  try {
    return await rewritten(raw, encoding, 'json', '/esm', maxBytes, budget)
  } catch (err) {
    return err instanceof ProxyError ? err.code : String(err)
  }
}

t.test('a rewrite gives back all it charged, whichever way it ends', async (t) => {
  const body = report(40_000)
  const cases: Array<{ name: string, raw: Buffer, encoding?: string, maxBytes?: number, limit: number, expect: 'rewritten' | 'as sent' | 'shed' }> = [
    { name: 'identity', raw: body, limit: 1 << 20, expect: 'rewritten' },
    { name: 'gzip', raw: gzipSync(body), encoding: 'gzip', limit: 1 << 20, expect: 'rewritten' },
    { name: 'gzip in two members', raw: Buffer.concat([gzipSync(body.subarray(0, 10_000)), gzipSync(body.subarray(10_000))]), encoding: 'gzip', limit: 1 << 20, expect: 'rewritten' },
    { name: 'no link to change', raw: Buffer.from('{"report":[]}'), limit: 1 << 20, expect: 'as sent' },
    { name: 'labelled gzip, not gzip', raw: body, encoding: 'gzip', limit: 1 << 20, expect: 'as sent' },
    { name: 'labelled gzip, empty', raw: Buffer.alloc(0), encoding: 'gzip', limit: 1 << 20, expect: 'as sent' },
    { name: 'gzip decoding past maxBytes', raw: gzipSync(body), encoding: 'gzip', maxBytes: 20_000, limit: 1 << 20, expect: 'as sent' },
    // The decoded chunks (16 KiB each) outgrow the budget while zlib is still decoding.
    { name: 'budget spent while decoding', raw: gzipSync(body), encoding: 'gzip', limit: 20_000, expect: 'shed' },
    // The chunks fit; the joined copy of them does not.
    { name: 'budget spent joining the decoded chunks', raw: gzipSync(body), encoding: 'gzip', limit: body.length + 1_000, expect: 'shed' },
    // The text fits; the rewritten text and bytes do not.
    { name: 'budget spent on the rewritten copies', raw: body, limit: body.length + 1_000, expect: 'shed' }
  ]
  for (const { name, raw, encoding, maxBytes = 1 << 20, limit, expect } of cases) {
    const budget = new RecordingBudget(limit)
    const result = await outcome(raw, encoding, maxBytes, budget)
    if (expect === 'shed') t.equal(result, 'CMU_PROXY_OVERLOADED', `${name}: shed`)
    else if (expect === 'as sent') t.equal(result, raw, `${name}: the very bytes Adobe sent`)
    else {
      t.type(result, Buffer, `${name}: rewritten`)
      const text = (encoding === 'gzip' ? gunzipSync(result as Buffer) : result as Buffer).toString('latin1')
      t.equal(text, body.toString('latin1').replaceAll('"href":"/v3', '"href":"/esm/v3'), `${name}: every link under /esm, nothing else changed`)
      // Every copy charged: the text and the rewritten text and bytes; for gzip the decoded chunks and body too.
      const copies = encoding === 'gzip' ? 5 : 3
      t.ok(budget.peak >= copies * body.length, `${name}: charged for ${copies} copies (${budget.peak})`)
    }
    t.equal(budget.used, 0, `${name}: all given back`)
    t.ok(budget.peak <= limit, `${name}: never past the budget`)
  }
})

t.test('a gzip bomb is decoded no further than one chunk past maxBytes, and charged for what it decoded', async (t) => {
  const bomb = gzipSync(Buffer.alloc(64 << 20))
  const budget = new RecordingBudget(1 << 30)
  t.equal(await outcome(bomb, 'gzip', 256 << 10, budget), bomb, 'passed on as it came')
  t.ok(budget.peak <= 256 << 10, `held at most maxBytes decoded (${budget.peak})`)
  t.equal(budget.used, 0)
})

t.test('ReportOrigin charges the body it hands on until the reader takes it, then gives it all back', async (t) => {
  const body = report(2_000)
  const budget = new RecordingBudget(64 << 10)
  const answer = (): OriginResponse => ({ status: 200, headers: { 'content-type': 'application/json' }, body: Readable.from([body.subarray(0, 500), body.subarray(500)]), retried: false, dispatchedAt: 0 })
  const origin = new ReportOrigin({ origin: { fetch: async () => answer() }, apis: reportApis({ pathPrefix: '/cmu', esmPathPrefix: '/esm' }), maxBodyBytes: 4096, maxInflightBytes: 64 << 10, budget })
  const request = { target: { api: 'esm', path: '/v3', query: '' }, headers: {}, id: 'r', ip: '127.0.0.1', gzipAccepted: false, accept: undefined, acceptLanguage: undefined } satisfies OriginRequest
  const response = await origin.fetch(request, new AbortController().signal)
  const handedOn = Number(response.headers['content-length'])
  t.ok(handedOn > body.length, 'the rewritten body is larger by its prefixes')
  t.equal(budget.used, handedOn, 'until it is read, the body handed on is charged, at its own length')
  const chunks = []
  for await (const chunk of response.body) chunks.push(chunk as Buffer)
  t.equal(Buffer.concat(chunks).length, handedOn)
  t.equal(budget.used, 0, 'read: all given back')
  const dropped = await origin.fetch(request, new AbortController().signal)
  dropped.body.destroy()
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(budget.used, 0, 'dropped unread: all given back')
})
