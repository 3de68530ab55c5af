// The layering rules of STYLE.md ("Avoid"), read from the sources: the fake
// Adobe stays independent of the client it tests, and config sits at the bottom.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const SRC = fileURLToPath(new URL('../src/', import.meta.url))

/** The relative modules a source file imports or re-exports. */
function localImports (file: string): string[] {
  const text = readFileSync(join(SRC, file), 'utf8')
  return [...text.matchAll(/^(?:import|export)\b[^'"]*?from '(\.[^']+)'/gm)].map((m) => m[1] ?? '')
}

t.test('the sandbox imports nothing from the proxy side', async (t) => {
  const files = readdirSync(join(SRC, 'sandbox')).filter((f) => f.endsWith('.ts'))
  t.ok(files.length > 5, 'found the sandbox sources')
  for (const file of files) {
    for (const target of localImports(join('sandbox', file))) {
      t.match(target, /^\.\/[\w-]+\.js$/, `sandbox/${file} imports ${target}: only sandbox modules`)
    }
  }
})

t.test('config.ts imports none of the layers it configures', async (t) => {
  const targets = localImports('config.ts')
  for (const target of targets) t.notMatch(target, /^\.\/(adobe|proxy|cache|ops|sandbox|state|store|fleet)\//, `config.ts imports ${target}`)
  t.ok(targets.every((target) => /^\.\/[\w-]+\.js$/.test(target)), 'only modules at the top of src/')
})
