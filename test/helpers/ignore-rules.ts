// What git and Docker would leave out, asked of the rules themselves rather
// than of the ignore files' text: git answers for .gitignore, and a port of
// Docker's own matcher (@balena/dockerignore) reads .dockerignore.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Ignore } from '@balena/dockerignore'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

export function gitIgnores (path: string): boolean {
  // --no-index: the rule itself, whether or not the file exists or is tracked.
  return spawnSync('git', ['check-ignore', '--no-index', '-q', path], { cwd: ROOT }).status === 0
}

// A CommonJS module whose typings declare an ES default export: loaded as what it is.
const dockerignore = createRequire(import.meta.url)('@balena/dockerignore') as (options?: { ignorecase?: boolean }) => Ignore
const docker = dockerignore({ ignorecase: false }).add(readFileSync(join(ROOT, '.dockerignore'), 'utf8'))

export function dockerIgnores (path: string): boolean {
  return docker.ignores(path)
}
