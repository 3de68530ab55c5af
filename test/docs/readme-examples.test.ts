// The documentation's curl examples, run against the demo. Every ```console
// block of the README and of docs/*.md is a session with a fresh demo (the
// sandbox and the app on loopback port 0, as `npm run demo` wires them): a
// `$ curl …` line is a request, the lines after it are what curl prints
// (status line and headers with -i, then the body; `…` matches anything).
// Editing an example edits this test. docs/development.md, "Documentation",
// describes the format for writers.
import { request as httpRequest } from 'node:http'
import { gunzipSync } from 'node:zlib'
import t, { type Test } from 'tap'
import { monotonicNow } from '../../src/kernel/clock.js'
import { call, eventually, startProxy, startSandbox } from '../helpers/app.js'
import { docPages, fencedBlocks, readPage } from './markdown.js'

interface Step { line: number, command: string, expected: string[] }
interface Example { page: string, line: number, env: Record<string, string>, steps: Step[] }

/** `$ [VAR=value …] [npm ci && ]npm run demo [&]`: the demo, with settings. */
const DEMO = /^((?:[A-Z][A-Z0-9_]*=\S+\s+)*)(?:npm ci && )?npm run demo(?:\s+&)?(?:\s+#.*)?$/

function examples (): Example[] {
  return docPages().filter((page) => page === 'README.md' || page.startsWith('docs/')).flatMap((page) =>
    fencedBlocks(readPage(page)).filter((block) => block.lang === 'console').map((block) => {
      const steps: Step[] = []
      block.lines.forEach((text, i) => {
        if (text.startsWith('$ ')) steps.push({ line: block.line + i, command: text.slice(2), expected: [] })
        else if (steps.length === 0) throw new Error(`${page}:${block.line + i}: a console block starts with a $ command`)
        else steps.at(-1)?.expected.push(text)
      })
      const env: Record<string, string> = {}
      const demo = DEMO.exec(steps[0]?.command ?? '')
      if (demo !== null) {
        for (const [, name = '', value = ''] of (demo[1] ?? '').matchAll(/([A-Z][A-Z0-9_]*)=(\S+)/g)) env[name] = value
        steps.shift()
      }
      return { page, line: block.line, env, steps }
    }))
}

/** Shell words, with quotes, backslashes, `$S` and trailing `# comments` as a shell reads them. */
function shellWords (command: string, vars: Record<string, string>): string[] {
  const words: string[] = []
  let word: string | undefined
  const add = (text: string): void => { word = (word ?? '') + text }
  const variable = (at: number): [string, number] => {
    const name = /^\$([A-Za-z_][A-Za-z0-9_]*)/.exec(command.slice(at))?.[1] ?? ''
    const value = vars[name]
    if (value === undefined) throw new Error(`unknown variable $${name} in: ${command}`)
    return [value, at + 1 + name.length]
  }
  let i = 0
  while (i < command.length) {
    const c = command[i] ?? ''
    if (c === "'") {
      const end = command.indexOf("'", i + 1)
      if (end === -1) throw new Error(`unterminated quote in: ${command}`)
      add(command.slice(i + 1, end))
      i = end + 1
    } else if (c === '"') {
      i++
      add('')
      while (command[i] !== '"') {
        if (i >= command.length) throw new Error(`unterminated quote in: ${command}`)
        if (command[i] === '\\' && /["\\$`]/.test(command[i + 1] ?? '')) { add(command[i + 1] ?? ''); i += 2 } else if (command[i] === '$') { const [value, next] = variable(i); add(value); i = next } else { add(command[i] ?? ''); i++ }
      }
      i++
    } else if (c === '\\') {
      add(command[i + 1] ?? '')
      i += 2
    } else if (c === '$') {
      const [value, next] = variable(i)
      add(value)
      i = next
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word)
      word = undefined
      i++
    } else if (c === '#' && word === undefined) {
      break
    } else {
      add(c)
      i++
    }
  }
  if (word !== undefined) words.push(word)
  return words
}

interface Curl {
  url: string
  method: string | undefined
  headers: Array<[string, string]>
  include: boolean
  head: boolean
  data: string | undefined
  discardBody: boolean
  writeOut: string | undefined
  compressed: boolean
  pathAsIs: boolean
}

const SHORT_FLAGS: Record<string, (curl: Curl) => void> = {
  s: () => {},
  S: () => {},
  i: (curl) => { curl.include = true },
  I: (curl) => { curl.head = true }
}
const SHORT_WITH_VALUE: Record<string, (curl: Curl, value: string) => void> = {
  H: (curl, value) => {
    const colon = value.indexOf(':')
    if (colon <= 0) throw new Error(`not a header: ${value}`)
    curl.headers.push([value.slice(0, colon).trim().toLowerCase(), value.slice(colon + 1).trim()])
  },
  X: (curl, value) => { curl.method = value },
  d: (curl, value) => { curl.data = value },
  o: (curl, value) => {
    if (value !== '/dev/null') throw new Error(`-o ${value}: examples write to /dev/null only`)
    curl.discardBody = true
  },
  w: (curl, value) => { curl.writeOut = value }
}
const LONG: Record<string, string> = { '--silent': 's', '--include': 'i', '--head': 'I', '--header': 'H', '--request': 'X', '--data': 'd', '--output': 'o', '--write-out': 'w' }

/** The curl command line, for the options the examples use; any other is an error, never ignored. */
function parseCurl (words: string[]): Curl {
  const curl: Curl = { url: '', method: undefined, headers: [], include: false, head: false, data: undefined, discardBody: false, writeOut: undefined, compressed: false, pathAsIs: false }
  const urls: string[] = []
  for (let i = 1; i < words.length; i++) {
    let word = words[i] ?? ''
    if (word === '--compressed') { curl.compressed = true; continue }
    if (word === '--path-as-is') { curl.pathAsIs = true; continue }
    if (word.startsWith('--')) {
      const short = LONG[word]
      if (short === undefined) throw new Error(`curl ${word} is not supported by the example runner (test/docs/readme-examples.test.ts)`)
      word = `-${short}`
    }
    if (!word.startsWith('-')) { urls.push(word); continue }
    for (let j = 1; j < word.length; j++) {
      const flag = word[j] ?? ''
      const withValue = SHORT_WITH_VALUE[flag]
      if (withValue !== undefined) {
        const value = j + 1 < word.length ? word.slice(j + 1) : words[++i]
        if (value === undefined) throw new Error(`curl -${flag} needs a value`)
        withValue(curl, value)
        break
      }
      const simple = SHORT_FLAGS[flag]
      if (simple === undefined) throw new Error(`curl -${flag} is not supported by the example runner (test/docs/readme-examples.test.ts)`)
      simple(curl)
    }
  }
  if (urls.length !== 1) throw new Error(`one URL per curl command (got ${urls.length})`)
  curl.url = urls[0] ?? ''
  return curl
}

interface Printed { status: number, statusLine: string, headers: Record<string, string>, body: string, output: string }

/** What curl would print for `curl` against the demo, where `localhost:8080` is the proxy. */
async function runCurl (curl: Curl, proxyUrl: string): Promise<Printed> {
  const target = curl.url.replace(/^(https?:\/\/)?(localhost|127\.0\.0\.1):8080(?=\/|$)/, proxyUrl)
  if (!/^http:\/\/127\.0\.0\.1:\d+/.test(target)) throw new Error(`${curl.url}: examples call the demo only (localhost:8080 or $S)`)
  const { hostname, port } = new URL(target)
  const path = target.replace(/^http:\/\/[^/]+/, '') || '/'
  if (!curl.pathAsIs && /(^|\/)\.\.?(\/|$|\?)/.test(path.split('?')[0] ?? '')) throw new Error(`${curl.url}: curl squashes dot segments before sending; add --path-as-is`)
  const headers: Record<string, string> = { 'user-agent': 'curl/8', accept: '*/*' }
  if (curl.compressed) headers['accept-encoding'] = 'deflate, gzip, br, zstd'
  if (curl.data !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded'
  for (const [name, value] of curl.headers) headers[name] = value
  const method = curl.head ? 'HEAD' : curl.method ?? (curl.data === undefined ? 'GET' : 'POST')
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, path, method, headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('error', reject)
      res.on('end', () => {
        let body = Buffer.concat(chunks)
        if (curl.compressed && res.headers['content-encoding'] === 'gzip' && body.length > 0) body = gunzipSync(body)
        const status = res.statusCode ?? 0
        const flat: Record<string, string> = {}
        for (const [name, value] of Object.entries(res.headers)) flat[name] = Array.isArray(value) ? value.join(', ') : String(value)
        // As a terminal shows it: CSV's CRLF line ends read as plain new lines.
        const text = curl.discardBody ? '' : body.toString('utf8').replace(/\r\n/g, '\n')
        const writeOut = (curl.writeOut ?? '').replace(/%\{http_code\}/g, String(status)).replace(/\\n/g, '\n')
        resolve({ status, statusLine: `HTTP/1.1 ${status} ${res.statusMessage ?? ''}`, headers: flat, body: text, output: text + writeOut })
      })
    })
    req.on('error', reject)
    req.end(curl.data)
  })
}

