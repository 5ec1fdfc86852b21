import { createSocket, type Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { Attr, attributeOf, checkResponse, Code, decodePacket, encodeRequest, hidePassword, type Attribute, type Packet } from '@mfa/radius/packet';

/**
 * The benchmark's RADIUS client: like a busy VPN concentrator, several UDP sockets (each has only
 * 256 Identifiers in flight), every answer checked for its authenticators. Like a NAS, it sends a
 * request once more (the same bytes) when no answer came within the timeout, and gives up after
 * that: the RADIUS front answers a retransmission from its duplicate cache, so an answer that was
 * late for the first try (the front waits for the challenge API up to a second past the 5 s
 * deadline it sends) still reaches the NAS, as it would a real one. Its latency is counted from
 * the first try.
 */
export class RadiusLoadClient {
  private readonly sockets: { socket: Socket; waiting: Map<number, { authenticator: Buffer; resolve: (p: Packet) => void }>; next: number }[] = [];
  private turn = 0;

  constructor(
    private readonly port: number,
    private readonly secret: Buffer,
    private readonly timeoutMs = 5_000,
    private readonly retransmissions = 1,
  ) {}

  async open(count: number): Promise<this> {
    for (let i = 0; i < count; i++) {
      // As a concentrator would: a receive buffer that holds a burst of answers (the kernel's default drops past ~250).
      const socket = createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
      const entry = { socket, waiting: new Map(), next: 0 } as (typeof this.sockets)[number];
      socket.on('message', (bytes) => {
        const w = entry.waiting.get(bytes[1]!);
        // An answer that does not authenticate against the request now waiting on its Identifier
        // is discarded, as RFC 2865 has a NAS do: the second copy of an answer (one per retransmission)
        // or a late one, for an earlier request whose Identifier is in use again.
        if (!w || !checkResponse(bytes, w.authenticator, this.secret).authentic) return;
        entry.waiting.delete(bytes[1]!);
        w.resolve(decodePacket(bytes));
      });
      await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
      this.sockets.push(entry);
    }
    return this;
  }

  /** One Access-Request; its answer's packet. */
  request(user: string, password?: string, state?: Buffer): Promise<Packet> {
    const authenticator = randomBytes(16);
    const attributes: Attribute[] = [{ type: Attr.UserName, value: Buffer.from(user) }];
    if (password !== undefined) attributes.push({ type: Attr.UserPassword, value: hidePassword(Buffer.from(password), this.secret, authenticator) });
    if (state) attributes.push({ type: Attr.State, value: state });
    attributes.push({ type: Attr.CallingStationId, value: Buffer.from('198.51.100.7:51234') });
    for (let tries = 0; tries < this.sockets.length; tries++) {
      const entry = this.sockets[this.turn++ % this.sockets.length]!;
      if (entry.waiting.size >= 256) continue;
      let identifier = entry.next;
      while (entry.waiting.has(identifier)) identifier = (identifier + 1) % 256;
      entry.next = (identifier + 1) % 256;
      const bytes = encodeRequest({ code: Code.AccessRequest, identifier, authenticator, attributes, secret: this.secret });
      return new Promise<Packet>((resolve, reject) => {
        let sends = 0;
        let timer: NodeJS.Timeout;
        const send = () => {
          sends++;
          entry.socket.send(bytes, this.port, '127.0.0.1');
          timer = setTimeout(() => {
            if (sends <= this.retransmissions) return send();
            entry.waiting.delete(identifier);
            reject(new Error(`no answer within ${this.timeoutMs} ms, ${sends} times`));
          }, this.timeoutMs);
        };
        entry.waiting.set(identifier, {
          authenticator,
          resolve: (p) => (clearTimeout(timer), resolve(p)),
        });
        send();
      });
    }
    return Promise.reject(new Error('every Identifier of every socket is in flight'));
  }

  close(): void {
    for (const { socket } of this.sockets) socket.close();
  }
}

export const stateOf = (p: Packet): Buffer | undefined => attributeOf(p, Attr.State);
export const isCode = (p: Packet, code: 'accept' | 'challenge') => p.code === (code === 'accept' ? Code.AccessAccept : Code.AccessChallenge);
