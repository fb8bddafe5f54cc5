/**
 * Authentication: every connection to the agent, in raw and tunnel mode alike, starts with a
 * 40-byte Token block, before the Header (raw mode) or the PREFACE (tunnel mode):
 *
 * | offset | field | bytes | meaning                                             |
 * |--------|-------|-------|-----------------------------------------------------|
 * | 0      | Magic | 8     | ASCII `KRLYTOK1` (the last byte is the revision, 1) |
 * | 8      | Token | 32    | the per-agent secret, raw bytes                     |
 *
 * The agent learns its token from the environment variable `KUBECTL_RELAY_TOKEN`, which holds the
 * same 32 bytes as 64 hexadecimal digits. Pure functions, no I/O.
 *
 * @module
 */

/** The Token block's first 8 bytes: ASCII `KRLYTOK1`. */
export const AUTH_MAGIC: Uint8Array = new Uint8Array([
  0x4b,
  0x52,
  0x4c,
  0x59,
  0x54,
  0x4f,
  0x4b,
  0x31,
]);

/** Token length in bytes (256 bits). */
export const TOKEN_LENGTH = 32;

/** Length of the Token block: magic + token. */
export const AUTH_LENGTH: number = AUTH_MAGIC.length + TOKEN_LENGTH;

/** Name of the agent container's environment variable that carries the token (hex). */
export const TOKEN_ENV = "KUBECTL_RELAY_TOKEN";

/** Why a Token block was rejected. */
export type AuthError = "no-token";

/** Outcome of {@link decodeAuth}. */
export type AuthDecodeResult =
  /** The token (a view into the input) and the block's length; bytes after it follow. */
  | { kind: "ok"; token: Uint8Array; length: number }
  /** `buf` is a valid prefix of a Token block; `needed` is the block's total length. */
  | { kind: "incomplete"; needed: number }
  /** The bytes are not a Token block (e.g. a bare PREFACE or Header from a client without one). */
  | { kind: "error"; error: AuthError; message: string };

/** Encodes the Token block for `token`. Throws TypeError if it is not {@link TOKEN_LENGTH} bytes. */
export function encodeAuth(token: Uint8Array): Uint8Array {
  if (token.length !== TOKEN_LENGTH) {
    throw new TypeError(`token of ${token.length} bytes (want ${TOKEN_LENGTH})`);
  }
  const out = new Uint8Array(AUTH_LENGTH);
  out.set(AUTH_MAGIC);
  out.set(token, AUTH_MAGIC.length);
  return out;
}

/**
 * Decodes a Token block from the start of `buf`. Never throws. A wrong magic is reported as soon
 * as its first differing byte arrives, so a client that sends no Token block is turned away
 * without waiting for 40 bytes. Does not judge the token: compare it with {@link tokensEqual}.
 */
export function decodeAuth(buf: Uint8Array): AuthDecodeResult {
  const n = Math.min(buf.length, AUTH_MAGIC.length);
  for (let i = 0; i < n; i++) {
    if (buf[i] !== AUTH_MAGIC[i]) {
      return {
        kind: "error",
        error: "no-token",
        message: i === 0 && buf[0] === 0
          ? "no token (a raw-mode Header came first)"
          : i === 4 && buf[4] === 0x4d // "KRLYM": the start of the tunnel PREFACE
          ? "no token (the tunnel preface came first)"
          : "no token",
      };
    }
  }
  if (buf.length < AUTH_LENGTH) return { kind: "incomplete", needed: AUTH_LENGTH };
  return {
    kind: "ok",
    token: buf.subarray(AUTH_MAGIC.length, AUTH_LENGTH),
    length: AUTH_LENGTH,
  };
}

/**
 * Whether two tokens are equal, in time that depends only on their lengths (every byte is
 * compared; no early exit), so the comparison leaks nothing about where a guess goes wrong.
 */
export function tokensEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** The token as 64 lowercase hexadecimal digits (the form in {@link TOKEN_ENV}). */
export function formatToken(token: Uint8Array): string {
  if (token.length !== TOKEN_LENGTH) {
    throw new TypeError(`token of ${token.length} bytes (want ${TOKEN_LENGTH})`);
  }
  let s = "";
  for (const b of token) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Parses {@link TOKEN_ENV}'s text: exactly 64 hexadecimal digits (either case); else undefined. */
export function parseToken(text: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F]{64}$/.test(text)) return undefined;
  const out = new Uint8Array(TOKEN_LENGTH);
  for (let i = 0; i < TOKEN_LENGTH; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}
