// The documentation stays true to the code: the README is a front door of at
// most 200 lines, every link and anchor resolves, and the reference tables
// (settings, source files, metrics, error codes) list exactly what src/ has.
// The examples are run by readme-examples.test.ts.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join, posix, relative } from 'node:path'
import t from 'tap'
import { configSchema } from '../../src/config/schema.js'
import { ROOT, anchors, docPages, links, readPage, section, tableRows } from './markdown.js'

const VARIABLES = new Set(Object.keys(configSchema.properties))
const DEFAULTS = configSchema.properties as Record<string, { default?: unknown }>

function sourceFiles (dir = join(ROOT, 'src')): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? sourceFiles(path) : [relative(ROOT, path).split('\\').join('/')]
  })
}

const SOURCES = sourceFiles()
const SOURCE_TEXT = SOURCES.filter((file) => file.endsWith('.ts')).map((file) => readFileSync(join(ROOT, file), 'utf8')).join('\n')
const backticked = (cell: string): string[] => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1] ?? '')

t.test('the README is a front door: at most 200 lines, linking every page of docs/', async (t) => {
  const readme = readPage('README.md')
  const lines = readme.split('\n').length - (readme.endsWith('\n') ? 1 : 0)
  t.ok(lines <= 200, `README.md has ${lines} lines`)
  const targets = new Set(links(readme).map((link) => link.target.split('#')[0]))
  for (const page of docPages().filter((page) => page.startsWith('docs/'))) t.ok(targets.has(page), `README links ${page}`)
})

t.test('every relative link resolves, anchors included', async (t) => {
  for (const page of docPages()) {
    for (const { target, line } of links(readPage(page))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue
      const [path = '', anchor] = target.split('#')
      const file = path === '' ? page : posix.normalize(posix.join(posix.dirname(page), path))
      const where = `${page}:${line} -> ${target}`
      if (!existsSync(join(ROOT, file))) {
        t.fail(`${where}: ${file} does not exist`)
        continue
      }
      if (anchor !== undefined && file.endsWith('.md')) t.ok(anchors(readPage(file)).has(anchor), `${where}: #${anchor} is a heading of ${file}`)
      else t.pass(where)
    }
  }
})

t.test('every src/ and test/ path the documentation names exists', async (t) => {
  for (const page of docPages().filter((page) => page !== 'CHANGELOG.md')) {
    const text = readPage(page)
    for (const [, path = ''] of text.matchAll(/`((?:src|test)\/[^`\s*]+)`/g)) {
      t.ok(existsSync(join(ROOT, path.replace(/[:.,]$/, ''))), `${page} names ${path}`)
    }
    // Source files named by their folder, as the walk of a request does (`upstream/target.ts`).
    for (const [, path = ''] of text.matchAll(/`((?:config|kernel|telemetry|adobe|upstream|cache|proxy|fleet|store|ops|sandbox)\/[a-z-]+\.ts)`/g)) {
      t.ok(SOURCES.includes(`src/${path}`), `${page} names src/${path}`)
    }
  }
  // And the docs pages src/ points readers to.
  for (const [, page = ''] of SOURCE_TEXT.matchAll(/\b(docs\/[a-z-]+\.md)\b/g)) t.ok(existsSync(join(ROOT, page)), `src/ names ${page}`)
})

t.test('docs/configuration.md has one row per variable, with the default the schema applies', async (t) => {
  const rows = tableRows(section(readPage('docs/configuration.md'), 'Every variable'))
  const documented = new Map<string, string>()
  for (const [name = '', fallback = ''] of rows) {
    const variable = backticked(name)[0] ?? name
    t.notOk(documented.has(variable), `${variable}: one row`)
    documented.set(variable, fallback)
  }
  for (const variable of VARIABLES) {
    const fallback = documented.get(variable)
    if (fallback === undefined) {
      t.fail(`${variable} has no row in docs/configuration.md`)
      continue
    }
    const schemaDefault = DEFAULTS[variable]?.default
    if (schemaDefault !== undefined) t.ok(backticked(fallback).includes(String(schemaDefault)), `${variable}: default \`${String(schemaDefault)}\``)
    else t.notMatch(fallback, /^`[^`]*`$/, `${variable}: no schema default, so none shown as a plain value`)
  }
  for (const variable of documented.keys()) t.ok(VARIABLES.has(variable), `${variable} is a real variable`)
})

t.test('the README\'s short configuration table names real variables', async (t) => {
  const rows = tableRows(section(readPage('README.md'), 'Configuration'))
  t.ok(rows.length >= 10, 'a table of the settings newcomers set')
  for (const [names = ''] of rows) for (const name of backticked(names)) t.ok(VARIABLES.has(name), `${name} is a real variable`)
})

t.test('docs/architecture.md has one line per file under src/, and no other', async (t) => {
  const map = section(readPage('docs/architecture.md'), 'The module map')
  const listed = map.flatMap((line) => /^- `(src\/[^`]+)`:/.exec(line)?.[1] ?? [])
  t.same(listed.filter((file, i) => listed.indexOf(file) !== i), [], 'no file listed twice')
  t.same(SOURCES.filter((file) => !listed.includes(file)), [], 'every file under src/ has its line')
  t.same(listed.filter((file) => !SOURCES.includes(file)), [], 'every line names a file that exists')
})

t.test('docs/operations.md lists every metric src/ registers, and only those', async (t) => {
  const registered = new Set([...SOURCE_TEXT.matchAll(/['"](cmu_proxy_[a-z0-9_]+)['"]/g)].map((m) => m[1] ?? ''))
  t.ok(registered.has('cmu_proxy_problems_total') && registered.has('cmu_proxy_heap_limit_bytes'), 'the metric names are read from src/')
  const table = tableRows(section(readPage('docs/operations.md'), 'Metrics')).flatMap(([metric = '']) => backticked(metric).map((name) => name.replace(/\{.*$/, '')))
  for (const name of registered) t.ok(table.includes(name), `${name} is in the metrics table`)
  for (const name of table) t.ok(registered.has(name), `${name} is a metric src/ registers`)
})

t.test('every CMU_PROXY_* code in src/ is in the README\'s error table or the internal codes, and only those', async (t) => {
  const inSource = new Set([...SOURCE_TEXT.matchAll(/['"](CMU_PROXY_[A-Z0-9_]+)['"]/g)].map((m) => m[1] ?? '').filter((name) => !VARIABLES.has(name)))
  t.ok(inSource.size > 20, `${inSource.size} codes read from src/`)
  const answered = tableRows(section(readPage('README.md'), 'Errors')).flatMap(([, code = '']) => backticked(code))
  const internal = tableRows(section(readPage('docs/operations.md'), 'Internal codes')).flatMap(([code = '']) => backticked(code))
  for (const code of inSource) t.ok(answered.includes(code) || internal.includes(code), `${code} is documented`)
  for (const code of [...answered, ...internal]) t.ok(inSource.has(code), `${code} exists in src/`)
})

