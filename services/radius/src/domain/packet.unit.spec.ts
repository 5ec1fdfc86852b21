import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import {
  Attr,
  attributeOf,
  attributesOf,
  checkRequestAuthenticator,
  checkResponse,
  Code,
  decodePacket,
  encodeRequest,
  encodeResponse,
  frameOf,
  hidePassword,
  MAX_PACKET,
  PacketError,
  revealPassword,
  textAttributes,
  type Attribute,
  type Framing,
  type PacketProblem,
} from './packet.js';

/** Hex as the RFCs print it: pairs separated by spaces and line breaks. */
const hex = (text: string) => Buffer.from(text.replace(/\s+/g, ''), 'hex');
const ascii = (text: string) => Buffer.from(text, 'latin1');

/** The shared secret of every example in RFC 2865 §7 and RFC 5997 §6. */
const secret = ascii('xyzzy5461');
const wrongSecret = ascii('xyzzy5462');

/** Independent references for the expected values, written from the RFC formulas and not calling the code under test. */
const md5 = (...parts: Buffer[]) => parts.reduce((h, p) => h.update(p), createHash('md5')).digest();
const hmacMd5 = (key: Buffer, data: Buffer) => createHmac('md5', key).update(data).digest();
const requestAuthenticatorOf = (datagram: Buffer) => datagram.subarray(4, 20);

function throwsProblem(fn: () => unknown, problem: PacketProblem) {
  assert.throws(fn, (error: unknown) => error instanceof PacketError && error.problem === problem);
}

/** Every single-bit change of `packet`'s first `upTo` octets, one at a time. */
function* bitFlips(packet: Buffer, upTo = packet.length): Generator<{ flipped: Buffer; at: number; bit: number }> {
  for (let at = 0; at < upTo; at++) {
    for (let bit = 0; bit < 8; bit++) {
      const flipped = Buffer.from(packet);
      flipped[at]! ^= 1 << bit;
      yield { flipped, at, bit };
    }
  }
}

// RFC 2865 §7.1, "User Telnet to Specified Host": nemo, password "arctangent", and the Access-Accept.
const telnetRequest = hex(`
  01 00 00 38 0f 40 3f 94 73 97 80 57 bd 83 d5 cb
  98 f4 22 7a 01 06 6e 65 6d 6f 02 12 0d be 70 8d
  93 d4 13 ce 31 96 e4 3f 78 2a 0a ee 04 06 c0 a8
  01 10 05 06 00 00 00 03`);
const telnetAccept = hex(`
  02 00 00 26 86 fe 22 0e 76 24 ba 2a 10 05 f6 bf
  9b 55 e0 b2 06 06 00 00 00 01 0f 06 00 00 00 00
  0e 06 c0 a8 01 03`);

// RFC 2865 §7.2, "Framed User Authenticating with CHAP": flopsy, and the Access-Accept.
const chapRequest = hex(`
  01 01 00 47 2a ee 86 f0 8d 0d 55 96 9c a5 97 8e
  0d 33 67 a2 01 08 66 6c 6f 70 73 79 03 13 16 e9
  75 57 c3 16 18 58 95 f2 93 ff 63 44 07 72 75 04
  06 c0 a8 01 10 05 06 00 00 00 14 06 06 00 00 00
  02 07 06 00 00 00 01`);
const chapAccept = hex(`
  02 01 00 38 15 ef bc 7d ab 26 cf a3 dc 34 d9 c0
  3c 86 01 a4 06 06 00 00 00 02 07 06 00 00 00 01
  08 06 ff ff ff fe 0a 06 00 00 00 02 0d 06 00 00
  00 01 0c 06 00 00 05 dc`);

// RFC 2865 §7.3, "User with Challenge-Response card": mopsy, password "challenge", the
// Access-Challenge, the second request answering "99101462" with the State, and the Access-Reject.
const cardRequest = hex(`
  01 02 00 39 f3 a4 7a 1f 6a 6d 76 71 0b 94 7a b9
  30 41 a0 39 01 07 6d 6f 70 73 79 02 12 33 65 75
  73 77 82 89 b5 70 88 5e 15 08 48 25 c5 04 06 c0
  a8 01 10 05 06 00 00 00 07`);
const cardChallenge = hex(`
  0b 02 00 4e 36 f3 c8 76 4a e8 c7 11 57 40 3c 0c
  71 ff 9c 45 12 30 43 68 61 6c 6c 65 6e 67 65 20
  33 32 37 36 39 34 33 30 2e 20 20 45 6e 74 65 72
  20 72 65 73 70 6f 6e 73 65 20 61 74 20 70 72 6f
  6d 70 74 2e 18 0a 33 32 37 36 39 34 33 30`);
