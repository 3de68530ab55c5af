// Serialises a report as a generator of chunks: piped through Readable.from()
// it honours back-pressure, so a large report is never held whole in memory.
// JSON and XML are HAL.
import type { Link, Report } from './report.js'

/**
 * Both pages' examples name the file `report__<start>_<end>_<limit>.csv`. (ESM's
 * page also gives the pattern `esm__<start-date>_<end-date>_<filter-values,...>.csv`,
 * which its own example does not follow; the sandbox follows the examples.)
 */
export function csvFileName (report: Report): string {
  return `report__${report.startText}_${report.endText}_${report.limit}.csv`
}

export function render (report: Report): Generator<string> {
  switch (report.format) {
    case 'json': return renderJson(report)
    case 'xml': return renderXml(report)
    case 'csv': return renderCsv(report)
    case 'html': return renderHtml(report)
  }
}

function * renderJson (report: Report): Generator<string> {
  const links: Record<string, unknown> = { self: report.links.self }
  if (report.links.rollUp !== undefined) links['roll-up'] = report.links.rollUp
  if (report.links.drillDown.length > 0) links['drill-down'] = report.links.drillDown
  yield `{"_links":${JSON.stringify(links)},"report":[`
  const names = [...report.columns, ...report.metrics]
  let first = true
  for (const row of report.rows()) {
    const record: Record<string, string> = {}
    names.forEach((name, i) => { record[name] = row[i] ?? '' })
    yield `${first ? '' : ','}${JSON.stringify(record)}`
    first = false
  }
  yield ']}'
}

function * renderXml (report: Report): Generator<string> {
  const link = (rel: string, l: Link): string => `<link rel="${rel}" href="${xml(l.href)}"${l.name === undefined ? '' : ` name="${xml(l.name)}"`}/>`
  yield `<?xml version="1.0" encoding="UTF-8"?>\n<resource href="${xml(report.links.self.href)}">`
  if (report.links.rollUp !== undefined) yield link('roll-up', report.links.rollUp)
  for (const d of report.links.drillDown) yield link('drill-down', d)
  yield '<report>'
  const names = [...report.columns, ...report.metrics]
  for (const row of report.rows()) {
    yield `<record ${names.map((n, i) => `${n}="${xml(row[i] ?? '')}"`).join(' ')}/>`
  }
  yield '</report></resource>\n'
}

function * renderCsv (report: Report): Generator<string> {
  yield `${[...report.columns, ...report.metrics].map(csv).join(',')}\r\n`
  for (const row of report.rows()) yield `${row.map(csv).join(',')}\r\n`
}

function * renderHtml (report: Report): Generator<string> {
  const names = [...report.columns, ...report.metrics]
  yield `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${report.api.toUpperCase()} report</title></head><body>\n<table>\n<tr>${names.map((n) => `<th>${xml(n)}</th>`).join('')}</tr>\n`
  for (const row of report.rows()) yield `<tr>${row.map((v) => `<td>${xml(v)}</td>`).join('')}</tr>\n`
  yield `</table>\n${report.links.drillDown.map((d) => `<a href="${xml(d.href)}">${xml(d.name ?? '')}</a>`).join(' ')}\n</body></html>\n`
}

function xml (text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

function csv (text: string): string {
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text
}
