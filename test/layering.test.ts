// The layering rules of STYLE.md ("Avoid"), read from the sources: no import
// cycle between files or between src/ folders, the fake Adobe stays
// independent of the client it tests, config and kernel sit at the bottom, the
// cache never reaches back into the inbound side, and only config/ reads and
// parses the environment: everything else gets typed settings.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const SRC = fileURLToPath(new URL('../src/', import.meta.url))

function sourceFiles (dir = SRC): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) return sourceFiles(path)
    return name.endsWith('.ts') ? [relative(SRC, path)] : []
  })
}

/** The src-relative files a source file imports, statically or with import(), types included. */
function localImports (file: string): string[] {
  const text = readFileSync(join(SRC, file), 'utf8')
  const specifiers = [
    ...[...text.matchAll(/^(?:import|export)\b[^'"]*?from '(\.[^']+)'/gm)].map((m) => m[1] ?? ''),
    ...[...text.matchAll(/\bimport\('(\.[^']+)'\)/g)].map((m) => m[1] ?? '')
  ]
  return specifiers.map((specifier) => normalize(join(dirname(file), specifier)).replace(/\.js$/, '.ts'))
}

/** The folder of a file ('.' for the entry points at the top of src/). */
const folderOf = (file: string): string => file.includes('/') ? (file.split('/')[0] ?? '.') : '.'

const FILES = sourceFiles()
const IMPORTS = new Map(FILES.map((file) => [file, localImports(file)]))

/** One cycle in the graph, as a list of nodes, or undefined. */
function findCycle (edges: Map<string, Set<string>>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>()
  const path: string[] = []
  const visit = (node: string): string[] | undefined => {
    if (state.get(node) === 'done') return undefined
    if (state.get(node) === 'open') return [...path.slice(path.indexOf(node)), node]
    state.set(node, 'open')
    path.push(node)
    for (const next of edges.get(node) ?? []) {
      const cycle = visit(next)
      if (cycle !== undefined) return cycle
    }
    path.pop()
    state.set(node, 'done')
    return undefined
  }
  for (const node of edges.keys()) {
    const cycle = visit(node)
    if (cycle !== undefined) return cycle
  }
  return undefined
}

t.test('every import names a file that exists', async (t) => {
  t.ok(FILES.length > 50, 'found the sources')
  const missing = [...IMPORTS].flatMap(([file, targets]) => targets.filter((target) => !FILES.includes(target)).map((target) => `${file} -> ${target}`))
  t.same(missing, [])
})

t.test('no import cycle between files', async (t) => {
  const edges = new Map([...IMPORTS].map(([file, targets]) => [file, new Set(targets)]))
  t.same(findCycle(edges), undefined)
})

t.test('no import cycle between src/ folders', async (t) => {
  const edges = new Map<string, Set<string>>()
  for (const [file, targets] of IMPORTS) {
    const from = folderOf(file)
    const set = edges.get(from) ?? new Set()
    for (const target of targets) if (folderOf(target) !== from) set.add(folderOf(target))
    edges.set(from, set)
  }
  t.same(findCycle(edges), undefined)
  // The entry points wire everything; nothing imports them back.
  t.same([...edges].filter(([from, to]) => from !== '.' && to.has('.')).map(([from]) => from), [])
})

/** What each folder may import besides itself. */
const ALLOWED: Record<string, string[]> = {
  kernel: [],
  config: ['kernel'],
  sandbox: [],
  store: ['kernel', 'config'],
  cache: ['kernel', 'config', 'telemetry', 'upstream']
}

for (const [folder, allowed] of Object.entries(ALLOWED)) {
  t.test(`${folder}/ imports only ${allowed.length === 0 ? 'itself' : allowed.join(', ')}`, async (t) => {
    const files = FILES.filter((file) => folderOf(file) === folder)
    t.ok(files.length > 0, `found ${folder}/`)
    const outside = files.flatMap((file) => (IMPORTS.get(file) ?? [])
      .filter((target) => folderOf(target) !== folder && !allowed.includes(folderOf(target)))
      .map((target) => `${file} -> ${target}`))
    t.same(outside, [])
  })
}

t.test('only config/ reads the environment; entry points hand process.env to it', async (t) => {
  const ENTRY_POINTS = new Set(['main.ts', 'demo.ts', 'cli.ts', 'ops/check.ts'])
  const readers = FILES.filter((file) => folderOf(file) !== 'config' && !ENTRY_POINTS.has(file))
    .filter((file) => /process\.env/.test(readFileSync(join(SRC, file), 'utf8').replace(/^\s*(\/\/|\*).*$/gm, '')))
  t.same(readers, [])
})

t.test('only config/ parses the environment: elsewhere it is reached through the settings\' types, and loaded by the entry points', async (t) => {
  // The schema, the formats (key lists, rate-limit rules, state keys, OTel lists, egress) and the section builders stay inside.
  const LOADERS = new Set(['main.ts', 'ops/check.ts', 'ops/check-steps.ts'])
  // reload.ts loads the settings again (SIGHUP, a changed secret file): main.ts starts it.
  const LOADING = new Set(['config/load.ts', 'config/problems.ts', 'config/reload.ts'])
  const reaching = FILES.filter((file) => folderOf(file) !== 'config').flatMap((file) => (IMPORTS.get(file) ?? [])
    .filter((target) => folderOf(target) === 'config' && target !== 'config/settings.ts' && !(LOADERS.has(file) && LOADING.has(target)))
    .map((target) => `${file} -> ${target}`))
  t.same(reaching, [])
  const valueImports = FILES.filter((file) => folderOf(file) !== 'config')
    .filter((file) => /^(?:import|export)\s+(?!type\b)[^'"]*?from '[./]+config\/settings\.js'/m.test(readFileSync(join(SRC, file), 'utf8')))
  t.same(valueImports, [], 'settings.ts is imported for its types only: the values come from loadSettings, once')
  const envSchemaUsers = FILES.filter((file) => /from 'env-schema'/.test(readFileSync(join(SRC, file), 'utf8')))
  t.same(envSchemaUsers, ['config/load.ts'], 'one validator, in one place')
})