/** As printed in the RFC: the State's length octet reads 0x10 (16) where its 8-octet value needs 0x0a. */
const cardResponseAsPrinted = hex(`
  01 03 00 43 b1 22 55 6d 42 8a 13 d0 d6 25 38 07
  c4 57 ec f0 01 07 6d 6f 70 73 79 02 12 69 2c 1f
  20 5f c0 81 b9 19 b9 51 95 f5 61 a5 81 04 06 c0
  a8 01 10 05 06 00 00 00 07 18 10 33 32 37 36 39
  34 33 30`);
const cardReject = hex(`
  03 03 00 14 a4 2f 4f ca 45 91 6c 4e 09 c8 34 0f
  9e 74 6a a0`);

// RFC 5997 §6: Status-Server, each with a Message-Authenticator, and the answers.
const statusAuth = hex(`
  0c da 00 26 8a 54 f4 68 6f b3 94 c5 28 66 e3 02
  18 5d 06 23 50 12 5a 66 5e 2e 1e 84 11 f3 e2 43
  82 20 97 c8 4f a3`);
const statusAuthAccept = hex(`
  02 da 00 14 ef 0d 55 2a 4b f2 d6 93 ec 2b 6f e8
  b5 41 1d 66`);
const statusAcct = hex(`
  0c b3 00 26 92 5f 6b 66 dd 5f ed 57 1f cb 1d b7
  ad 38 82 60 50 12 e8 d6 ea bd a9 10 87 5c d9 1f
  da de 26 36 78 58`);
/** As printed in §6.2, whose first octet reads 02 although the text says Accounting-Response (5). */
const statusAcctResponseAsPrinted = hex(`
  02 b3 00 14 0f 6f 92 14 5f 10 7e 2f 50 4e 86 0a
  48 60 66 9c`);
const statusVerbose = hex(`
  0c 47 00 2c bf 58 de 56 ae 40 8a d3 b7 0c 85 13
  f9 b0 3f be 04 06 c0 00 02 10 50 12 85 2d 6f ec
  61 e7 ed 74 b8 e3 2d ac 2f 2a 5f b2`);
const statusVerboseAccept = hex(`
  02 47 00 34 46 f4 3e 62 fd 03 54 42 4c bb eb fd
  6d 21 4e 06 12 20 52 41 44 49 55 53 20 53 65 72
  76 65 72 20 75 70 20 32 20 64 61 79 73 2c 20 31
  38 3a 34 30`);

describe('RFC 2865 §7.1: User Telnet to Specified Host', () => {
  it('decodes the Access-Request', () => {
    const p = decodePacket(telnetRequest);
    assert.equal(p.code, Code.AccessRequest);
    assert.equal(p.identifier, 0);
    assert.deepEqual(p.authenticator, hex('0f 40 3f 94 73 97 80 57 bd 83 d5 cb 98 f4 22 7a'));
    assert.deepEqual(
      p.attributes.map((a) => a.type),
      [Attr.UserName, Attr.UserPassword, Attr.NasIpAddress, Attr.NasPort],
    );
    assert.deepEqual(attributeOf(p, Attr.UserName), ascii('nemo'));
    assert.deepEqual(attributeOf(p, Attr.NasIpAddress), Buffer.from([192, 168, 1, 16]));
    assert.equal(attributeOf(p, Attr.NasPort)?.readUInt32BE(0), 3);
  });

  it('reveals the password "arctangent", and hiding it gives back the RFC\'s 16 octets', () => {
    const p = decodePacket(telnetRequest);
    const hidden = attributeOf(p, Attr.UserPassword)!;
    assert.deepEqual(revealPassword(hidden, secret, p.authenticator), ascii('arctangent'));
    assert.deepEqual(hidePassword(ascii('arctangent'), secret, p.authenticator), hidden);
  });

  it('re-encodes the request octet for octet (the example has no Message-Authenticator)', () => {
    const p = decodePacket(telnetRequest);
    const again = encodeRequest({ ...p, secret, messageAuthenticator: false });
    assert.deepEqual(again, telnetRequest);
  });

  it('the Access-Accept\'s Response Authenticator verifies against the request', () => {
    assert.deepEqual(checkResponse(telnetAccept, requestAuthenticatorOf(telnetRequest), secret), {
      authentic: true,
      messageAuthenticatorFirst: false,
    });
    const accept = decodePacket(telnetAccept);
    assert.equal(accept.code, Code.AccessAccept);
    assert.deepEqual(attributeOf(accept, 14), Buffer.from([192, 168, 1, 3])); // Login-IP-Host
  });

  it('the Access-Accept does not verify with a wrong secret or against another request', () => {
    assert.equal(checkResponse(telnetAccept, requestAuthenticatorOf(telnetRequest), wrongSecret).authentic, false);
    assert.equal(checkResponse(telnetAccept, requestAuthenticatorOf(chapRequest), secret).authentic, false);
  });

  it('a wrong secret reveals something else than the password', () => {
    const p = decodePacket(telnetRequest);
    const revealed = revealPassword(attributeOf(p, Attr.UserPassword)!, wrongSecret, p.authenticator);
    assert.notDeepEqual(revealed, ascii('arctangent'));
  });
});

