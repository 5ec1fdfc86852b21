import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { isIPv6 } from 'node:net';
import { Attr, attributeOf, attributesOf, checkResponse, Code, decodePacket, encodeRequest, hidePassword, type Attribute, type Packet } from '@mfa/radius/packet';

export interface RadiusTarget {
  host: string;
  port: number;
  secret: Buffer;
  timeoutMs: number;
}

export interface RadiusAnswer {
  code: 'Access-Accept' | 'Access-Reject' | 'Access-Challenge' | string;
  message: string | undefined;
  state: Buffer | undefined;
  ms: number;
}

const CODE_NAMES: Record<number, string> = { [Code.AccessAccept]: 'Access-Accept', [Code.AccessReject]: 'Access-Reject', [Code.AccessChallenge]: 'Access-Challenge' };

/**
 * One RADIUS request as a VPN sends it (with a Message-Authenticator), and its answer, checked:
 * an answer whose Response Authenticator or Message-Authenticator is wrong (a wrong secret, or
 * not the server) is an error, not an answer. Retransmits the same datagram (same Identifier and
 * authenticator) once a second until `timeoutMs`, as a NAS does.
 */
export async function radiusRequest(target: RadiusTarget, request: { code?: number; user?: string; password?: string; state?: Buffer; attributes?: Attribute[] }): Promise<RadiusAnswer> {
  const authenticator = randomBytes(16);
  const identifier = randomBytes(1)[0]!;
  const attributes: Attribute[] = [];
  if (request.user !== undefined) attributes.push({ type: Attr.UserName, value: Buffer.from(request.user, 'utf8') });
  if (request.password !== undefined) attributes.push({ type: Attr.UserPassword, value: hidePassword(Buffer.from(request.password, 'utf8'), target.secret, authenticator) });
  if (request.state) attributes.push({ type: Attr.State, value: request.state });
  attributes.push(...(request.attributes ?? []));
  const bytes = encodeRequest({ code: request.code ?? Code.AccessRequest, identifier, authenticator, attributes, secret: target.secret });
  const socket = createSocket(isIPv6(target.host) ? 'udp6' : 'udp4');
  const began = performance.now();
  try {
    const answer = await new Promise<Packet>((resolve, reject) => {
      // Every way out stops the resends first: one after the socket closed would throw.
      const settle = (outcome: () => void) => {
        clearInterval(resend);
        clearTimeout(timer);
        outcome();
      };
      const fail = (error: Error) => settle(() => reject(error));
      const send = () => socket.send(bytes, target.port, target.host, (error) => error && fail(error));
      const resend = setInterval(send, 1_000);
      const timer = setTimeout(
        () => fail(new Error(`no answer from ${target.host}:${target.port} within ${target.timeoutMs / 1000} s (a wrong secret, an address not in RADIUS_CLIENTS, or no server: the service answers none of them)`)),
        target.timeoutMs,
      );
      socket.on('message', (reply) => {
        if (reply[1] !== identifier) return;
        const check = checkResponse(reply, authenticator, target.secret);
        if (!check.authentic) fail(new Error('the answer is not authentic: its authenticators do not match this secret'));
        else settle(() => resolve(decodePacket(reply)));
      });
      socket.on('error', fail);
      send();
    });
    const messages = attributesOf(answer, Attr.ReplyMessage).map((v) => v.toString('utf8'));
    return {
      code: CODE_NAMES[answer.code] ?? `code ${answer.code}`,
      message: messages.length > 0 ? messages.join('') : undefined,
      state: attributeOf(answer, Attr.State),
      ms: performance.now() - began,
    };
  } finally {
    socket.close();
  }
}

/** "host" or "host:port" (IPv6 as "[::1]:1812"). */
export function parseServer(text: string, defaultPort = 1812): { host: string; port: number } {
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(text);
  const hostPort = /^([^:]+):(\d{1,5})$/.exec(text);
  const [host, port] = bracketed ? [bracketed[1]!, Number(bracketed[2] ?? defaultPort)] : hostPort ? [hostPort[1]!, Number(hostPort[2])] : [text, defaultPort];
  if (port < 1 || port > 65_535) throw new Error(`${text}: the port must be 1-65535`);
  return { host, port };
}
