// The format of STATE_ENCRYPTION_KEY: one or more 32-byte keys, base64
// (standard or url-safe) or hex, comma-separated. Decoded once at start
// (settings.ts), so a bad value is a configuration error (exit 78, one line
// naming the variable); store/encryption-keys.ts derives each key's id.

export const STATE_KEY_BYTES = 32

const HEX = /^[0-9a-f]{64}$/i
const BASE64 = /^[A-Za-z0-9+/_-]{43}=?$/

/** The raw keys in order, or what is wrong (a phrase after the variable's name; never key material). */
export function decodeStateKeys (value: string): { keys: Buffer[] } | { problem: string } {
  const parts = value.split(',').map((part) => part.trim())
  if (parts.length === 1 && parts[0] === '') return { problem: 'is empty; it needs a 32-byte key (e.g. openssl rand -base64 32)' }
  const keys: Buffer[] = []
  for (const [index, part] of parts.entries()) {
    const where = parts.length === 1 ? 'the key' : `key ${index + 1} of ${parts.length}`
    if (part === '') return wipe(keys, `has an empty entry (${where}) in its comma-separated list`)
    const bytes = decode(part)
    if (bytes === undefined) {
      return wipe(keys, `must hold 32-byte keys in base64 or hex (${where} is ${describeShape(part)}); generate one with: openssl rand -base64 32`)
    }
    if (keys.some((k) => k.equals(bytes))) return wipe([...keys, bytes], `lists the same key twice (${where})`)
    keys.push(bytes)
  }
  return { keys }
}

function wipe (keys: Buffer[], problem: string): { problem: string } {
  for (const key of keys) key.fill(0)
  return { problem }
}

function decode (text: string): Buffer | undefined {
  // 64 hex digits would also pass as base64 (of 48 bytes): hex is tried first.
  if (HEX.test(text)) return Buffer.from(text, 'hex')
  if (!BASE64.test(text)) return undefined
  // Node's base64 decoder takes the standard and the url-safe alphabet alike.
  const bytes = Buffer.from(text, 'base64')
  return bytes.length === STATE_KEY_BYTES ? bytes : undefined
}

/** What is wrong with an entry, by its shape only (alphabet and decoded length), never its characters. */
function describeShape (text: string): string {
  if (/^[0-9a-f]+$/i.test(text)) return `${text.length} hex digits, expected 64`
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) return `base64 of ${Buffer.from(text, 'base64').length} bytes, expected 32`
  return 'neither base64 nor hex'
}