describe('RFC 2865 §7.2: Framed User Authenticating with CHAP', () => {
  it('decodes the request: flopsy, CHAP ID 22 and a 16-octet response, NAS-Port 20', () => {
    const p = decodePacket(chapRequest);
    assert.equal(p.identifier, 1);
    assert.deepEqual(attributeOf(p, Attr.UserName), ascii('flopsy'));
    const chap = attributeOf(p, Attr.ChapPassword)!;
    assert.equal(chap.length, 17);
    assert.equal(chap[0], 22);
    assert.equal(attributeOf(p, Attr.NasPort)?.readUInt32BE(0), 20);
    assert.equal(attributeOf(p, Attr.ChapChallenge), undefined); // the Request Authenticator is the challenge
  });

  it('the Access-Accept verifies with its octets as printed', () => {
    // The RFC's annotation says Framed-Routing = None (0), its octets say 2; the authenticator
    // was computed over the octets, so those are what must verify.
    assert.equal(checkResponse(chapAccept, requestAuthenticatorOf(chapRequest), secret).authentic, true);
    const edited = Buffer.from(chapAccept);
    edited[43] = 0;
    assert.equal(checkResponse(edited, requestAuthenticatorOf(chapRequest), secret).authentic, false);
  });
});

describe('RFC 2865 §7.3: User with Challenge-Response card', () => {
  it('reveals the first password "challenge"', () => {
    const p = decodePacket(cardRequest);
    assert.deepEqual(attributeOf(p, Attr.UserName), ascii('mopsy'));
    assert.deepEqual(revealPassword(attributeOf(p, Attr.UserPassword)!, secret, p.authenticator), ascii('challenge'));
  });

  it('the Access-Challenge verifies and carries the Reply-Message and State', () => {
    assert.equal(checkResponse(cardChallenge, requestAuthenticatorOf(cardRequest), secret).authentic, true);
    const challenge = decodePacket(cardChallenge);
    assert.equal(challenge.code, Code.AccessChallenge);
    assert.equal(attributeOf(challenge, Attr.ReplyMessage)?.toString('utf8'), 'Challenge 32769430.  Enter response at prompt.');
    assert.deepEqual(attributeOf(challenge, Attr.State), ascii('32769430'));
  });

  it('refuses the second request as printed: its State attribute runs past the Length', () => {
    throwsProblem(() => decodePacket(cardResponseAsPrinted), 'bad_attribute');
  });

  it('with the State length corrected to 10, the second request gives "99101462" and the same State', () => {
    const corrected = Buffer.from(cardResponseAsPrinted);
    corrected[58] = 0x0a;
    const p = decodePacket(corrected);
    assert.equal(p.identifier, 3);
    assert.deepEqual(revealPassword(attributeOf(p, Attr.UserPassword)!, secret, p.authenticator), ascii('99101462'));
    assert.deepEqual(attributeOf(p, Attr.State), attributeOf(decodePacket(cardChallenge), Attr.State));
  });

  it('the Access-Reject verifies against the second request', () => {
    // A Response Authenticator covers the request's authenticator only, so the State typo does not matter here.
    assert.deepEqual(checkResponse(cardReject, requestAuthenticatorOf(cardResponseAsPrinted), secret), {
      authentic: true,
      messageAuthenticatorFirst: false,
    });
    assert.equal(checkResponse(cardReject, requestAuthenticatorOf(cardRequest), secret).authentic, false);
  });
});

