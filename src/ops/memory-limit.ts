// The memory limit of the container (the process's cgroup), so that an alert
// can compare the resident set, cached report bodies included, with what the
// kernel will allow before it kills the process. cgroup v2: memory.max;
// v1: memory.limit_in_bytes (https://docs.kernel.org/admin-guide/cgroup-v2.html,
// .../cgroup-v1/memory.html). The limit that applies is the lowest on the path
// up to the hierarchy's root. Node's process.constrainedMemory() reads the
// same files, but it is experimental and says "no limit" differently by
// version (undefined, 0, 2^64), so it cannot tell an alert "absent".
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'

export interface MemoryLimit {
  bytes: number
  /** Which hierarchy it came from: cgroup v2 (memory.max) or v1 (memory.limit_in_bytes). */
  source: 'cgroup_v2' | 'cgroup_v1'
}

/** v1 writes "no limit" as a huge page-aligned number (2^63 less a page); anything this large is no limit. */
const UNLIMITED_FROM = 2 ** 62

/**
 * The limit, or undefined when there is none (or it cannot be read).
 * `root`: where /proc and /sys are found (tests point it at a fixture).
 */
export async function readMemoryLimit (root = '/'): Promise<MemoryLimit | undefined> {
  const membership = await readText(join(root, 'proc/self/cgroup'))
  if (membership === undefined) return undefined
  const lines = membership.split('\n').map((line) => line.split(':'))
  // A pure v2 system mounts the unified hierarchy at /sys/fs/cgroup; a hybrid one keeps v1 controllers (memory among them) there.
  const unified = lines.find(([id, controllers]) => id === '0' && controllers === '')
  if (unified !== undefined && await readText(join(root, 'sys/fs/cgroup/cgroup.controllers')) !== undefined) {
    const bytes = await lowestOnPath(join(root, 'sys/fs/cgroup'), unified[2] ?? '/', 'memory.max')
    return bytes === undefined ? undefined : { bytes, source: 'cgroup_v2' }
  }
  const v1 = lines.find(([, controllers]) => controllers?.split(',').includes('memory') === true)
  if (v1 === undefined) return undefined
  const bytes = await lowestOnPath(join(root, 'sys/fs/cgroup/memory'), v1[2] ?? '/', 'memory.limit_in_bytes')
  return bytes === undefined ? undefined : { bytes, source: 'cgroup_v1' }
}

/**
 * The lowest limit in `file` from the process's cgroup up to the mount. In
 * a container the mount is often the container's own cgroup while the path
 * names it from the host's root: then only the mount's own file is read.
 */
async function lowestOnPath (mount: string, path: string, file: string): Promise<number | undefined> {
  const parts = path.split('/').filter((part) => part !== '' && part !== '..' && part !== '.')
  const own = await readLimit(join(mount, ...parts, file))
  let lowest: number | undefined
  if (own !== 'absent') {
    lowest = own
    for (let depth = parts.length - 1; depth >= 0; depth--) {
      const limit = await readLimit(join(mount, ...parts.slice(0, depth), file))
      if (typeof limit === 'number' && (lowest === undefined || limit < lowest)) lowest = limit
    }
  } else {
    const atMount = await readLimit(join(mount, file))
    lowest = atMount === 'absent' ? undefined : atMount
  }
  return lowest
}

/** A limit in bytes, undefined for none ("max", or v1's huge number), 'absent' when the file is not there. */
async function readLimit (path: string): Promise<number | undefined | 'absent'> {
  const text = await readText(path)
  if (text === undefined) return 'absent'
  const value = text.trim()
  if (!/^\d+$/.test(value)) return undefined
  const bytes = Number(value)
  return bytes >= UNLIMITED_FROM ? undefined : bytes
}

async function readText (path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch {
    return undefined
  }
}
