// The container's memory limit as the metric reads it, from fixture trees of
// /proc/self/cgroup and /sys/fs/cgroup: cgroup v2 and v1, nested limits,
// "no limit" in each hierarchy's words, a container whose mount is its own
// cgroup, and a system without cgroups.
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import t, { type Test } from 'tap'
import { readMemoryLimit } from '../../src/ops/memory-limit.js'
import { temporaryDirectory } from '../helpers/app.js'

const MiB = 1024 * 1024
/** What cgroup v1 writes for "no limit": 2^63 less a page. */
const V1_UNLIMITED = '9223372036854771712'

function tree (t: Test, files: Record<string, string>): string {
  const root = temporaryDirectory(t)
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true })
    writeFileSync(join(root, path), content)
  }
  return root
}

t.test('cgroup v2: memory.max of the process\'s cgroup, or the lowest above it', async (t) => {
  const unified = { 'sys/fs/cgroup/cgroup.controllers': 'cpu memory pids\n' }
  t.same(await readMemoryLimit(tree(t, { ...unified, 'proc/self/cgroup': '0::/\n', 'sys/fs/cgroup/memory.max': `${512 * MiB}\n` })), { bytes: 512 * MiB, source: 'cgroup_v2' }, 'a container in its own cgroup namespace')
  t.same(await readMemoryLimit(tree(t, {
    ...unified,
    'proc/self/cgroup': '0::/system.slice/cmu-proxy.service\n',
    'sys/fs/cgroup/system.slice/cmu-proxy.service/memory.max': 'max\n',
    'sys/fs/cgroup/system.slice/memory.max': `${2048 * MiB}\n`
  })), { bytes: 2048 * MiB, source: 'cgroup_v2' }, 'a parent\'s limit applies when the service has none')
  t.same(await readMemoryLimit(tree(t, {
    ...unified,
    'proc/self/cgroup': '0::/kubepods/pod1/c1\n',
    'sys/fs/cgroup/kubepods/pod1/c1/memory.max': `${300 * MiB}\n`,
    'sys/fs/cgroup/kubepods/pod1/memory.max': `${400 * MiB}\n`
  })), { bytes: 300 * MiB, source: 'cgroup_v2' }, 'the lowest on the path')
  t.same(await readMemoryLimit(tree(t, { ...unified, 'proc/self/cgroup': '0::/kubepods/pod1/c1\n', 'sys/fs/cgroup/memory.max': `${256 * MiB}\n` })), { bytes: 256 * MiB, source: 'cgroup_v2' }, 'the path from the host\'s root is not mounted here: the mount\'s own file')
  t.equal(await readMemoryLimit(tree(t, { ...unified, 'proc/self/cgroup': '0::/\n', 'sys/fs/cgroup/memory.max': 'max\n' })), undefined, 'max: no limit')
})

t.test('cgroup v1 (and hybrid systems): memory.limit_in_bytes, with its huge number for no limit', async (t) => {
  const membership = '12:pids:/\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n'
  t.same(await readMemoryLimit(tree(t, { 'proc/self/cgroup': membership, 'sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes': `${1024 * MiB}\n`, 'sys/fs/cgroup/memory/memory.limit_in_bytes': V1_UNLIMITED })), { bytes: 1024 * MiB, source: 'cgroup_v1' })
  t.same(await readMemoryLimit(tree(t, { 'proc/self/cgroup': membership, 'sys/fs/cgroup/memory/memory.limit_in_bytes': `${128 * MiB}\n` })), { bytes: 128 * MiB, source: 'cgroup_v1' }, 'the container\'s cgroup mounted at the hierarchy\'s root')
  t.equal(await readMemoryLimit(tree(t, { 'proc/self/cgroup': membership, 'sys/fs/cgroup/memory/memory.limit_in_bytes': V1_UNLIMITED })), undefined, '2^63 less a page: no limit')
  t.same(await readMemoryLimit(tree(t, { 'proc/self/cgroup': '4:cpu,memory:/\n', 'sys/fs/cgroup/memory/memory.limit_in_bytes': `${64 * MiB}\n` })), { bytes: 64 * MiB, source: 'cgroup_v1' }, 'memory co-mounted with another controller')
})

t.test('nothing to read: no limit', async (t) => {
  t.equal(await readMemoryLimit(tree(t, {})), undefined, 'no /proc/self/cgroup')
  t.equal(await readMemoryLimit(tree(t, { 'proc/self/cgroup': '3:cpu:/\n' })), undefined, 'no memory controller')
  t.equal(await readMemoryLimit(tree(t, { 'proc/self/cgroup': '4:memory:/\n', 'sys/fs/cgroup/memory/memory.limit_in_bytes': 'garbage\n' })), undefined, 'a value that is not a number')
})
