import { createHash, createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';

/**
 * RADIUS packets (RFC 2865) with Message-Authenticator (RFC 3579 §3.2) and Status-Server
 * (RFC 5997). Pure functions over Buffers: no sockets, no clocks.
 *
 * Every authenticator is compared as bytes in constant time. The npm `radius` package compares
 * them as decoded text (`toString()`, UTF-8), where every invalid sequence becomes U+FFFD: many
 * different authenticators read the same, so forged ones can pass.
 */

export const Code = {
  AccessRequest: 1,
  AccessAccept: 2,
  AccessReject: 3,
  AccountingRequest: 4,
  AccountingResponse: 5,
  AccessChallenge: 11,
  StatusServer: 12,
  StatusClient: 13,
} as const;

export const Attr = {
  UserName: 1,
  UserPassword: 2,
  ChapPassword: 3,
  NasIpAddress: 4,
  NasPort: 5,
  SessionTimeout: 27,
  ReplyMessage: 18,
  State: 24,
  VendorSpecific: 26,
  CallingStationId: 31,
  NasIdentifier: 32,
  ProxyState: 33,
  ChapChallenge: 60,
  EapMessage: 79,
  MessageAuthenticator: 80,
  NasIpv6Address: 95,
} as const;

export interface Attribute {
  type: number;
  value: Buffer;
}

export interface Packet {
  code: number;
  identifier: number;
  authenticator: Buffer;
  attributes: Attribute[];
}

/** RFC 2865 §3: the Length field's bounds. */
export const MIN_PACKET = 20,
  MAX_PACKET = 4096;

/** Code, Identifier, Length, then the 16-octet authenticator. */
const HEADER = 20;
const AUTHENTICATOR = 16;
/** An attribute's Length octet counts its Type and Length octets too, so 255 - 2 octets of value. */
const MAX_VALUE = 253;
/** RFC 2865 §5.2: User-Password is hidden in 16-octet blocks, at most 128 octets. */
const PASSWORD_BLOCK = 16;
const MAX_PASSWORD = 128;

export type PacketProblem = 'too_short' | 'too_long' | 'length_mismatch' | 'bad_attribute';

/** A received datagram that is not a well-formed RADIUS packet (RFC 2865 says: silently discard it). */
export class PacketError extends Error {
  override name = 'PacketError';
  constructor(
    readonly problem: PacketProblem,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Checks the framing (RFC 2865 §3): a Length field of 20..4096 that the datagram holds (octets
 * beyond it are padding), and attributes of length >= 2 that end within it. `visit` sees each
 * attribute's type and where its value is, datagram[start, end). Nothing is copied and nothing is
 * allocated per attribute, so a packet can be judged (its Message-Authenticator checked) before it
 * is decoded. Throws PacketError. Returns the Length.
 */
function walk(datagram: Buffer, visit: (type: number, start: number, end: number) => void): number {
  if (datagram.length < MIN_PACKET) {
    throw new PacketError('too_short', `a datagram of ${datagram.length} octets is shorter than a RADIUS header`);
  }
  const length = datagram.readUInt16BE(2);
  if (length < MIN_PACKET) throw new PacketError('too_short', `Length ${length} is below ${MIN_PACKET}`);
  if (length > MAX_PACKET) throw new PacketError('too_long', `Length ${length} is above ${MAX_PACKET}`);
  // Octets beyond Length are padding (RFC 2865 §3); fewer octets than Length is a truncated packet.
  if (length > datagram.length) {
    throw new PacketError('length_mismatch', `Length ${length} is more than the ${datagram.length} octets received`);
  }
  let at = HEADER;
  while (at < length) {
    if (at + 2 > length) throw new PacketError('bad_attribute', `a lone octet at ${at} where an attribute header belongs`);
    const attributeLength = datagram[at + 1]!;
    if (attributeLength < 2) throw new PacketError('bad_attribute', `attribute at ${at} has length ${attributeLength}`);
    if (at + attributeLength > length) {
      throw new PacketError('bad_attribute', `attribute at ${at} runs past the packet's Length ${length}`);
    }
    visit(datagram[at]!, at + 2, at + attributeLength);
    at += attributeLength;
  }
  return length;
}

/** A well-framed datagram as its headers tell it, before any attribute is decoded. */
export interface Framing {
  code: number;
  /** The Length field: the packet is datagram[0, length). */
  length: number;
  /** Where the value of the one Message-Authenticator starts; 'missing' or 'invalid' when there is not exactly one of 16 octets. */
  messageAuthenticator: number | 'missing' | 'invalid';
  /** The first attribute's type, if any. */
  firstType: number | undefined;
}

/** Checks a datagram's framing (throws PacketError) and finds its Message-Authenticator, copying nothing. */
export function frameOf(datagram: Buffer): Framing {
  let found = 0;
  let valueAt = -1;
  let sixteen = false;
  let firstType: number | undefined;
  const length = walk(datagram, (type, start, end) => {
    firstType ??= type;
    if (type !== Attr.MessageAuthenticator) return;
    found++;
    valueAt = start;
    sixteen = end - start === AUTHENTICATOR;
  });
  // Two of them would leave the receiver to pick one; a sender that does this is broken or hostile.
  const messageAuthenticator = found === 0 ? 'missing' : found > 1 || !sixteen ? 'invalid' : valueAt;
  return { code: datagram[0]!, length, messageAuthenticator, firstType };
}

/**
 * Parses a datagram. RFC 2865 §3: octets beyond Length are padding and ignored; a Length larger
 * than the datagram, < 20 or > 4096 is an error; an attribute with length < 2 or running past
 * Length is an error. Unknown attribute types are kept (the caller ignores them). The
 * authenticator and the values are views into the datagram, not copies: the datagram must not be
 * changed while the packet is in use (a Buffer that a socket delivered is the datagram's own).
 */
export function decodePacket(datagram: Buffer): Packet {
  const attributes: Attribute[] = [];
  walk(datagram, (type, start, end) => void attributes.push({ type, value: datagram.subarray(start, end) }));
  return { code: datagram[0]!, identifier: datagram[1]!, authenticator: datagram.subarray(4, HEADER), attributes };
}

/** The attributes' values of one type, in order. */
export function attributesOf(p: Packet, type: number): Buffer[] {
  return p.attributes.filter((a) => a.type === type).map((a) => a.value);
}

/** The first value of a type, or undefined. */
export function attributeOf(p: Packet, type: number): Buffer | undefined {
  return p.attributes.find((a) => a.type === type)?.value;
}

/** Constant-time equality; unequal lengths are simply unequal (timingSafeEqual would throw). */
function sameBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * RFC 3579 §3.2: HMAC-MD5 keyed with the shared secret over the packet with the
 * Message-Authenticator's value as 16 zero octets and `authenticator` in the header (the
 * Request Authenticator: as sent in a request, the request's in a response).
 */
function messageAuthenticatorOf(packet: Buffer, valueAt: number, authenticator: Buffer, secret: Buffer): Buffer {
  const zeroed = Buffer.from(packet);
  authenticator.copy(zeroed, 4);
  zeroed.fill(0, valueAt, valueAt + AUTHENTICATOR);
  return createHmac('md5', hmacKey(secret)).update(zeroed).digest();
}

/**
 * The secret as a KeyObject, made once per secret: Node checks a Buffer key's kind on every
 * createHmac, which under load cost more than the HMAC itself (a profile of the RADIUS front at
 * 300 sign-ins/s put 12 % of its CPU there). A client's secret Buffer lives as long as the client.
 */
const hmacKeys = new WeakMap<Buffer, KeyObject>();
function hmacKey(secret: Buffer): KeyObject {
  let key = hmacKeys.get(secret);
  if (!key) {
    key = createSecretKey(secret);
    hmacKeys.set(secret, key);
  }
  return key;
}

/**
 * Request (Access-Request / Status-Server) Message-Authenticator check over the raw datagram
 * (only its first Length octets): 'missing' when absent, 'invalid' when not exactly one or wrong
 * length or wrong HMAC (constant-time compare), else 'ok'. A datagram that does not parse is
 * 'invalid' too, so this never throws on what the network sends. `framing`, when the caller has
 * it already (frameOf), saves walking the attributes again.
 */
export function checkRequestAuthenticator(datagram: Buffer, secret: Buffer, framing?: Framing): 'ok' | 'missing' | 'invalid' {
  if (!framing) {
    try {
      framing = frameOf(datagram);
    } catch (error) {
      if (error instanceof PacketError) return 'invalid';
      throw error;
    }
  }
  const at = framing.messageAuthenticator;
  if (typeof at === 'string') return at;
  const packet = datagram.subarray(0, framing.length);
  const expected = messageAuthenticatorOf(packet, at, packet.subarray(4, HEADER), secret);
  return sameBytes(expected, packet.subarray(at, at + AUTHENTICATOR)) ? 'ok' : 'invalid';
}

function requireAuthenticator(authenticator: Buffer, what: string): void {
  if (authenticator.length !== AUTHENTICATOR) {
    throw new RangeError(`${what} must be ${AUTHENTICATOR} octets, not ${authenticator.length}`);
  }
}

/**
 * The RFC 2865 §5.2 key stream, XORed onto `input` block by block: b1 = MD5(S + RA), then
 * bi = MD5(S + c(i-1)), where c is always the hidden (ciphertext) block, whichever way we go.
 */
function xorPasswordBlocks(input: Buffer, secret: Buffer, requestAuthenticator: Buffer, hiding: boolean): Buffer {
  const output = Buffer.alloc(input.length);
  let chain = requestAuthenticator;
  for (let at = 0; at < input.length; at += PASSWORD_BLOCK) {
    const key = createHash('md5').update(secret).update(chain).digest();
    for (let i = 0; i < PASSWORD_BLOCK; i++) output[at + i] = input[at + i]! ^ key[i]!;
    chain = (hiding ? output : input).subarray(at, at + PASSWORD_BLOCK);
  }
  return output;
}

/**
 * RFC 2865 §5.2: the password hidden in User-Password (length a multiple of 16, 16..128, else
 * throws PacketError bad_attribute), trailing NULs removed.
 */
export function revealPassword(hidden: Buffer, secret: Buffer, requestAuthenticator: Buffer): Buffer {
  requireAuthenticator(requestAuthenticator, 'the Request Authenticator');
  if (hidden.length < PASSWORD_BLOCK || hidden.length > MAX_PASSWORD || hidden.length % PASSWORD_BLOCK !== 0) {
    throw new PacketError('bad_attribute', `a hidden User-Password of ${hidden.length} octets (must be 16, 32, ... 128)`);
  }
  const padded = xorPasswordBlocks(hidden, secret, requestAuthenticator, false);
  let end = padded.length;
  while (end > 0 && padded[end - 1] === 0) end--;
  return padded.subarray(0, end);
}

/** The inverse, for test clients: pads with NULs to a multiple of 16 (max 128 octets). */
export function hidePassword(password: Buffer, secret: Buffer, requestAuthenticator: Buffer): Buffer {
  requireAuthenticator(requestAuthenticator, 'the Request Authenticator');
  if (password.length > MAX_PASSWORD) {
    throw new RangeError(`a password of ${password.length} octets does not fit User-Password (at most ${MAX_PASSWORD})`);
  }
  // An empty password still takes one block: the attribute's value is at least 16 octets.
  const blocks = Math.max(1, Math.ceil(password.length / PASSWORD_BLOCK));
  const padded = Buffer.alloc(blocks * PASSWORD_BLOCK);
  password.copy(padded);
  return xorPasswordBlocks(padded, secret, requestAuthenticator, true);
}

/** Header with `authenticator`, then the attributes in order; checks every field fits its octets. */
function assemble(code: number, identifier: number, authenticator: Buffer, attributes: readonly Attribute[]): Buffer {
  requireOctet(code, 'code');
  requireOctet(identifier, 'identifier');
  let length = HEADER;
  for (const a of attributes) {
    requireOctet(a.type, 'attribute type');
    if (a.value.length > MAX_VALUE) {
      throw new RangeError(`attribute ${a.type} has ${a.value.length} octets of value (at most ${MAX_VALUE})`);
    }
    length += 2 + a.value.length;
  }
  if (length > MAX_PACKET) throw new RangeError(`the packet would be ${length} octets (at most ${MAX_PACKET})`);
  const packet = Buffer.alloc(length);
  packet[0] = code;
  packet[1] = identifier;
  packet.writeUInt16BE(length, 2);
  authenticator.copy(packet, 4);
  let at = HEADER;
  for (const a of attributes) {
    packet[at] = a.type;
    packet[at + 1] = 2 + a.value.length;
    a.value.copy(packet, at + 2);
    at += 2 + a.value.length;
  }
  return packet;
}

function requireOctet(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n > 255) throw new RangeError(`${what} ${n} does not fit one octet`);
}

/** We add the Message-Authenticator ourselves; a second one from the caller would make the packet ambiguous. */
function refuseMessageAuthenticator(attributes: readonly Attribute[]): void {
  if (attributes.some((a) => a.type === Attr.MessageAuthenticator)) {
    throw new RangeError('attributes must not hold a Message-Authenticator: the codec adds and computes it');
  }
}

const placeholder = (): Attribute => ({ type: Attr.MessageAuthenticator, value: Buffer.alloc(AUTHENTICATOR) });

/**
 * An answer (Access-Accept/Reject/Challenge): Message-Authenticator FIRST, computed with the
 * request's authenticator, then `attributes` in order, then the Response Authenticator
 * MD5(Code+ID+Length+RequestAuth+Attributes+Secret). Throws if the result exceeds 4096 octets or
 * an attribute value exceeds 253 octets.
 *
 * First, because its value is unpredictable: forging an answer with an MD5 collision
 * (Blast-RADIUS, 2024) needs every octet in front of the attacker's collision blocks known in
 * advance.
 */
export function encodeResponse(a: {
  code: number;
  identifier: number;
  requestAuthenticator: Buffer;
  attributes: readonly Attribute[];
  secret: Buffer;
}): Buffer {
  requireAuthenticator(a.requestAuthenticator, 'the Request Authenticator');
  refuseMessageAuthenticator(a.attributes);
  const packet = assemble(a.code, a.identifier, a.requestAuthenticator, [placeholder(), ...a.attributes]);
  const valueAt = HEADER + 2;
  messageAuthenticatorOf(packet, valueAt, a.requestAuthenticator, a.secret).copy(packet, valueAt);
  // The header still holds the Request Authenticator, which is what RFC 2865 §3 hashes in its place.
  createHash('md5').update(packet).update(a.secret).digest().copy(packet, 4);
  return packet;
}

/**
 * A request, for test clients and the benchmark: given authenticator (16 random octets
 * normally), attributes in order, and when `messageAuthenticator` is true (default) a
 * Message-Authenticator appended and computed. (An Accounting-Request's authenticator, which
 * RFC 2866 computes, is not computed here.)
 */
export function encodeRequest(a: {
  code: number;
  identifier: number;
  authenticator: Buffer;
  attributes: readonly Attribute[];
  secret: Buffer;
  messageAuthenticator?: boolean;
}): Buffer {
  requireAuthenticator(a.authenticator, 'the authenticator');
  if (a.messageAuthenticator === false) return assemble(a.code, a.identifier, a.authenticator, a.attributes);
  refuseMessageAuthenticator(a.attributes);
  const packet = assemble(a.code, a.identifier, a.authenticator, [...a.attributes, placeholder()]);
  const valueAt = packet.length - AUTHENTICATOR;
  messageAuthenticatorOf(packet, valueAt, a.authenticator, a.secret).copy(packet, valueAt);
  return packet;
}

/**
 * For test clients: whether an answer's Response Authenticator and (if present)
 * Message-Authenticator are right for the request it answers; plus whether a
 * Message-Authenticator was present and first. A datagram that does not parse is not authentic.
 */
export function checkResponse(
  datagram: Buffer,
  requestAuthenticator: Buffer,
  secret: Buffer,
): { authentic: boolean; messageAuthenticatorFirst: boolean } {
  requireAuthenticator(requestAuthenticator, 'the Request Authenticator');
  let framed: Framing;
  try {
    framed = frameOf(datagram);
  } catch (error) {
    if (error instanceof PacketError) return { authentic: false, messageAuthenticatorFirst: false };
    throw error;
  }
  const packet = datagram.subarray(0, framed.length);
  const messageAuthenticatorFirst = framed.firstType === Attr.MessageAuthenticator;

  const expected = createHash('md5')
    .update(packet.subarray(0, 4))
    .update(requestAuthenticator)
    .update(packet.subarray(HEADER))
    .update(secret)
    .digest();
  let authentic = sameBytes(expected, packet.subarray(4, HEADER));

  const at = framed.messageAuthenticator;
  if (at === 'invalid') authentic = false;
  else if (at !== 'missing') {
    const mac = messageAuthenticatorOf(packet, at, requestAuthenticator, secret);
    // Both checks always run, so the time taken does not tell which one failed.
    authentic = sameBytes(mac, packet.subarray(at, at + AUTHENTICATOR)) && authentic;
  }
  return { authentic, messageAuthenticatorFirst };
}

/** Splits a text (Reply-Message) into attribute-sized chunks of at most 253 octets without cutting a UTF-8 character. */
export function textAttributes(type: number, text: string): Attribute[] {
  const bytes = Buffer.from(text, 'utf8');
  const chunks: Attribute[] = [];
  let start = 0;
  while (start < bytes.length) {
    let end = Math.min(start + MAX_VALUE, bytes.length);
    // Back off while the first octet left out is a continuation octet (10xxxxxx) of the last character.
    while (end < bytes.length && (bytes[end]! & 0xc0) === 0x80) end--;
    chunks.push({ type, value: Buffer.from(bytes.subarray(start, end)) });
    start = end;
  }
  return chunks;
}
