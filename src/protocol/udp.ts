/**
 * UDP over a byte stream: each datagram travels as one frame, a 2-byte
 * big-endian length followed by that many payload bytes, so datagram
 * boundaries survive the stream. Used in both directions, in raw mode and in
 * tunnel mode alike.
 *
 * @module
 */

/** Largest datagram payload a frame can carry. */
export const MAX_DATAGRAM = 65535;

/** Length of the frame prefix. */
export const UDP_FRAME_PREFIX = 2;

/** Frames one datagram. Throws RangeError if it is longer than {@link MAX_DATAGRAM}. */
export function encodeUdpFrame(datagram: Uint8Array): Uint8Array {
  if (datagram.length > MAX_DATAGRAM) {
    throw new RangeError(`datagram of ${datagram.length} bytes exceeds ${MAX_DATAGRAM}`);
  }
  const out = new Uint8Array(UDP_FRAME_PREFIX + datagram.length);
  out[0] = datagram.length >> 8;
  out[1] = datagram.length & 0xff;
  out.set(datagram, UDP_FRAME_PREFIX);
  return out;
}

/**
 * Incremental frame decoder: feed stream chunks, get complete datagrams back.
 * Buffers at most one partial frame (≤ 65,537 bytes), so memory is bounded.
 */
export class UdpFrameDecoder {
  #buf: Uint8Array = new Uint8Array(0);

  /** Adds a chunk; returns the datagrams it completed (possibly none). Returned arrays are copies. */
  push(chunk: Uint8Array): Uint8Array[] {
    let data: Uint8Array;
    if (this.#buf.length === 0) {
      data = chunk;
    } else {
      data = new Uint8Array(this.#buf.length + chunk.length);
      data.set(this.#buf, 0);
      data.set(chunk, this.#buf.length);
    }
    const out: Uint8Array[] = [];
    let off = 0;
    while (data.length - off >= UDP_FRAME_PREFIX) {
      const len = (data[off] << 8) | data[off + 1];
      if (data.length - off - UDP_FRAME_PREFIX < len) break;
      out.push(data.slice(off + UDP_FRAME_PREFIX, off + UDP_FRAME_PREFIX + len));
      off += UDP_FRAME_PREFIX + len;
    }
    this.#buf = data.slice(off);
    return out;
  }

  /** Bytes held for an incomplete frame. */
  get pending(): number {
    return this.#buf.length;
  }
}
