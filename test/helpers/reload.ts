// Reload wiring for the tests: a proxy started as main.ts starts one, with its
// reloader (config/reload.ts) and a watch on its secret files, and small
// helpers that write secret files the way Kubernetes does.
import { mkdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Test } from 'tap'
import { startReloading, type Reloading } from '../../src/config/reload.js'
import type { Sandbox } from '../../src/sandbox/server.js'
import { call, startProxy, type ProxyOptions, type RunningProxy } from './app.js'

export interface ReloadableProxy extends RunningProxy {
  reloading: Reloading
}

/** A short quiet time: the tests wait on the reload's effect, never on this. */
export const DEBOUNCE_MS = 50

/** `watch: false`: reloads only when the test says (no file watch to race the test's own reloads). */
export async function startReloadableProxy (t: Test, sandbox: Sandbox, options: ProxyOptions & { watch?: boolean } = {}): Promise<ReloadableProxy> {
  const proxy = await startProxy(t, sandbox, options)
  return { ...proxy, reloading: reloadingFor(t, proxy, options.watch ?? true) }
}

/** The reloader main.ts starts, for a proxy started in this process. */
export function reloadingFor (t: Test, proxy: RunningProxy, watch = true): Reloading {
  const reloading = startReloading({ load: proxy.load, started: proxy.configuration, target: proxy.app.liveSecrets, logger: proxy.logger, debounceMs: DEBOUNCE_MS, watch })
  t.teardown(() => { reloading.close() })
  return reloading
}

/** The count of cmu_proxy_config_reloads_total{result} in /metrics. */
export async function reloads (url: string, result: 'ok' | 'rejected' | 'unchanged'): Promise<number> {
  const metrics = (await call(url, '/metrics')).text
  return Number(new RegExp(`^cmu_proxy_config_reloads_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? Number.NaN)
}

/** The status of GET /cmu/v2 with this API key. */
export async function statusWithKey (url: string, key: string): Promise<number> {
  return (await call(url, '/cmu/v2', { headers: { 'x-api-key': key } })).status
}

/** Log lines (parsed) whose message matches `pattern`. */
export function logLines (proxy: RunningProxy, pattern: RegExp): Array<Record<string, unknown>> {
  return proxy.logs.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => typeof line.msg === 'string' && pattern.test(line.msg))
}

/**
 * A Secret volume as the kubelet writes it: the files in a timestamped
 * directory, `..data` a symlink to it, each file a symlink through `..data`.
 * `update` writes a new directory and swaps `..data` in one rename.
 */
export function secretVolume (dir: string, files: Record<string, string>): { path: (name: string) => string, update: (next: Record<string, string>) => void } {
  let generation = 0
  const writeGeneration = (contents: Record<string, string>): string => {
    const name = `..2026_01_01_00_00_0${generation++}.000000001`
    mkdirSync(join(dir, name), { recursive: true })
    for (const [file, content] of Object.entries(contents)) writeFileSync(join(dir, name, file), content)
    return name
  }
  mkdirSync(dir, { recursive: true })
  symlinkSync(writeGeneration(files), join(dir, '..data'))
  for (const file of Object.keys(files)) symlinkSync(join('..data', file), join(dir, file))
  return {
    path: (name) => join(dir, name),
    update: (next) => {
      const name = writeGeneration(next)
      symlinkSync(name, join(dir, '..data_tmp'))
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
    }
  }
}