describe('RFC 5997 §6: Status-Server with Message-Authenticator', () => {
  const examples = [
    { name: '§6.1 authentication port', request: statusAuth, mac: '5a665e2e1e8411f3e243822097c84fa3' },
    { name: '§6.2 accounting port', request: statusAcct, mac: 'e8d6eabda910875cd91fdade26367858' },
    { name: '§6.3 verbose', request: statusVerbose, mac: '852d6fec61e7ed74b8e32dac2f2a5fb2' },
  ];

  for (const { name, request, mac } of examples) {
    it(`${name}: the Message-Authenticator verifies`, () => {
      const p = decodePacket(request);
      assert.equal(p.code, Code.StatusServer);
      assert.deepEqual(attributesOf(p, Attr.MessageAuthenticator), [hex(mac)]);
      assert.equal(checkRequestAuthenticator(request, secret), 'ok');
    });

    it(`${name}: a wrong secret is 'invalid'`, () => {
      assert.equal(checkRequestAuthenticator(request, wrongSecret), 'invalid');
    });

    it(`${name}: every single flipped bit fails`, () => {
      for (const { flipped, at, bit } of bitFlips(request)) {
        assert.notEqual(checkRequestAuthenticator(flipped, secret), 'ok', `octet ${at} bit ${bit}`);
      }
    });
  }

  it('§6.1: decodes ID 218 and the Access-Accept verifies', () => {
    assert.equal(decodePacket(statusAuth).identifier, 218);
    assert.deepEqual(checkResponse(statusAuthAccept, requestAuthenticatorOf(statusAuth), secret), {
      authentic: true,
      messageAuthenticatorFirst: false,
    });
  });

  it('§6.1: encodeRequest rebuilds the request octet for octet', () => {
    const built = encodeRequest({
      code: Code.StatusServer,
      identifier: 218,
      authenticator: requestAuthenticatorOf(statusAuth),
      attributes: [],
      secret,
    });
    assert.deepEqual(built, statusAuth);
  });

  it('§6.2: the answer verifies with code 5 (Accounting-Response), not with the printed 02', () => {
    const requestAuthenticator = requestAuthenticatorOf(statusAcct);
    assert.equal(checkResponse(statusAcctResponseAsPrinted, requestAuthenticator, secret).authentic, false);
    const corrected = Buffer.from(statusAcctResponseAsPrinted);
    corrected[0] = Code.AccountingResponse;
    assert.equal(checkResponse(corrected, requestAuthenticator, secret).authentic, true);
  });

  it('§6.3: NAS-IP-Address before the Message-Authenticator, and encodeRequest rebuilds it octet for octet', () => {
    const p = decodePacket(statusVerbose);
    assert.deepEqual(attributeOf(p, Attr.NasIpAddress), Buffer.from([192, 0, 2, 16]));
    const built = encodeRequest({
      code: Code.StatusServer,
      identifier: 71,
      authenticator: p.authenticator,
      attributes: [{ type: Attr.NasIpAddress, value: Buffer.from([192, 0, 2, 16]) }],
      secret,
    });
    assert.deepEqual(built, statusVerbose);
  });

  it('§6.3: the Access-Accept with its Reply-Message verifies', () => {
    assert.equal(checkResponse(statusVerboseAccept, requestAuthenticatorOf(statusVerbose), secret).authentic, true);
    assert.equal(
      attributeOf(decodePacket(statusVerboseAccept), Attr.ReplyMessage)?.toString('utf8'),
      'RADIUS Server up 2 days, 18:40',
    );
  });
});

describe('authenticators are compared as bytes, not as text', () => {
  // Octets that are not valid UTF-8 all decode to U+FFFD, so a comparison of toString() (the npm
  // `radius` package's) takes these forgeries for the real thing.
  it('a Response Authenticator that reads the same as UTF-8 text is still wrong', () => {
    const forged = Buffer.from(telnetAccept);
    forged[4] = 0x87; // was 0x86, a lone continuation octet
    assert.equal(forged.subarray(4, 20).toString(), telnetAccept.subarray(4, 20).toString());
    assert.equal(checkResponse(forged, requestAuthenticatorOf(telnetRequest), secret).authentic, false);
  });

  it('a Message-Authenticator that reads the same as UTF-8 text is still wrong', () => {
    const forged = Buffer.from(statusAuth);
    forged[27] = 0x85; // was 0x84, a lone continuation octet
    assert.equal(forged.subarray(22, 38).toString(), statusAuth.subarray(22, 38).toString());
    assert.equal(checkRequestAuthenticator(forged, secret), 'invalid');
  });
});

