// The client's reading of a software statement: public claims only, and no crash on garbage.
import t from 'tap'
import { publicStatementInfo, statementClaims } from '../../src/adobe/software-statement.js'

t.test('the client reads only public claims from a statement, and survives garbage', async (t) => {
  const payload = Buffer.from(JSON.stringify({ iss: 'auth.adobe.com', sub: 's', private: 'x' })).toString('base64url')
  const info = publicStatementInfo(`h.${payload}.sig`)
  t.match(info, { iss: 'auth.adobe.com', sub: 's', fingerprint: /^[0-9a-f]{12}$/ })
  t.notOk('private' in info, 'only registered claims')
  t.equal(statementClaims('no-dots'), undefined)
  t.equal(statementClaims('a.bm90IGpzb24.c'), undefined, 'payload not JSON')
  t.same(publicStatementInfo('a.bm90IGpzb24.c'), { fingerprint: publicStatementInfo('a.bm90IGpzb24.c').fingerprint }, 'just the fingerprint')
})
