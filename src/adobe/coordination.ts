// How the token broker shares its work with other instances of a fleet. The
// broker decides (when to register, fetch, refresh, back off); this small
// interface says whether anyone else already did the work. One instance
// alone shares nothing (soloCoordination: do it now); fleet mode is another
// implementation over the state store (fleet/token-coordination.ts), chosen in app.ts.
import type { ClientCredentials } from './dcr-client.js'
import type { FailureNotice } from './errors.js'

// A coordination rejects with FleetAttemptFailed (the attempt this instance
// waited for failed on another one) or CoordinationUnavailable (acting alone
// could register a second client); both live in errors.ts, with the notice.
export type { FailureNotice }

/** A token as the fleet shares it; times are wall-clock ms since the epoch (instances share no monotonic clock). */
export interface FleetToken {
  access_token: string
  obtained_at: number
  expires_at: number
  /** Handed out only before this instant (leaves time for a request to reach Adobe). */
  usable_until: number
}

export interface TokenRequest {
  /** May this instance use `token`? False for the one being replaced or one Adobe refused. */
  acceptable: (token: FleetToken) => boolean
  /** Ask Adobe (registering first when needed). */
  fetch: () => Promise<FleetToken>
  /** What the instances waiting for this attempt are told when `fetch` fails. */
  describeFailure: (err: unknown) => FailureNotice
}

export interface RegistrationRequest {
  /** Credentials Adobe refused (invalid_client) or an admin dropped: never handed back. */
  rejected: ClientCredentials | undefined
  /** Register with Adobe and persist; resolves with the new credentials. */
  register: () => Promise<ClientCredentials>
  /** What the instances waiting for this registration are told when it fails. */
  describeFailure: (err: unknown) => FailureNotice
}

/** What the broker tells the coordination about itself. */
export interface CoordinatedBroker {
  /** A token another instance obtained (notified, or found when re-reading after a reconnect). */
  adopt: (token: FleetToken) => void
  /** The token this instance holds, to put back into a store that lost it. */
  held: () => FleetToken | undefined
  /**
   * The fleet's client credentials, read when the store answers again: used
   * from now on unless the ones held here are known to be newer (instances
   * that registered apart converge on one client). Returns the credentials
   * they replace, if any.
   */
  adoptCredentials: (credentials: ClientCredentials) => ClientCredentials | undefined
}

export interface TokenCoordination {
  start: (broker: CoordinatedBroker) => void
  /** A token for `request`: fetched here, or obtained by another instance of the fleet. */
  obtainToken: (request: TokenRequest) => Promise<{ token: FleetToken, fetchedHere: boolean }>
  /** Credentials: registered here, or by another instance of the fleet. */
  register: (request: RegistrationRequest) => Promise<{ credentials: ClientCredentials, registeredHere: boolean }>
  /** Adobe refused `token` (401): forget the shared copy if it is still that one. */
  dropToken: (token: string) => void
  close: () => void
}

/** One instance: nothing is shared, every step is done here and now. */
export const soloCoordination: TokenCoordination = {
  start: () => {},
  obtainToken: async (request) => ({ token: await request.fetch(), fetchedHere: true }),
  register: async (request) => ({ credentials: await request.register(), registeredHere: true }),
  dropToken: () => {},
  close: () => {}
}