describe('checkRequestAuthenticator', () => {
  const authenticator = hex('00112233445566778899aabbccddeeff');
  const userName = { type: Attr.UserName, value: ascii('alice') };
  const signed = () => encodeRequest({ code: Code.AccessRequest, identifier: 7, authenticator, attributes: [userName], secret });

  /** A request carrying exactly `values` as its Message-Authenticators, as given (nothing computed). */
  function withMacs(values: Buffer[]): Buffer {
    return encodeRequest({
      code: Code.AccessRequest,
      identifier: 7,
      authenticator,
      attributes: [userName, ...values.map((value) => ({ type: Attr.MessageAuthenticator, value }))],
      secret,
      messageAuthenticator: false,
    });
  }

  it("'ok' for a request signed by encodeRequest, whose HMAC matches one computed independently", () => {
    const request = signed();
    assert.equal(checkRequestAuthenticator(request, secret), 'ok');
    const zeroed = Buffer.from(request);
    zeroed.fill(0, request.length - 16);
    assert.deepEqual(request.subarray(request.length - 16), hmacMd5(secret, zeroed));
  });

  it("'missing' when there is none", () => {
    assert.equal(checkRequestAuthenticator(withMacs([]), secret), 'missing');
    assert.equal(checkRequestAuthenticator(telnetRequest, secret), 'missing');
  });

  it("'invalid' for two Message-Authenticators, even when either one is the right HMAC", () => {
    assert.equal(checkRequestAuthenticator(withMacs([Buffer.alloc(16), Buffer.alloc(16)]), secret), 'invalid');
    // Each forged so that a checker reading only that one would accept it: the HMAC is computed
    // here over the packet with that value zeroed and the other one as it stands.
    for (const which of [0, 1]) {
      const forged = withMacs([Buffer.alloc(16, 0xaa), Buffer.alloc(16, 0xbb)]);
      const valueAt = forged.length - 18 * (2 - which) + 2;
      forged.fill(0, valueAt, valueAt + 16);
      hmacMd5(secret, forged).copy(forged, valueAt);
      assert.equal(checkRequestAuthenticator(forged, secret), 'invalid', `right HMAC in Message-Authenticator ${which + 1}`);
    }
  });

  it("'invalid' for a Message-Authenticator of 15 or 17 octets, or an empty one", () => {
    for (const size of [0, 15, 17]) {
      assert.equal(checkRequestAuthenticator(withMacs([Buffer.alloc(size)]), secret), 'invalid', `${size} octets`);
    }
  });

  it("'invalid' for 16 zero octets (an unsigned placeholder)", () => {
    assert.equal(checkRequestAuthenticator(withMacs([Buffer.alloc(16)]), secret), 'invalid');
  });

  it('ignores padding beyond Length, and the padding\'s content', () => {
    const request = signed();
    const padded = Buffer.concat([request, Buffer.from([0x50, 0x12, 1, 2, 3])]);
    assert.equal(checkRequestAuthenticator(padded, secret), 'ok');
  });

  it("'invalid' for a datagram that does not parse, instead of throwing", () => {
    assert.equal(checkRequestAuthenticator(Buffer.alloc(3), secret), 'invalid');
    assert.equal(checkRequestAuthenticator(cardResponseAsPrinted, secret), 'invalid');
  });

  it('frameOf says where the one Message-Authenticator is, and what comes first, without decoding', () => {
    const request = signed();
    assert.deepEqual(frameOf(request), { code: Code.AccessRequest, length: request.length, messageAuthenticator: request.length - 16, firstType: Attr.UserName });
    assert.equal(frameOf(withMacs([])).messageAuthenticator, 'missing');
    assert.equal(frameOf(withMacs([Buffer.alloc(16), Buffer.alloc(16)])).messageAuthenticator, 'invalid');
    assert.equal(frameOf(withMacs([Buffer.alloc(17)])).messageAuthenticator, 'invalid');
    assert.equal(checkRequestAuthenticator(request, secret, frameOf(request)), 'ok');
  });

  it('every flipped bit of a signed Access-Request fails', () => {
    for (const { flipped, at, bit } of bitFlips(signed())) {
      assert.notEqual(checkRequestAuthenticator(flipped, secret), 'ok', `octet ${at} bit ${bit}`);
    }
  });
});

describe('encodeResponse', () => {
  const request = decodePacket(telnetRequest);
  const attributes: Attribute[] = [
    ...textAttributes(Attr.ReplyMessage, 'Welcome.'),
    { type: Attr.State, value: ascii('0123456789abcdef') },
    { type: 200, value: Buffer.alloc(0) },
  ];
  const answer = () =>
    encodeResponse({
      code: Code.AccessChallenge,
      identifier: request.identifier,
      requestAuthenticator: request.authenticator,
      attributes,
      secret,
    });

  it('puts the Message-Authenticator first, then the attributes in order', () => {
    const p = decodePacket(answer());
    assert.equal(p.code, Code.AccessChallenge);
    assert.equal(p.identifier, 0);
    assert.deepEqual(
      p.attributes.map((a) => a.type),
      [Attr.MessageAuthenticator, Attr.ReplyMessage, Attr.State, 200],
    );
    assert.deepEqual(p.attributes.slice(1), attributes);
  });

  it('computes both authenticators as RFC 3579 §3.2 and RFC 2865 §3 say (recomputed here step by step)', () => {
    const wire = answer();
    // Message-Authenticator: HMAC-MD5 over the packet with the Request Authenticator in the header and 16 zero octets as its value.
    const forMac = Buffer.from(wire);
    request.authenticator.copy(forMac, 4);
    forMac.fill(0, 22, 38);
    assert.deepEqual(wire.subarray(22, 38), hmacMd5(secret, forMac));
    // Response Authenticator: MD5(Code + ID + Length + Request Authenticator + Attributes + Secret), attributes as sent.
    const expected = md5(wire.subarray(0, 4), request.authenticator, wire.subarray(20), secret);
    assert.deepEqual(wire.subarray(4, 20), expected);
  });

  it('checkResponse finds it authentic with the Message-Authenticator first', () => {
    assert.deepEqual(checkResponse(answer(), request.authenticator, secret), { authentic: true, messageAuthenticatorFirst: true });
  });

  it('is not authentic with a wrong secret or for another request', () => {
    assert.equal(checkResponse(answer(), request.authenticator, wrongSecret).authentic, false);
    assert.equal(checkResponse(answer(), requestAuthenticatorOf(chapRequest), secret).authentic, false);
  });

  it('every flipped bit makes it not authentic', () => {
    for (const { flipped, at, bit } of bitFlips(answer())) {
      assert.equal(checkResponse(flipped, request.authenticator, secret).authentic, false, `octet ${at} bit ${bit}`);
    }
  });

  it('a wrong Message-Authenticator alone (Response Authenticator recomputed to match) is not authentic', () => {
    const forged = answer();
    forged[22]! ^= 1;
    md5(forged.subarray(0, 4), request.authenticator, forged.subarray(20), secret).copy(forged, 4);
    assert.equal(checkResponse(forged, request.authenticator, secret).authentic, false);
  });

  it('a value of 253 octets fits, 254 throws', () => {
    const fits = encodeResponse({
      code: Code.AccessAccept,
      identifier: 1,
      requestAuthenticator: request.authenticator,
      attributes: [{ type: Attr.State, value: Buffer.alloc(253, 1) }],
      secret,
    });
    assert.equal(fits.length, 20 + 18 + 255);
    assert.throws(() =>
      encodeResponse({
        code: Code.AccessAccept,
        identifier: 1,
        requestAuthenticator: request.authenticator,
        attributes: [{ type: Attr.State, value: Buffer.alloc(254, 1) }],
        secret,
      }),
    );
  });

  it('exactly 4096 octets fits, one more throws', () => {
    // 20 header + 18 Message-Authenticator + 15 × 255 + one attribute of (4096 - 20 - 18 - 3825) = 233 octets.
    const build = (last: number) =>
      encodeResponse({
        code: Code.AccessAccept,
        identifier: 1,
        requestAuthenticator: request.authenticator,
        attributes: [
          ...Array.from({ length: 15 }, () => ({ type: Attr.VendorSpecific, value: Buffer.alloc(253) })),
          { type: Attr.VendorSpecific, value: Buffer.alloc(last - 2) },
        ],
        secret,
      });
    assert.equal(build(233).length, MAX_PACKET);
    assert.equal(checkResponse(build(233), request.authenticator, secret).authentic, true);
    assert.throws(() => build(234));
  });

  it('refuses a Message-Authenticator among the attributes: it adds its own', () => {
    assert.throws(() =>
      encodeResponse({
        code: Code.AccessAccept,
        identifier: 1,
        requestAuthenticator: request.authenticator,
        attributes: [{ type: Attr.MessageAuthenticator, value: Buffer.alloc(16) }],
        secret,
      }),
    );
  });
});