/** An expected text as a pattern: literal, with `…` matching anything. */
function pattern (expected: string): RegExp {
  return new RegExp(`^${expected.split('…').map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[\\s\\S]*')}$`)
}

function check (t: Test, step: Step, curl: Curl, printed: Printed): void {
  const where = `line ${step.line}: ${step.command}`
  if (step.expected.length === 0) {
    t.ok(printed.status < 400, `${where}: succeeds (HTTP ${printed.status})`)
    return
  }
  if (!curl.include && !curl.head) {
    t.match(printed.output.trimEnd(), pattern(step.expected.join('\n').trimEnd()), `${where}: prints what the example shows`)
    return
  }
  const [statusLine = '', ...rest] = step.expected
  t.equal(printed.statusLine, statusLine, `${where}: status line`)
  const blank = rest.indexOf('')
  const headerLines = blank === -1 ? rest : rest.slice(0, blank)
  for (const line of headerLines) {
    const colon = line.indexOf(':')
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = printed.headers[name]
    if (colon <= 0 || value === undefined) {
      t.fail(`${where}: header ${line} (the answer has ${Object.keys(printed.headers).join(', ')})`)
      continue
    }
    t.match(value, pattern(line.slice(colon + 1).trim()), `${where}: ${line}`)
  }
  if (blank !== -1) t.match(printed.body.trimEnd(), pattern(rest.slice(blank + 1).join('\n').trimEnd()), `${where}: body`)
}

