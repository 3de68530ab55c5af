// Just enough Markdown for the documentation tests: the pages, their fenced
// blocks, their headings as GitHub anchors them, and their links.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** The documentation pages the tests read, relative to the root. docs/_pending holds unmerged notes: not pages. */
export function docPages (): string[] {
  const docs = readdirSync(join(ROOT, 'docs')).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)
  return ['README.md', 'CHANGELOG.md', 'SECURITY.md', ...docs.sort(), 'deploy/kubernetes/README.md', 'bench/README.md'].filter((page) => existsSync(join(ROOT, page)))
}

export function readPage (page: string): string {
  return readFileSync(join(ROOT, page), 'utf8')
}

export interface FencedBlock {
  /** The info string's first word (`console`, `sh`, ...); '' when none. */
  lang: string
  /** 1-based line of the first line inside the fence. */
  line: number
  lines: string[]
}

/** Every fenced block (``` or ~~~), in order. */
export function fencedBlocks (text: string): FencedBlock[] {
  const blocks: FencedBlock[] = []
  let open: { fence: string, block: FencedBlock } | undefined
  text.split('\n').forEach((raw, index) => {
    if (open === undefined) {
      const start = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)/.exec(raw)
      if (start !== null) open = { fence: start[1] ?? '```', block: { lang: start[2] ?? '', line: index + 2, lines: [] } }
      return
    }
    if (raw.trim().startsWith(open.fence) && raw.trim().replace(/[`~]/g, '') === '') {
      blocks.push(open.block)
      open = undefined
      return
    }
    open.block.lines.push(raw)
  })
  return blocks
}

/** The text with fenced blocks blanked (line numbers kept) and inline code spans removed. */
export function prose (text: string): string {
  const lines = text.split('\n')
  for (const block of fencedBlocks(text)) {
    for (let i = block.line - 2; i <= block.line - 1 + block.lines.length; i++) lines[i] = ''
  }
  return lines.join('\n').replace(/`[^`\n]*`/g, '')
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens. */
export function slug (heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '').replace(/ /g, '-')
}

/** Every anchor a page offers: its headings (numbered when repeated, as GitHub does) and explicit ids. */
export function anchors (text: string): Set<string> {
  const seen = new Map<string, number>()
  const found = new Set<string>()
  for (const line of prose(text).split('\n')) {
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    if (heading !== null) {
      const base = slug(heading[1] ?? '')
      const count = seen.get(base) ?? 0
      seen.set(base, count + 1)
      found.add(count === 0 ? base : `${base}-${count}`)
    }
    for (const [, id] of line.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) found.add(id ?? '')
  }
  return found
}

/** Headings' text as written (for exact checks such as a runbook entry per alert). */
export function headings (text: string): string[] {
  return prose(text).split('\n').flatMap((line) => {
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    return heading === null ? [] : [heading[1] ?? '']
  })
}

export interface Link { target: string, line: number }

/** Inline links outside code, with their line. */
export function links (text: string): Link[] {
  return prose(text).split('\n').flatMap((line, index) =>
    [...line.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)].map((m) => ({ target: m[1] ?? '', line: index + 1 })))
}

/** The lines of a page's section: from the heading `title` to the next heading of the same or a higher level. */
export function section (text: string, title: string): string[] {
  const lines = text.split('\n')
  const start = lines.findIndex((line) => new RegExp(`^(#{1,6})\\s+${title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`).test(line))
  if (start === -1) return []
  const level = (/^#+/.exec(lines[start] ?? '')?.[0] ?? '#').length
  const end = lines.findIndex((line, i) => i > start && /^#{1,6}\s/.test(line) && (/^#+/.exec(line)?.[0] ?? '').length <= level)
  return lines.slice(start + 1, end === -1 ? undefined : end)
}

/** The rows of the Markdown tables in `lines`, as cells (header and separator rows left out). */
export function tableRows (lines: string[]): string[][] {
  const rows: string[][] = []
  let previous = ''
  for (const line of lines) {
    const isRow = line.trim().startsWith('|')
    if (isRow && !/^\|[\s|:-]+\|$/.test(line.trim()) && previous.trim().startsWith('|')) {
      rows.push(line.trim().replace(/^\||\|$/g, '').split('|').map((cell) => cell.trim()))
    }
    previous = isRow ? line : ''
  }
  return rows
}
