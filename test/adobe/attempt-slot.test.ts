// One token attempt at a time (src/adobe/attempt-slot.ts): callers share the
// attempt in flight, and a re-registration waits for it and then takes the
// slot before anyone else can start an attempt with the old credentials.
import t from 'tap'
import { AttemptSlot } from '../../src/adobe/attempt-slot.js'

/** A slot whose attempts the test settles by hand; `runs` records what each attempt was asked to do. */
function scriptedSlot (): { slot: AttemptSlot<string>, runs: boolean[], settle: (outcome?: Error) => void } {
  const runs: boolean[] = []
  const pending: Array<{ resolve: (value: string) => void, reject: (err: Error) => void }> = []
  const slot = new AttemptSlot<string>(async (registers) => {
    runs.push(registers)
    return await new Promise<string>((resolve, reject) => { pending.push({ resolve, reject }) })
  })
  const settle = (outcome?: Error): void => {
    const next = pending.shift()
    if (next === undefined) throw new Error('no attempt in flight')
    if (outcome === undefined) next.resolve(`attempt-${runs.length}`)
    else next.reject(outcome)
  }
  return { slot, runs, settle }
}

t.test('concurrent callers share the attempt in flight; the next call after it starts another', async (t) => {
  const { slot, runs, settle } = scriptedSlot()
  const callers = [slot.join(), slot.join(), slot.join()]
  t.equal(slot.busy, true)
  settle()
  t.same(await Promise.all(callers), ['attempt-1', 'attempt-1', 'attempt-1'])
  t.same(runs, [false], 'one attempt for three callers')
  t.equal(slot.busy, false)
  const later = slot.join()
  settle()
  t.equal(await later, 'attempt-2')
})

t.test('a registration with nothing in flight starts at once, and concurrent ones share it', async (t) => {
  const { slot, runs, settle } = scriptedSlot()
  const first = slot.register()
  const second = slot.register()
  const joined = slot.join()
  settle()
  t.same(await Promise.all([first, second, joined]), ['attempt-1', 'attempt-1', 'attempt-1'])
  t.same(runs, [true], 'one registering attempt, which a plain refresh joins')
})

t.test('a registration waits for the attempt in flight, then takes the slot before any other attempt can start', async (t) => {
  const { slot, runs, settle } = scriptedSlot()
  const inflight = slot.join()
  // Whoever resumes when the old attempt settles (a caller after a 401, the refresh timer) asks at once.
  const next = inflight.then(async () => await slot.join())
  const reregistered = slot.register()
  const alsoReregistered = slot.register()
  t.same(runs, [false], 'the registration has not started beside the old attempt')
  settle()
  t.equal(await inflight, 'attempt-1')
  t.same(runs, [false, true], 'the registration started as the old attempt settled')
  settle()
  t.same(await Promise.all([next, reregistered, alsoReregistered]), ['attempt-2', 'attempt-2', 'attempt-2'], 'the caller that resumed joined the registration')
  t.same(runs, [false, true], 'no third attempt')
})

t.test('a failed attempt still hands the slot to the registration waiting for it', async (t) => {
  const { slot, runs, settle } = scriptedSlot()
  const inflight = slot.join()
  const reregistered = slot.register()
  settle(new Error('token endpoint down'))
  await t.rejects(inflight, { message: 'token endpoint down' })
  t.same(runs, [false, true])
  settle(new Error('registration failed'))
  await t.rejects(reregistered, { message: 'registration failed' }, 'its caller sees the registration\'s own outcome')
  t.equal(slot.busy, false)
})