describe('encodeRequest', () => {
  const authenticator = hex('f0e1d2c3b4a5968778695a4b3c2d1e0f');

  it('round-trips through decodePacket with the Message-Authenticator last', () => {
    const attributes: Attribute[] = [
      { type: Attr.UserName, value: ascii('bob') },
      { type: Attr.UserPassword, value: hidePassword(ascii('secret-ish'), secret, authenticator) },
      { type: Attr.NasIdentifier, value: ascii('vpn-1') },
    ];
    const wire = encodeRequest({ code: Code.AccessRequest, identifier: 200, authenticator, attributes, secret });
    const p = decodePacket(wire);
    assert.equal(p.identifier, 200);
    assert.deepEqual(p.authenticator, authenticator);
    assert.deepEqual(p.attributes.slice(0, 3), attributes);
    assert.equal(p.attributes[3]?.type, Attr.MessageAuthenticator);
    assert.equal(checkRequestAuthenticator(wire, secret), 'ok');
    assert.deepEqual(revealPassword(attributeOf(p, Attr.UserPassword)!, secret, p.authenticator), ascii('secret-ish'));
  });

  it("without a Message-Authenticator when asked, which the check calls 'missing'", () => {
    const wire = encodeRequest({ code: Code.AccessRequest, identifier: 1, authenticator, attributes: [], secret, messageAuthenticator: false });
    assert.equal(wire.length, 20);
    assert.equal(checkRequestAuthenticator(wire, secret), 'missing');
  });

  it('refuses an authenticator that is not 16 octets, and an identifier that is not an octet', () => {
    assert.throws(() => encodeRequest({ code: 1, identifier: 1, authenticator: Buffer.alloc(15), attributes: [], secret }));
    assert.throws(() => encodeRequest({ code: 1, identifier: 256, authenticator, attributes: [], secret }));
    assert.throws(() => encodeRequest({ code: 1, identifier: -1, authenticator, attributes: [], secret }));
  });
});