async function runExample (t: Test, example: Example): Promise<void> {
  // The demo's clock stands still but for `sleep`: Age and TTLs read as they would a moment after each command.
  let offset = 0
  const start = monotonicNow()
  const sandbox = await startSandbox(t)
  const proxy = await startProxy(t, sandbox, { env: { CACHE_ENABLED: 'true', ...example.env }, now: () => start + offset })
  // As a user would: the demo says it is ready before the first curl.
  t.ok(await eventually(async () => (await call(proxy.url, '/readyz')).status === 200, 30_000), 'the demo is ready')
  const vars = { S: sandbox.authUrl }
  for (const step of example.steps) {
    const words = shellWords(step.command, vars)
    if (words[0] === 'sleep' && words.length === 2 && /^\d+$/.test(words[1] ?? '')) {
      offset += Number(words[1]) * 1000
      t.same(step.expected, [], `line ${step.line}: sleep prints nothing`)
      continue
    }
    if (words[0] !== 'curl') throw new Error(`${example.page}:${step.line}: only curl, sleep and (first) npm run demo run in examples: ${step.command}`)
    const curl = parseCurl(words)
    check(t, step, curl, await runCurl(curl, proxy.url))
  }
}

const EXAMPLES = examples()

t.test('the README and docs/ have examples, and every curl against the demo in the README is one', async (t) => {
  t.ok(EXAMPLES.filter((example) => example.page === 'README.md').length >= 2, 'the README has console examples')
  const inBlocks = new Set(fencedBlocks(readPage('README.md')).filter((block) => block.lang === 'console').flatMap((block) => block.lines))
  for (const line of readPage('README.md').split('\n')) {
    if (/\bcurl\b.*\blocalhost:8080/.test(line)) t.ok(inBlocks.has(line), `in a console block, so it is run: ${line.trim()}`)
  }
})

for (const example of EXAMPLES) {
  const settings = Object.entries(example.env).map(([name, value]) => `${name}=${value}`).join(' ')
  t.test(`${example.page}:${example.line}${settings === '' ? '' : ` (${settings})`}`, async (t) => { await runExample(t, example) })
}
