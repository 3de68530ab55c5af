// Scriptable misbehaviour: "the next N calls to X fail with status S / hang /
// are delayed / lose their connection". Rules are consumed in the order added.

export type Endpoint = 'register' | 'token' | 'cmu' | 'esm'

export type FaultAction =
  /** An injected answer: at once, after `afterMs`, or (in-process) once `until` settles. */
  | { status: number, body?: string, contentType?: string, headers?: Record<string, string>, afterMs?: number, until?: Promise<void> }
  | { hang: true }
  | { delayMs: number }
  /** In-process only: the normal answer, held until `until` settles, so a test decides when Adobe answers. */
  | { until: Promise<void> }
  | { drop: true, afterMs?: number }

/** A fault's `until` and the function that releases it. */
export function heldAnswer (): { until: Promise<void>, release: () => void } {
  let release = (): void => {}
  const until = new Promise<void>((resolve) => { release = resolve })
  return { until, release }
}

interface Rule {
  endpoint: Endpoint
  /** Only report requests (cmu, esm) whose path starts with this (after the API's base path) */
  pathPrefix: string | undefined
  remaining: number
  action: FaultAction
}

export class Faults {
  #rules: Rule[] = []

  /** The next `count` matching calls get `action` (Infinity: until clear()). */
  failNext (endpoint: Endpoint, count: number, action: FaultAction, pathPrefix?: string): void {
    this.#rules.push({ endpoint, remaining: count, action, pathPrefix })
  }

  clear (endpoint?: Endpoint): void {
    this.#rules = endpoint === undefined ? [] : this.#rules.filter((r) => r.endpoint !== endpoint)
  }

  /** The action for this call, if a rule matches; consumes one use of it. */
  take (endpoint: Endpoint, path = ''): FaultAction | undefined {
    const rule = this.#rules.find((r) => r.endpoint === endpoint && (r.pathPrefix === undefined || path.startsWith(r.pathPrefix)))
    if (rule === undefined) return undefined
    if (--rule.remaining <= 0) this.#rules.splice(this.#rules.indexOf(rule), 1)
    return rule.action
  }
}