describe('decodePacket on hostile input', () => {
  /** A header whose Length field says `length`, followed by `rest`. */
  const datagram = (length: number, rest: number[] = [], code = Code.AccessRequest) => {
    const header = Buffer.alloc(20);
    header[0] = code;
    header.writeUInt16BE(length, 2);
    return Buffer.concat([header, Buffer.from(rest)]);
  };

  it('refuses datagrams of 0 to 19 octets as too_short', () => {
    for (let n = 0; n < 20; n++) throwsProblem(() => decodePacket(Buffer.alloc(n, 0x01)), 'too_short');
  });

  it('refuses a Length field below 20 as too_short', () => {
    for (const length of [0, 1, 19]) throwsProblem(() => decodePacket(datagram(length, [1, 2, 3])), 'too_short');
  });

  it('refuses a Length field larger than the datagram as length_mismatch', () => {
    throwsProblem(() => decodePacket(datagram(21)), 'length_mismatch');
    throwsProblem(() => decodePacket(telnetRequest.subarray(0, telnetRequest.length - 1)), 'length_mismatch');
  });

  it('refuses a Length above 4096 as too_long, even when the datagram has the octets', () => {
    throwsProblem(() => decodePacket(Buffer.concat([datagram(4097), Buffer.alloc(4077, 0)])), 'too_long');
    throwsProblem(() => decodePacket(datagram(0xffff)), 'too_long');
  });

  it('takes octets beyond Length as padding, however many', () => {
    const p = decodePacket(Buffer.concat([telnetRequest, Buffer.alloc(5000, 0xff)]));
    assert.deepEqual(p, decodePacket(telnetRequest));
    assert.deepEqual(decodePacket(datagram(20, [1, 0])).attributes, []);
  });

  it('refuses attributes of length 0 and 1 as bad_attribute', () => {
    throwsProblem(() => decodePacket(datagram(22, [Attr.UserName, 0])), 'bad_attribute');
    throwsProblem(() => decodePacket(datagram(22, [Attr.UserName, 1])), 'bad_attribute');
    // Length 1 again, where a parser stepping one octet on would read a well-formed attribute next.
    throwsProblem(() => decodePacket(datagram(23, [Attr.NasPort, 1, 2])), 'bad_attribute');
  });

  it('refuses an attribute running past Length, even into octets the datagram has', () => {
    throwsProblem(() => decodePacket(datagram(24, [Attr.UserName, 6, 0x61, 0x62])), 'bad_attribute');
    throwsProblem(() => decodePacket(datagram(24, [Attr.UserName, 6, 0x61, 0x62, 0x63, 0x64])), 'bad_attribute');
  });

  it('refuses a lone type octet at the end', () => {
    throwsProblem(() => decodePacket(datagram(24, [Attr.UserName, 3, 0x61, Attr.State])), 'bad_attribute');
  });

  it('keeps a zero-length value (length 2: well-formed, the caller decides)', () => {
    const p = decodePacket(datagram(24, [Attr.State, 2, Attr.UserName, 2]));
    assert.deepEqual(p.attributes, [
      { type: Attr.State, value: Buffer.alloc(0) },
      { type: Attr.UserName, value: Buffer.alloc(0) },
    ]);
  });

  it('keeps unknown attribute types, in order, and finds values by type', () => {
    const p = decodePacket(datagram(33, [250, 3, 1, Attr.ReplyMessage, 3, 0x61, 0, 2, Attr.ReplyMessage, 3, 0x62, 255, 2]));
    assert.deepEqual(
      p.attributes.map((a) => a.type),
      [250, Attr.ReplyMessage, 0, Attr.ReplyMessage, 255],
    );
    assert.deepEqual(attributesOf(p, Attr.ReplyMessage), [ascii('a'), ascii('b')]);
    assert.deepEqual(attributeOf(p, Attr.ReplyMessage), ascii('a'));
    assert.deepEqual(attributesOf(p, Attr.State), []);
    assert.equal(attributeOf(p, Attr.State), undefined);
  });

  it('returns views into the datagram, copying nothing (a Buffer that a socket delivers holds that datagram alone)', () => {
    const wire = Buffer.from(telnetRequest);
    const p = decodePacket(wire);
    assert.deepEqual(attributeOf(p, Attr.UserName), ascii('nemo'));
    assert.deepEqual(p.authenticator, requestAuthenticatorOf(telnetRequest));
    assert.equal(attributeOf(p, Attr.UserName)!.buffer, wire.buffer);
    assert.equal(p.authenticator.buffer, wire.buffer);
  });

  it('fuzz: 10,000 random and mutated datagrams throw nothing but PacketError, and the checks never throw', () => {
    // A seeded generator (mulberry32) so that a failure can be replayed.
    let seed = 0x5eed2865;
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const below = (n: number) => Math.floor(random() * n);
    const vectors = [telnetRequest, telnetAccept, chapRequest, chapAccept, cardRequest, cardChallenge, statusAuth, statusVerbose];
    let decoded = 0;
    for (let round = 0; round < 10_000; round++) {
      let wire: Buffer;
      if (round % 2 === 0) {
        wire = Buffer.from(Array.from({ length: below(300) }, () => below(256)));
        // Half of those get a plausible Length so that the attribute walk is reached.
        if (wire.length >= 20 && round % 4 === 0) wire.writeUInt16BE(wire.length - below(4), 2);
      } else {
        wire = Buffer.from(vectors[below(vectors.length)]!);
        for (let n = 1 + below(4); n > 0; n--) wire[below(wire.length)] = below(256);
        if (below(4) === 0) wire = wire.subarray(0, below(wire.length + 1));
      }
      let problem: string | undefined;
      try {
        decodePacket(wire);
        decoded++;
      } catch (error) {
        assert.ok(error instanceof PacketError, `round ${round}: ${String(error)} for ${wire.toString('hex')}`);
        problem = error.problem;
      }
      // The framing that is checked before decoding refuses exactly what decoding refuses.
      let framed: Framing | undefined;
      try {
        framed = frameOf(wire);
      } catch (error) {
        assert.ok(error instanceof PacketError && error.problem === problem, `round ${round}: frameOf ${String(error)}, decodePacket ${problem}`);
      }
      if (framed) {
        assert.equal(problem, undefined, `round ${round}: frameOf accepted what decodePacket refused`);
        assert.equal(checkRequestAuthenticator(wire, secret, framed), checkRequestAuthenticator(wire, secret), `round ${round}`);
      }
      assert.doesNotThrow(() => checkRequestAuthenticator(wire, secret), `round ${round}`);
      assert.doesNotThrow(() => checkResponse(wire, requestAuthenticatorOf(telnetRequest), secret), `round ${round}`);
    }
    assert.ok(decoded > 100, `only ${decoded} datagrams decoded: the fuzzer barely reaches the attribute walk`);
  });
});

