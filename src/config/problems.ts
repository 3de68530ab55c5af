// What a bad configuration looks like to the operator: one line per bad
// variable, naming it, never echoing a secret, all of them at once (fixing one
// bad variable per start is slow), then exit 78.
import type { Variable } from './schema.js'

/** EX_CONFIG from sysexits.h: lets supervisors tell "fix your settings" from a crash. */
export const EXIT_CONFIG = 78

/** One bad or missing setting: `problem` completes a sentence that starts with the variable's name. */
export interface ConfigProblem { variable: string, problem: string }

/** Every bad or missing setting found; `message` has one line per problem, each naming its variable. */
export class ConfigError extends Error {
  readonly problems: readonly ConfigProblem[]
  /** The first variable named. */
  readonly variable: string
  constructor (problems: readonly ConfigProblem[]) {
    super(problems.map(({ variable, problem }) => `${variable} ${problem}`).join('\n'))
    this.name = 'ConfigError'
    this.problems = problems
    this.variable = problems[0]?.variable ?? 'configuration'
  }

  get lines (): string[] { return this.message.split('\n') }
}

export const problemOf = (variable: string, problem: string): ConfigProblem => ({ variable, problem })

/**
 * The problems found so far. A value that is already bad (it could not be
 * read, or the schema refused it) has been replaced by its default; a rule
 * over it is then skipped, since it would only repeat the first problem.
 */
export class ProblemList {
  readonly #problems: ConfigProblem[] = []
  readonly #bad = new Set<string>()

  /** A value that cannot be used at all (NAME_FILE's problem is NAME's too). */
  refuse (problem: ConfigProblem): void {
    this.#problems.push(problem)
    this.#bad.add(problem.variable)
    this.#bad.add(problem.variable.replace(/_FILE$/, ''))
  }

  isBad (variable: string): boolean { return this.#bad.has(variable) }

  /** Records what `rule` finds, unless one of the variables it `uses` is bad already. */
  check (uses: readonly Variable[], rule: () => ConfigProblem | readonly ConfigProblem[] | undefined): void {
    if (uses.some((name) => this.#bad.has(name))) return
    const found = rule()
    if (found === undefined) return
    if ('variable' in found) this.#problems.push(found)
    else this.#problems.push(...found)
  }

  get size (): number { return this.#problems.length }

  error (): ConfigError { return new ConfigError(this.#problems) }
}

/** A bad value as shown in an error: quoted, cut short, and with any user:password@ in it masked. */
export function echo (value: string): string {
  return JSON.stringify(value.slice(0, 80).replace(/\/\/[^/@\s]*@/, '//***@'))
}
