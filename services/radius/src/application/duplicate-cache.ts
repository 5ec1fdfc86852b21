/**
 * Retransmissions (RFC 2865 §2.5 and RFC 5080 §2.2.2): a NAS that got no answer in time sends the
 * same datagram again (same Identifier and Request Authenticator, from the same address). It
 * must get the same answer, byte for byte, when the first one is ready, and must never start a
 * second challenge, SMS, call or push. So every request's answer (or its silence) is kept here,
 * keyed by those three, from its arrival until `keepMs` after it settled. The source port is left
 * out of the key, unlike RFC 5080's: the Request Authenticator is drawn anew for every request,
 * so the same one from another port is the same request (a NAS that retransmits from a new
 * socket), never a new one; its answer goes to the port it came from. The same Identifier with
 * a new authenticator is a new request. A request this cache does not hold is not necessarily
 * new: SeenRequests remembers them longer, across instances.
 *
 * The number of entries is bounded (memory under a flood), and shared so that one client cannot
 * take it all: half of `maxEntries` is split evenly between the clients, each part kept for its
 * client alone; the other half is for whoever comes first. A client flooding the front (with its
 * own secret) fills the shared half and its own part, and then only its own new requests are
 * dropped; every other client still has its part.
 */
export class DuplicateCache {
  private readonly entries = new Map<string, { answer: Promise<Buffer | undefined>; expires: number; owner: string }>();
  /** Entries held, by client. */
  private readonly held = new Map<string, number>();
  /** The entries kept for each client alone. */
  private readonly reserved: number;
  /** How many entries the clients' parts hold: the sum over clients of min(held, reserved). */
  private reservedInUse = 0;
  private readonly keepMs: number;
  private readonly maxEntries: number;
  private readonly clients: number;
  private sweeping: NodeJS.Timeout;

  constructor(
    options: {
      /** How many clients (RADIUS_CLIENTS entries) share the cache. */
      clients?: number;
      keepMs?: number;
      /** A bound on memory under a flood; reached only by clients sending thousands of requests a second. */
      maxEntries?: number;
    } = {},
  ) {
    this.keepMs = options.keepMs ?? 30_000;
    this.maxEntries = options.maxEntries ?? 200_000;
    this.clients = Math.max(1, options.clients ?? 1);
    this.reserved = Math.floor(this.maxEntries / 2 / this.clients);
    this.sweeping = setInterval(() => this.sweep(Date.now()), 1_000);
    this.sweeping.unref();
  }

  static keyOf(address: string, identifier: number, authenticator: Buffer): string {
    return `${address}|${identifier}|${authenticator.toString('hex')}`;
  }

  /** The answer already given or coming for this request, or undefined: a new request. */
  get(key: string): Promise<Buffer | undefined> | undefined {
    return this.entries.get(key)?.answer;
  }

  /**
   * Whether `owner` (a client) may add one more request (else the request is dropped, and
   * counted): within its own part, or while the shared half has room once every other client's
   * unused part is set aside. Never beyond maxEntries in all.
   */
  hasRoomFor(owner: string): boolean {
    if (this.entries.size >= this.maxEntries) return false;
    if ((this.held.get(owner) ?? 0) < this.reserved) return true;
    const unusedReserve = Math.max(0, this.clients * this.reserved - this.reservedInUse);
    return this.entries.size + unusedReserve < this.maxEntries;
  }

  /** Keeps the answer of a new request of `owner`, from now until keepMs after it settles. */
  put(key: string, answer: Promise<Buffer | undefined>, owner: string): void {
    const entry = { answer, expires: Number.POSITIVE_INFINITY, owner };
    const replaced = this.entries.get(key);
    if (replaced) this.release(replaced.owner);
    this.entries.set(key, entry);
    const held = this.held.get(owner) ?? 0;
    this.held.set(owner, held + 1);
    if (held < this.reserved) this.reservedInUse++;
    const settled = () => {
      entry.expires = Date.now() + this.keepMs;
    };
    answer.then(settled, settled);
  }

  get size(): number {
    return this.entries.size;
  }

  private release(owner: string): void {
    const held = (this.held.get(owner) ?? 1) - 1;
    if (held > 0) this.held.set(owner, held);
    else this.held.delete(owner);
    if (held < this.reserved) this.reservedInUse--;
  }

  private sweep(now: number): void {
    for (const [key, entry] of this.entries) {
      if (entry.expires > now) continue;
      this.entries.delete(key);
      this.release(entry.owner);
    }
  }

  close(): void {
    clearInterval(this.sweeping);
  }
}
