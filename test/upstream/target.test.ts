// upstreamTarget on its own: what a path becomes for Adobe, the cache key and a
// purge. The same rules over real HTTP are in test/proxy/forwarding.test.ts;
// here are the inputs the router refuses before they could reach it (a purge's
// `path` arrives decoded once, so it can hold them).
import t from 'tap'
import { ProxyError } from '../../src/kernel/errors.js'
import { upstreamTarget } from '../../src/upstream/target.js'

const pathOf = (url: string): string => upstreamTarget(url, '/cmu', 'cmu').path

/** The problem code `url` is refused with, or 'accepted'. */
function refusal (url: string): string {
  try {
    pathOf(url)
    return 'accepted'
  } catch (err) {
    return err instanceof ProxyError ? err.code : String(err)
  }
}

t.test('percent-encoding is normalised: unreserved characters decoded, the rest upper case', async (t) => {
  t.equal(pathOf('/cmu/v2/%79%65%61%72'), '/v2/year')
  t.equal(pathOf('/cmu/v2/%7e%2D%5f%2e%41'), '/v2/~-_.A')
  t.equal(pathOf('/cmu/v2/year%3a%3A%40%21'), '/v2/year%3A%3A%40%21')
  t.equal(pathOf('/cmu/v2/year?a=%79'), '/v2/year', 'the query is not the path')
  t.equal(upstreamTarget('/cmu/v2/year?a=%79', '/cmu', 'cmu').query, 'a=%79', 'and stays as it came')
  for (const url of ['/cmu/v2/%79ear', '/cmu/v2/year%3a', '/cmu/v2/%41%3b']) {
    const once = pathOf(url)
    t.equal(pathOf(`/cmu${once}`), once, `${url}: normalising twice changes nothing`)
  }
})

t.test('a lone %, which a second decoder could read as an escape, is refused before normalising', async (t) => {
  // Decoded once more, each is a dot segment, a slash, a percent, a NUL or a backslash.
  for (const url of ['/cmu/v2/%%32%65%%32%65/x', '/cmu/v2/%%32%66x', '/cmu/v2/%%32%35', '/cmu/v2/%%30%30', '/cmu/v2/%%35%63', '/cmu/v2/%', '/cmu/v2/%4', '/cmu/v2/%zz']) {
    t.equal(refusal(url), 'CMU_PROXY_BAD_PATH', url)
  }
})

t.test('encoded dots are dot segments once decoded: refused', async (t) => {
  for (const url of ['/cmu/v2/%2e%2e/x', '/cmu/v2/%2E./x', '/cmu/v2/.%2e', '/cmu/%2e']) {
    t.equal(refusal(url), 'CMU_PROXY_BAD_PATH', url)
  }
})
