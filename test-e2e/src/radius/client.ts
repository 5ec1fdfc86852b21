import { createSocket, type Socket } from 'node:dgram';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { Attr, Code, checkResponse, decodePacket, encodeRequest, hidePassword, type Attribute, type Packet } from '@mfa/radius/packet';

const run = promisify(execFile);

export interface Answer {
  bytes: Buffer;
  packet: Packet;
  /** Response Authenticator and Message-Authenticator right for the request. */
  authentic: boolean;
  messageAuthenticatorFirst: boolean;
  /** ms from send to answer. */
  ms: number;
  replyMessage: string | undefined;
  state: Buffer | undefined;
}

export const codeName = (code: number) => ({ [Code.AccessAccept]: 'Access-Accept', [Code.AccessReject]: 'Access-Reject', [Code.AccessChallenge]: 'Access-Challenge' })[code] ?? `code ${code}`;

/**
 * A RADIUS client that can send what radclient will not: no Message-Authenticator, a wrong one,
 * the same datagram twice, raw bytes, from a chosen source address (any of 127.0.0.0/8).
 */
export class CraftedClient {
  private socket: Socket | undefined;
  private nextId = 0;
  private readonly waiting = new Map<string, Array<(bytes: Buffer) => void>>();

  constructor(
    private readonly port: number,
    readonly secret: string,
    private readonly source = '127.0.0.1',
  ) {}

  async open(): Promise<this> {
    const socket = createSocket('udp4');
    socket.on('message', (bytes) => {
      // Answers are matched to requests by Identifier (the socket's own port is the same for all).
      // Every request still waiting under that Identifier gets it (a retransmission waits too).
      const key = String(bytes[1]);
      const waiters = this.waiting.get(key);
      if (waiters) {
        this.waiting.delete(key);
        for (const resolve of waiters) resolve(bytes);
      }
    });
    await new Promise<void>((resolve) => socket.bind(0, this.source, resolve));
    this.socket = socket;
    return this;
  }

  close(): void {
    this.socket?.close();
  }

  identifier(): number {
    this.nextId = (this.nextId + 1) % 256;
    return this.nextId;
  }

  /** An Access-Request: User-Name, User-Password (hidden with the secret) and any other attributes. */
  request(a: { user?: string | Buffer; password?: string; state?: Buffer; extra?: Attribute[]; messageAuthenticator?: boolean; secret?: string; identifier?: number; code?: number }) {
    const authenticator = randomBytes(16);
    const secret = Buffer.from(a.secret ?? this.secret);
    const attributes: Attribute[] = [];
    if (a.user !== undefined) attributes.push({ type: Attr.UserName, value: Buffer.isBuffer(a.user) ? a.user : Buffer.from(a.user) });
    if (a.password !== undefined) attributes.push({ type: Attr.UserPassword, value: hidePassword(Buffer.from(a.password), secret, authenticator) });
    if (a.state) attributes.push({ type: Attr.State, value: a.state });
    attributes.push(...(a.extra ?? []));
    const identifier = a.identifier ?? this.identifier();
    const bytes = encodeRequest({ code: a.code ?? Code.AccessRequest, identifier, authenticator, attributes, secret, messageAuthenticator: a.messageAuthenticator ?? true });
    return { bytes, authenticator, identifier };
  }

  /** Sends raw bytes; the answer to `identifier` within `timeoutMs`, or undefined. */
  async sendRaw(bytes: Buffer, identifier: number, authenticator: Buffer, timeoutMs = 3_000): Promise<Answer | undefined> {
    const key = String(identifier);
    const began = performance.now();
    const answer = new Promise<Buffer | undefined>((resolve) => {
      const waiter = (b: Buffer) => {
        clearTimeout(timer);
        resolve(b);
      };
      const timer = setTimeout(() => {
        const rest = (this.waiting.get(key) ?? []).filter((w) => w !== waiter);
        if (rest.length > 0) this.waiting.set(key, rest);
        else this.waiting.delete(key);
        resolve(undefined);
      }, timeoutMs);
      this.waiting.set(key, [...(this.waiting.get(key) ?? []), waiter]);
    });
    this.socket!.send(bytes, this.port, '127.0.0.1');
    const got = await answer;
    if (!got) return undefined;
    const packet = decodePacket(got);
    const check = checkResponse(got, authenticator, Buffer.from(this.secret));
    const reply = packet.attributes.filter((x) => x.type === Attr.ReplyMessage).map((x) => x.value.toString('utf8'));
    return {
      bytes: got,
      packet,
      ...check,
      ms: performance.now() - began,
      replyMessage: reply.length > 0 ? reply.join('') : undefined,
      state: packet.attributes.find((x) => x.type === Attr.State)?.value,
    };
  }

  async send(a: Parameters<CraftedClient['request']>[0], timeoutMs = 3_000): Promise<Answer | undefined> {
    const { bytes, identifier, authenticator } = this.request(a);
    return this.sendRaw(bytes, identifier, authenticator, timeoutMs);
  }
}

export interface RadclientAnswer {
  code: string;
  replyMessage: string | undefined;
  /** As radclient prints it: 0x… */
  state: string | undefined;
  output: string;
}

/**
 * FreeRADIUS's radclient (Debian freeradius-utils), the real client: attributes as it reads them
 * on stdin. It adds the Message-Authenticator when asked with `Message-Authenticator = 0x00`.
 */
export async function radclient(port: number, secret: string, attributes: string[], command: 'auth' | 'status' = 'auth', timeoutSeconds = 3): Promise<RadclientAnswer | undefined> {
  const child = run('radclient', ['-x', '-r', '1', '-t', String(timeoutSeconds), `127.0.0.1:${port}`, command, secret], { timeout: (timeoutSeconds + 5) * 1000 });
  child.child.stdin!.end(`${[...attributes, 'Message-Authenticator = 0x00'].join('\n')}\n`);
  let output: string;
  try {
    output = (await child).stdout;
  } catch (error) {
    const e = error as { code?: unknown; stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new Error('radclient is not installed (Debian: apt-get install freeradius-utils)');
    output = `${e.stdout ?? ''}${e.stderr ?? ''}`;
    // radclient exits 1 on an Access-Reject as well as on no reply.
    if (!/Received /.test(output)) return undefined;
  }
  const code = /Received (Access-\w+|Status-\w+)/.exec(output)?.[1] ?? 'none';
  // -x prints the request sent, then the answer: only the answer's attributes count.
  const received = output.slice(output.indexOf('Received '));
  const messages = [...received.matchAll(/Reply-Message = "((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!.replace(/\\(.)/g, '$1'));
  const state = /State = (0x[0-9a-f]+)/.exec(received)?.[1];
  return { code, replyMessage: messages.length ? messages.join('') : undefined, state, output };
}