describe('User-Password hiding (RFC 2865 §5.2)', () => {
  const authenticator = hex('0f403f9473978057bd83d5cb98f4227a');

  /** The RFC 2865 §5.2 formula written out: b1 = MD5(S + RA), c1 = p1 xor b1, bi = MD5(S + c(i-1)). */
  function hiddenByTheBook(password: Buffer): Buffer {
    const padded = Buffer.alloc(Math.max(16, Math.ceil(password.length / 16) * 16));
    password.copy(padded);
    const out: Buffer[] = [];
    let previous = authenticator;
    for (let i = 0; i < padded.length; i += 16) {
      const b = md5(secret, previous);
      const c = Buffer.from(padded.subarray(i, i + 16).map((octet, j) => octet ^ b[j]!));
      out.push(c);
      previous = c;
    }
    return Buffer.concat(out);
  }

  for (const size of [0, 1, 15, 16, 17, 31, 32, 100, 127, 128]) {
    it(`a password of ${size} octets hides as the formula says and is revealed again`, () => {
      const password = Buffer.from(Array.from({ length: size }, (_, i) => 0x21 + (i % 90)));
      const hidden = hidePassword(password, secret, authenticator);
      assert.equal(hidden.length, Math.max(16, Math.ceil(size / 16) * 16));
      assert.deepEqual(hidden, hiddenByTheBook(password));
      assert.deepEqual(revealPassword(hidden, secret, authenticator), password);
    });
  }

  it('a password of 129 octets does not fit', () => {
    assert.throws(() => hidePassword(Buffer.alloc(129, 0x41), secret, authenticator), RangeError);
  });

  it('refuses hidden values that are not 16, 32, ... 128 octets as bad_attribute', () => {
    for (const size of [0, 1, 15, 17, 31, 33, 127, 129, 144, 253]) {
      throwsProblem(() => revealPassword(Buffer.alloc(size, 7), secret, authenticator), 'bad_attribute');
    }
  });

  it('a wrong secret or another authenticator reveals something else', () => {
    const hidden = hidePassword(ascii('correct horse battery staple'), secret, authenticator);
    assert.notDeepEqual(revealPassword(hidden, wrongSecret, authenticator), ascii('correct horse battery staple'));
    assert.notDeepEqual(revealPassword(hidden, secret, Buffer.alloc(16)), ascii('correct horse battery staple'));
  });
});

describe('textAttributes', () => {
  /** Throws on any invalid UTF-8, such as a character cut in two. */
  const strict = new TextDecoder('utf-8', { fatal: true });
  const chunksOf = (text: string) => textAttributes(Attr.ReplyMessage, text);

  it('gives nothing for an empty text (a Reply-Message needs at least one octet)', () => {
    assert.deepEqual(chunksOf(''), []);
  });

  it('keeps a short text whole', () => {
    assert.deepEqual(chunksOf('Enter the code.'), [{ type: Attr.ReplyMessage, value: ascii('Enter the code.') }]);
  });

  it('cuts ASCII at 253 octets', () => {
    const text = 'a'.repeat(600);
    assert.deepEqual(
      chunksOf(text).map((a) => a.value.length),
      [253, 253, 94],
    );
  });

  for (const [name, character] of [
    ['2-octet', 'é'],
    ['3-octet', '€'],
    ['4-octet', '🔑'],
  ] as const) {
    it(`never cuts a ${name} character, and the chunks join back to the text`, () => {
      for (const prefix of ['', 'x', 'xx', 'xxx']) {
        const text = prefix + character.repeat(300);
        const chunks = chunksOf(text);
        for (const chunk of chunks) {
          assert.equal(chunk.type, Attr.ReplyMessage);
          assert.ok(chunk.value.length >= 250 || chunk === chunks.at(-1), `a chunk of ${chunk.value.length} octets`);
          assert.ok(chunk.value.length <= 253);
          strict.decode(chunk.value);
        }
        assert.equal(chunks.map((c) => c.value.toString('utf8')).join(''), text);
      }
    });
  }
});
