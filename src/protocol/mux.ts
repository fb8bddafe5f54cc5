/**
 * The tunnel's multiplexing frame codec (pure: no I/O). See PROTOCOL.md, "Tunnel mode".
 *
 * Every frame starts with an 8-byte frame header, all integers big-endian:
 *
 * | field     | bytes | meaning                                 |
 * |-----------|-------|-----------------------------------------|
 * | Type      | 1     | frame type (`FrameType`)                |
 * | Length    | 3     | payload length in bytes                 |
 * | Stream ID | 4     | stream the frame belongs to, 0 = session |
 *
 * The decoder never throws on bad input: it returns typed errors.
 *
 * @module
 */

/**
 * Magic bytes the client sends first on a tunnel connection: ASCII `KRLYMUX1`.
 * Its first byte is nonzero, which tells it apart from a raw-mode connection (whose first byte
 * is the Header's version byte, 0).
 */
export const PREFACE: Uint8Array = new Uint8Array([0x4b, 0x52, 0x4c, 0x59, 0x4d, 0x55, 0x58, 0x31]);

/** Length of the frame header in bytes. */
export const FRAME_HEADER_LENGTH = 8;
/** Largest DATA payload in bytes (64 KiB). */
export const MAX_DATA_PAYLOAD = 65536;
/** Largest Header carried by an OPEN frame, in bytes. */
export const MAX_OPEN_HEADER = 4096;
/** Largest RESET / GO_AWAY reason, in UTF-8 bytes (longer reasons are truncated when encoding). */
export const MAX_REASON_BYTES = 1024;
/** Largest flow-control window and window increment (2^31 - 1). */
export const MAX_WINDOW = 0x7fff_ffff;
/** Largest stream id (2^32 - 1). */
export const MAX_STREAM_ID = 0xffff_ffff;
/** Length of the opaque PING / PONG payload. */
export const PING_PAYLOAD_LENGTH = 8;
/**
 * Early data: the client's credit on a new stream before the agent's STATUS arrives (16 KiB:
 * enough for a request, small enough that an agent with thousands of new streams is not forced to
 * buffer much). An agent's receive window (announced in STATUS, counted from the start of the
 * stream) is never smaller, so the client may send this much DATA (and HALF_CLOSE) right after its
 * OPEN.
 */
export const EARLY_WINDOW = 16384;

/** Frame type codes on the wire. */
export const FrameType = {
  OPEN: 0x01,
  STATUS: 0x02,
  DATA: 0x03,
  WINDOW_UPDATE: 0x04,
  HALF_CLOSE: 0x05,
  RESET: 0x06,
  PING: 0x07,
  PONG: 0x08,
  GO_AWAY: 0x09,
} as const;

/** A decoded (or to-be-encoded) frame. */
export type Frame =
  /** Opens stream `streamId`; `window` = opener's receive window; `header` = raw Header bytes. */
  | { type: "open"; streamId: number; window: number; header: Uint8Array }
  /** Answer to OPEN: `status` 0 = accepted; `window` = acceptor's receive window. */
  | { type: "status"; streamId: number; status: number; window: number }
  /** Stream payload bytes (0..MAX_DATA_PAYLOAD). */
  | { type: "data"; streamId: number; data: Uint8Array }
  /** Grants the peer `increment` more bytes of DATA on the stream. */
  | { type: "window_update"; streamId: number; increment: number }
  /** The sender will send no more DATA on the stream (FIN). */
  | { type: "half_close"; streamId: number }
  /** Aborts the stream in both directions. */
  | { type: "reset"; streamId: number; reason: string }
  /** Liveness probe; the peer answers PONG with the same 8 bytes. */
  | { type: "ping"; data: Uint8Array }
  /** Answer to PING. */
  | { type: "pong"; data: Uint8Array }
  /** The sender accepts no new streams; open streams may finish. */
  | { type: "go_away"; reason: string };

/** Why a byte sequence is not a valid frame. */
export type FrameError =
  | "bad-type" // unknown frame type
  | "bad-length" // payload length not allowed for the type
  | "bad-stream-id" // stream id 0 on a stream frame, or nonzero on a session frame
  | "bad-value"; // a field value out of range (window, increment)

