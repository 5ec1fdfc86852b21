/**
 * Retransmissions (RFC 2865 §2.5 and RFC 5080 §2.2.2): a NAS that got no answer in time sends the
 * same datagram again (same source address and port, Identifier and Request Authenticator). It
 * must get the same answer, byte for byte, when the first one is ready, and must never start a
 * second challenge, SMS, call or push. So every request's answer (or its silence) is kept here,
 * keyed by those four, from its arrival until `keepMs` after it settled. The same Identifier with
 * a new authenticator is a new request.
 */
export class DuplicateCache {
  private readonly entries = new Map<string, { answer: Promise<Buffer | undefined>; expires: number }>();
  private sweeping: NodeJS.Timeout;

  constructor(
    private readonly keepMs = 30_000,
    /** A bound on memory under a flood; reached only by a client sending thousands of requests a second. */
    private readonly maxEntries = 200_000,
  ) {
    this.sweeping = setInterval(() => this.sweep(Date.now()), 1_000);
    this.sweeping.unref();
  }

  static keyOf(address: string, port: number, identifier: number, authenticator: Buffer): string {
    return `${address}|${port}|${identifier}|${authenticator.toString('hex')}`;
  }

  /** The answer already given or coming for this request, or undefined: a new request. */
  get(key: string): Promise<Buffer | undefined> | undefined {
    return this.entries.get(key)?.answer;
  }

  /** Whether the cache has room for one more request (else the request is dropped, and counted). */
  get full(): boolean {
    return this.entries.size >= this.maxEntries;
  }

  /** Keeps the answer of a new request, from now until keepMs after it settles. */
  put(key: string, answer: Promise<Buffer | undefined>): void {
    const entry = { answer, expires: Number.POSITIVE_INFINITY };
    this.entries.set(key, entry);
    const settled = () => {
      entry.expires = Date.now() + this.keepMs;
    };
    answer.then(settled, settled);
  }

  get size(): number {
    return this.entries.size;
  }

  private sweep(now: number): void {
    for (const [key, entry] of this.entries) if (entry.expires <= now) this.entries.delete(key);
  }

  close(): void {
    clearInterval(this.sweeping);
  }
}
