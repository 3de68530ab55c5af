// Who belongs to the fleet: an instance that opens the fleet's sealed values.
// One that cannot (another STATE_ENCRYPTION_KEY list) would take locks whose
// notices nobody can read, and overwrite the shared token with one nobody
// else can open; so it is not a member: it takes no lock, publishes and
// writes nothing, is not ready, and refuses its callers at once.
//
// How it is told (docs/fleet.md, "Membership"): the fleet's client credentials
// decide when they are there (they are the state that matters, and never
// expire); without them (a fleet on ADOBE_CLIENT_ID, a fresh or flushed
// Redis), a small sealed probe value at `…:member-check` does, which the
// first instance to find neither writes. A member that finds the probe
// missing or not its own, while the credentials open, writes it back.
// An instance once found not to be a member stays out while the probe is
// missing (it never writes it): restarting it with the right key list makes
// it a member. Store trouble decides nothing: the state stays as it was.
import type { Logger } from 'pino'
import { StateSealError, StateValueTooLargeError } from '../store/errors.js'
import type { StateStore } from '../store/state-store.js'

export type MembershipState = 'unknown' | 'member' | 'not-member'

export interface MembershipOptions {
  store: StateStore
  /** The probe's key (`…:member-check`). */
  probeKey: string
  /** The shared credentials' key; absent with pre-provisioned credentials (nothing registered to share). */
  credentialsKey: string | undefined
  logger: Logger
  /** `cmu-proxy check`: decide from what is there, never write the probe. */
  readOnly?: boolean
}

/** What a value says about this instance's key list: it opens, it does not (why), or nothing is there. */
type Opened = 'opens' | 'absent' | StateSealError

const PROBE = Buffer.from(JSON.stringify({ fleet: 'cmu-proxy', probe: 1 }))
/** Enough for the probe and for client credentials; anything larger at these keys says nothing about the key list. */
const MAX_BYTES = 16 * 1024

export class Membership {
  readonly #options: MembershipOptions
  readonly #store: StateStore
  readonly #log: Logger
  readonly #listeners = new Set<(state: MembershipState) => void>()
  #state: MembershipState = 'unknown'
  #mismatch: StateSealError | undefined
  #checking: Promise<MembershipState> | undefined

  constructor (options: MembershipOptions) {
    this.#options = options
    this.#store = options.store
    this.#log = options.logger
  }

  get state (): MembershipState { return this.#state }

  /** Why this instance is not a member (the key and the key id that sealed it; never a value). */
  get mismatch (): string | undefined { return this.#state === 'not-member' ? this.#mismatch?.message : undefined }

  /** `listener` runs on every change of state. */
  onChange (listener: (state: MembershipState) => void): void {
    this.#listeners.add(listener)
  }

  /** The state, checked now if it is not known yet. */
  async ensure (): Promise<MembershipState> {
    return this.#state === 'unknown' ? await this.check() : this.#state
  }

  /** Looks again (at start, when Redis returns, and periodically); concurrent calls share one look. */
  async check (): Promise<MembershipState> {
    this.#checking ??= this.#decide().then((decided) => {
      if (decided !== undefined) this.#become(decided.state, decided.why)
      return this.#state
    }, () => this.#state).finally(() => { this.#checking = undefined })
    return await this.#checking
  }

  async #decide (): Promise<{ state: MembershipState, why?: StateSealError } | undefined> {
    const { credentialsKey, probeKey, readOnly } = this.#options
    const credentials = credentialsKey === undefined ? 'absent' : await this.#open(credentialsKey)
    if (credentials instanceof StateSealError) return { state: 'not-member', why: credentials }
    const probe = await this.#open(probeKey)
    if (credentials === 'opens') {
      if (probe !== 'opens' && readOnly !== true) await this.#store.set(probeKey, PROBE)
      return { state: 'member' }
    }
    if (probe === 'opens') return { state: 'member' }
    if (probe instanceof StateSealError) return { state: 'not-member', why: probe }
    // Nothing says whose the fleet is: the first to ask writes the probe, unless it was already found out.
    if (this.#state === 'not-member' || readOnly === true) return undefined
    await this.#store.setIfAbsent(probeKey, PROBE)
    const written = await this.#open(probeKey)
    if (written === 'absent') return undefined
    return written === 'opens' ? { state: 'member' } : { state: 'not-member', why: written }
  }

  /** Store trouble rejects (nothing is decided then). */
  async #open (key: string): Promise<Opened> {
    try {
      return await this.#store.get(key, MAX_BYTES) === undefined ? 'absent' : 'opens'
    } catch (err) {
      if (err instanceof StateSealError) return err
      // Oversized: written by something else entirely; it says nothing about our key list.
      if (err instanceof StateValueTooLargeError) return 'absent'
      throw err
    }
  }

  #become (state: MembershipState, why: StateSealError | undefined): void {
    if (state === this.#state) return
    const was = this.#state
    this.#state = state
    this.#mismatch = why
    if (state === 'not-member') {
      this.#log.error({ code: why?.code ?? 'CMU_PROXY_STATE_UNSEALABLE', reason: 'fleet_key_mismatch', key: why?.key, detail: why?.message },
        'this instance cannot open the fleet\'s sealed values (its STATE_ENCRYPTION_KEY list is not the fleet\'s): it is not a member, takes no lock, writes nothing, and is not ready; restart it with the fleet\'s key list')
    } else if (was === 'not-member') {
      this.#log.info('this instance opens the fleet\'s sealed values again: a member of the fleet')
    }
    for (const listener of [...this.#listeners]) listener(state)
  }
}
