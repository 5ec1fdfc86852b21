/** Slices a whole file handed over in memory the way a stream would arrive, so both paths behave alike. */
const SLICE_BYTES = 64 * 1024;

/** A Buffer over the same memory (object stores and fetch hand out plain Uint8Arrays). */
const asBuffer = (bytes: Uint8Array): Buffer => (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));

/** The file's bytes in order, in chunks of a bounded size when the caller passed one buffer. */
export async function* chunksOf(input: AsyncIterable<Uint8Array> | Uint8Array): AsyncGenerator<Buffer> {
  if (input instanceof Uint8Array) {
    const whole = asBuffer(input);
    for (let at = 0; at < whole.length; at += SLICE_BYTES) yield whole.subarray(at, at + SLICE_BYTES);
    return;
  }
  for await (const chunk of input) yield asBuffer(chunk);
}
