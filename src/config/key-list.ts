// Below both config.ts (which checks key lengths) and proxy/api-keys.ts
// (which matches them): config must not import from the layers it configures.

/** Keys from a comma- or newline-separated list (PROXY_API_KEYS or its file); `#` lines are comments. */
export function parseKeyList (text: string | undefined): string[] {
  return (text ?? '').split(/[,\n]/).map((k) => k.trim()).filter((k) => k !== '' && !k.startsWith('#'))
}