/** Result of decoding one frame from the start of a buffer. */
export type FrameDecodeResult =
  | { kind: "ok"; frame: Frame; length: number }
  | { kind: "incomplete"; needed: number }
  | { kind: "error"; error: FrameError; message: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes a reason as UTF-8, truncated to MAX_REASON_BYTES without splitting a character. */
function encodeReason(reason: string): Uint8Array {
  const bytes = encoder.encode(reason);
  if (bytes.length <= MAX_REASON_BYTES) return bytes;
  let end = MAX_REASON_BYTES;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

function checkStreamId(id: number): void {
  if (!Number.isInteger(id) || id < 1 || id > MAX_STREAM_ID) {
    throw new TypeError(`invalid stream id ${id}`);
  }
}

function checkWindow(w: number, min: number, what: string): void {
  if (!Number.isInteger(w) || w < min || w > MAX_WINDOW) {
    throw new TypeError(`invalid ${what} ${w}`);
  }
}

/** Writes a frame header at `off`. */
function putHeader(dst: Uint8Array, off: number, type: number, length: number, id: number): void {
  dst[off] = type;
  dst[off + 1] = (length >>> 16) & 0xff;
  dst[off + 2] = (length >>> 8) & 0xff;
  dst[off + 3] = length & 0xff;
  dst[off + 4] = (id >>> 24) & 0xff;
  dst[off + 5] = (id >>> 16) & 0xff;
  dst[off + 6] = (id >>> 8) & 0xff;
  dst[off + 7] = id & 0xff;
}

function putU32(dst: Uint8Array, off: number, v: number): void {
  dst[off] = (v >>> 24) & 0xff;
  dst[off + 1] = (v >>> 16) & 0xff;
  dst[off + 2] = (v >>> 8) & 0xff;
  dst[off + 3] = v & 0xff;
}

function getU32(src: Uint8Array, off: number): number {
  return ((src[off] << 24) >>> 0) + (src[off + 1] << 16) + (src[off + 2] << 8) + src[off + 3];
}

/**
 * Writes the 8-byte header of a DATA frame carrying `length` bytes for `streamId` at `off` in
 * `dst` (the caller copies the payload right after it). For the Session's batching writer.
 */
export function putDataFrameHeader(
  dst: Uint8Array,
  off: number,
  streamId: number,
  length: number,
): void {
  putHeader(dst, off, FrameType.DATA, length, streamId);
}

/**
 * Encodes one frame. Throws TypeError only for invalid input from our own code (bad stream id,
 * oversized payload, out-of-range window); reasons are truncated to MAX_REASON_BYTES.
 */
export function encodeFrame(frame: Frame): Uint8Array {
  switch (frame.type) {
    case "open": {
      checkStreamId(frame.streamId);
      checkWindow(frame.window, 0, "window");
      const n = frame.header.length;
      if (n < 1 || n > MAX_OPEN_HEADER) throw new TypeError(`invalid OPEN header length ${n}`);
      const out = new Uint8Array(FRAME_HEADER_LENGTH + 4 + n);
      putHeader(out, 0, FrameType.OPEN, 4 + n, frame.streamId);
      putU32(out, 8, frame.window);
      out.set(frame.header, 12);
      return out;
    }
    case "status": {
      checkStreamId(frame.streamId);
      checkWindow(frame.window, 0, "window");
      if (!Number.isInteger(frame.status) || frame.status < 0 || frame.status > 255) {
        throw new TypeError(`invalid status ${frame.status}`);
      }
      const out = new Uint8Array(FRAME_HEADER_LENGTH + 5);
      putHeader(out, 0, FrameType.STATUS, 5, frame.streamId);
      out[8] = frame.status;
      putU32(out, 9, frame.window);
      return out;
    }
    case "data": {
      checkStreamId(frame.streamId);
      const n = frame.data.length;
      if (n > MAX_DATA_PAYLOAD) throw new TypeError(`DATA payload too large: ${n}`);
      const out = new Uint8Array(FRAME_HEADER_LENGTH + n);
      putHeader(out, 0, FrameType.DATA, n, frame.streamId);
      out.set(frame.data, 8);
      return out;
    }
    case "window_update": {
      checkStreamId(frame.streamId);
      checkWindow(frame.increment, 1, "window increment");
      const out = new Uint8Array(FRAME_HEADER_LENGTH + 4);
      putHeader(out, 0, FrameType.WINDOW_UPDATE, 4, frame.streamId);
      putU32(out, 8, frame.increment);
      return out;
    }
    case "half_close": {
      checkStreamId(frame.streamId);
      const out = new Uint8Array(FRAME_HEADER_LENGTH);
      putHeader(out, 0, FrameType.HALF_CLOSE, 0, frame.streamId);
      return out;
    }
    case "reset": {
      checkStreamId(frame.streamId);
      const reason = encodeReason(frame.reason);
      const out = new Uint8Array(FRAME_HEADER_LENGTH + reason.length);
      putHeader(out, 0, FrameType.RESET, reason.length, frame.streamId);
      out.set(reason, 8);
      return out;
    }
    case "ping":
    case "pong": {
      if (frame.data.length !== PING_PAYLOAD_LENGTH) {
        throw new TypeError(`${frame.type} payload must be ${PING_PAYLOAD_LENGTH} bytes`);
      }
      const out = new Uint8Array(FRAME_HEADER_LENGTH + PING_PAYLOAD_LENGTH);
      const type = frame.type === "ping" ? FrameType.PING : FrameType.PONG;
      putHeader(out, 0, type, PING_PAYLOAD_LENGTH, 0);
      out.set(frame.data, 8);
      return out;
    }
    case "go_away": {
      const reason = encodeReason(frame.reason);
      const out = new Uint8Array(FRAME_HEADER_LENGTH + reason.length);
      putHeader(out, 0, FrameType.GO_AWAY, reason.length, 0);
      out.set(reason, 8);
      return out;
    }
  }
}

/** Allowed payload length range [min, max] per frame type code; undefined = unknown type. */
function lengthRange(type: number): [number, number] | undefined {
  switch (type) {
    case FrameType.OPEN:
      return [5, 4 + MAX_OPEN_HEADER];
    case FrameType.STATUS:
      return [5, 5];
    case FrameType.DATA:
      return [0, MAX_DATA_PAYLOAD];
    case FrameType.WINDOW_UPDATE:
      return [4, 4];
    case FrameType.HALF_CLOSE:
      return [0, 0];
    case FrameType.RESET:
    case FrameType.GO_AWAY:
      return [0, MAX_REASON_BYTES];
    case FrameType.PING:
    case FrameType.PONG:
      return [PING_PAYLOAD_LENGTH, PING_PAYLOAD_LENGTH];
    default:
      return undefined;
  }
}

const TYPE_NAMES: Record<number, string> = {
  [FrameType.OPEN]: "OPEN",
  [FrameType.STATUS]: "STATUS",
  [FrameType.DATA]: "DATA",
  [FrameType.WINDOW_UPDATE]: "WINDOW_UPDATE",
  [FrameType.HALF_CLOSE]: "HALF_CLOSE",
  [FrameType.RESET]: "RESET",
  [FrameType.PING]: "PING",
  [FrameType.PONG]: "PONG",
  [FrameType.GO_AWAY]: "GO_AWAY",
};

/**
 * Decodes one frame from the start of `buf`. Never throws and never reads past the frame's
 * declared length. The frame header is validated as soon as its 8 bytes are present, so a
 * garbage length is reported without waiting for the payload. Payload fields (`data`, `header`)
 * are views into `buf`, not copies.
 */
export function decodeFrame(buf: Uint8Array): FrameDecodeResult {
  if (buf.length < FRAME_HEADER_LENGTH) return { kind: "incomplete", needed: FRAME_HEADER_LENGTH };
  const type = buf[0];
  const length = (buf[1] << 16) | (buf[2] << 8) | buf[3];
  const streamId = getU32(buf, 4);
  const range = lengthRange(type);
  if (!range) {
    return { kind: "error", error: "bad-type", message: `unknown frame type 0x${hex(type)}` };
  }
  const name = TYPE_NAMES[type];
  if (length < range[0] || length > range[1]) {
    return {
      kind: "error",
      error: "bad-length",
      message: `${name} frame with payload length ${length} (allowed ${range[0]}..${range[1]})`,
    };
  }
  const sessionFrame = type === FrameType.PING || type === FrameType.PONG ||
    type === FrameType.GO_AWAY;
  if (sessionFrame ? streamId !== 0 : streamId === 0) {
    return {
      kind: "error",
      error: "bad-stream-id",
      message: `${name} frame on stream ${streamId}`,
    };
  }
  const total = FRAME_HEADER_LENGTH + length;
  if (buf.length < total) return { kind: "incomplete", needed: total };
  const p = buf.subarray(FRAME_HEADER_LENGTH, total);
  let frame: Frame;
  switch (type) {
    case FrameType.OPEN: {
      const window = getU32(p, 0);
      if (window > MAX_WINDOW) return badValue(`OPEN window ${window} too large`);
      frame = { type: "open", streamId, window, header: p.subarray(4) };
      break;
    }
    case FrameType.STATUS: {
      const window = getU32(p, 1);
      if (window > MAX_WINDOW) return badValue(`STATUS window ${window} too large`);
      frame = { type: "status", streamId, status: p[0], window };
      break;
    }
    case FrameType.DATA:
      frame = { type: "data", streamId, data: p };
      break;
    case FrameType.WINDOW_UPDATE: {
      const increment = getU32(p, 0);
      if (increment < 1 || increment > MAX_WINDOW) {
        return badValue(`WINDOW_UPDATE increment ${increment} out of range`);
      }
      frame = { type: "window_update", streamId, increment };
      break;
    }
    case FrameType.HALF_CLOSE:
      frame = { type: "half_close", streamId };
      break;
    case FrameType.RESET:
      frame = { type: "reset", streamId, reason: decoder.decode(p) };
      break;
    case FrameType.PING:
      frame = { type: "ping", data: p };
      break;
    case FrameType.PONG:
      frame = { type: "pong", data: p };
      break;
    default: // GO_AWAY (the only type left after lengthRange)
      frame = { type: "go_away", reason: decoder.decode(p) };
      break;
  }
  return { kind: "ok", frame, length: total };
}

function badValue(message: string): FrameDecodeResult {
  return { kind: "error", error: "bad-value", message };
}

function hex(b: number): string {
  return b.toString(16).padStart(2, "0");
}

/** Output of `FrameDecoder.push`: the complete frames, and an error if the stream is invalid. */
export interface FrameBatch {
  frames: Frame[];
  /** Set once the byte stream is invalid; the decoder then stays failed. */
  error?: { error: FrameError; message: string };
}

/**
 * Incremental frame decoder for a byte stream delivered in arbitrary chunks.
 *
 * Frames wholly inside one pushed chunk are decoded without copying (payloads are views into
 * that chunk, valid as long as the chunk is); only frames split across chunks are assembled into
 * a fresh buffer. The decoder never keeps a reference to a pushed chunk after `push` returns (it
 * copies the bytes of a partial frame), so the caller may reuse the chunk's buffer for its next
 * read once it is done with the returned frames. Memory held for a partial frame is bounded by
 * the largest frame (8 + 64 KiB). Never throws.
 */
export class FrameDecoder {
  #parts: Uint8Array[] = [];
  #partsLength = 0;
  #needed = FRAME_HEADER_LENGTH;
  #error: { error: FrameError; message: string } | undefined;

  /** Feeds the next chunk; returns every frame completed by it (in order). */
  push(chunk: Uint8Array): FrameBatch {
    const frames: Frame[] = [];
    if (this.#error) return { frames, error: this.#error };
    if (chunk.length === 0) return { frames };
    let buf = chunk;
    if (this.#parts.length > 0) {
      this.#parts.push(chunk);
      this.#partsLength += chunk.length;
      // Assemble exactly the bytes of the pending frame, then continue zero-copy on the rest.
      while (true) {
        if (this.#partsLength < this.#needed) {
          this.#parts = this.#parts.map((p) => p.buffer === chunk.buffer ? p.slice() : p);
          return { frames };
        }
        const head = this.#take(this.#needed);
        const r = decodeFrame(head);
        if (r.kind === "error") return this.#fail(frames, r.error, r.message);
        if (r.kind === "incomplete") {
          this.#parts.unshift(head);
          this.#partsLength += head.length;
          this.#needed = r.needed;
          continue;
        }
        frames.push(r.frame);
        this.#needed = FRAME_HEADER_LENGTH;
        if (this.#parts.length === 0) return { frames };
        buf = this.#parts.length === 1 ? this.#parts[0] : this.#take(this.#partsLength);
        this.#parts = [];
        this.#partsLength = 0;
        break;
      }
    }
    let off = 0;
    while (off < buf.length) {
      const r = decodeFrame(off === 0 ? buf : buf.subarray(off));
      if (r.kind === "ok") {
        frames.push(r.frame);
        off += r.length;
        continue;
      }
      if (r.kind === "error") return this.#fail(frames, r.error, r.message);
      this.#needed = r.needed;
      const rest = buf.subarray(off);
      // A copy: the chunk's buffer may be reused by the caller's next read.
      this.#parts = [rest.buffer === chunk.buffer ? rest.slice() : rest];
      this.#partsLength = rest.length;
      break;
    }
    return { frames };
  }

  /** True when bytes of an incomplete frame are buffered. */
  get hasPartialFrame(): boolean {
    return this.#partsLength > 0;
  }

  /** Removes and returns the first `n` buffered bytes as one contiguous array. */
  #take(n: number): Uint8Array {
    const first = this.#parts[0];
    if (first.length === n) {
      this.#parts.shift();
      this.#partsLength -= n;
      return first;
    }
    if (first.length > n) {
      this.#parts[0] = first.subarray(n);
      this.#partsLength -= n;
      return first.subarray(0, n);
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const part = this.#parts[0];
      const want = n - filled;
      if (part.length <= want) {
        out.set(part, filled);
        filled += part.length;
        this.#parts.shift();
      } else {
        out.set(part.subarray(0, want), filled);
        this.#parts[0] = part.subarray(want);
        filled += want;
      }
    }
    this.#partsLength -= n;
    return out;
  }

  #fail(frames: Frame[], error: FrameError, message: string): FrameBatch {
    this.#error = { error, message };
    this.#parts = [];
    this.#partsLength = 0;
    return { frames, error: this.#error };
  }
}
