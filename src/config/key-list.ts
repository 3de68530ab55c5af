// The format of PROXY_API_KEYS (and its file): parsed once at start
// (settings.ts); proxy/api-keys.ts gets the list.

/** Keys from a comma- or newline-separated list (PROXY_API_KEYS or its file); `#` lines are comments. */
export function parseKeyList (text: string | undefined): string[] {
  return (text ?? '').split(/[,\n]/).map((k) => k.trim()).filter((k) => k !== '' && !k.startsWith('#'))
}
