import assert from 'node:assert/strict';
import { createCipheriv, createHmac, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { parsePskc } from './pskc.js';
import { ImportFileError, type ParsedRow } from './types.js';

const collect = async (xml: string, keys: { password?: string; psk?: Buffer } = {}) => {
  const rows: ParsedRow[] = [];
  for await (const row of parsePskc(Buffer.from(xml, 'utf8'), keys)) rows.push(row);
  return rows;
};
const tokens = (rows: ParsedRow[]) => rows.flatMap((r) => (r.ok ? [{ ...r.token, secret: r.token.secret.toString('hex') }] : []));
const reasons = (rows: ParsedRow[]) => rows.flatMap((r) => (r.ok ? [] : [r.rejected.reason]));
const totp = (xml: string) => xml.replace(/pskc:hotp"/g, 'pskc:totp"');

// RFC 6030 figure 6: AES-128-CBC under the pre-shared key 12345678901234567890123456789012 (hex),
// MAC key encrypted with it; the secret is "12345678901234567890". The figure's key is HOTP: the
// tests read it as TOTP (one attribute changed; the MAC covers only the encrypted value).
const FIGURE_6 = `<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
  <EncryptionKey><ds:KeyName>Pre-shared-key</ds:KeyName></EncryptionKey>
  <MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
    <MACKey>
      <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
      <xenc:CipherData><xenc:CipherValue>
    ESIzRFVmd4iZABEiM0RVZgKn6WjLaTC1sbeBMSvIhRejN9vJa2BOlSaMrR7I5wSX
      </xenc:CipherValue></xenc:CipherData>
    </MACKey>
  </MACMethod>
  <KeyPackage>
    <DeviceInfo><Manufacturer>Manufacturer</Manufacturer><SerialNo>987654321</SerialNo></DeviceInfo>
    <CryptoModuleInfo><Id>CM_ID_001</Id></CryptoModuleInfo>
    <Key Id="12345678" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
      <Issuer>Issuer</Issuer>
      <AlgorithmParameters><ResponseFormat Length="8" Encoding="DECIMAL"/></AlgorithmParameters>
      <Data>
        <Secret>
          <EncryptedValue>
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData><xenc:CipherValue>
    AAECAwQFBgcICQoLDA0OD+cIHItlB3Wra1DUpxVvOx2lef1VmNPCMl8jwZqIUqGv
            </xenc:CipherValue></xenc:CipherData>
          </EncryptedValue>
          <ValueMAC>Su+NvtQfmvfJzF6bmQiJqoLRExc=
          </ValueMAC>
        </Secret>
        <Counter><PlainValue>0</PlainValue></Counter>
      </Data>
    </Key>
  </KeyPackage>
</KeyContainer>`;

// RFC 6030 figure 7: PBKDF2 from the password "qwerty" (salt Ej7/PEpyEpw=, 1000 iterations, 16
// bytes), AES-128-CBC, HMAC-SHA1; the secret is "12345678901234567890".
const FIGURE_7 = `<?xml version="1.0" encoding="UTF-8"?>
<pskc:KeyContainer xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc" xmlns:xenc11="http://www.w3.org/2009/xmlenc11#" xmlns:pkcs5="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Version="1.0">
  <pskc:EncryptionKey>
    <xenc11:DerivedKey>
      <xenc11:KeyDerivationMethod Algorithm="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2">
        <pkcs5:PBKDF2-params>
          <Salt><Specified>Ej7/PEpyEpw=</Specified></Salt>
          <IterationCount>1000</IterationCount>
          <KeyLength>16</KeyLength>
          <PRF/>
        </pkcs5:PBKDF2-params>
      </xenc11:KeyDerivationMethod>
      <xenc:ReferenceList><xenc:DataReference URI="#ED"/></xenc:ReferenceList>
      <xenc11:MasterKeyName>My Password 1</xenc11:MasterKeyName>
    </xenc11:DerivedKey>
  </pskc:EncryptionKey>
  <pskc:MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
    <pskc:MACKey>
      <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
      <xenc:CipherData><xenc:CipherValue>
2GTTnLwM3I4e5IO5FkufoOEiOhNj91fhKRQBtBJYluUDsPOLTfUvoU2dStyOwYZx
      </xenc:CipherValue></xenc:CipherData>
    </pskc:MACKey>
  </pskc:MACMethod>
  <pskc:KeyPackage>
    <pskc:DeviceInfo><pskc:Manufacturer>TokenVendorAcme</pskc:Manufacturer><pskc:SerialNo>987654321</pskc:SerialNo></pskc:DeviceInfo>
    <pskc:CryptoModuleInfo><pskc:Id>CM_ID_001</pskc:Id></pskc:CryptoModuleInfo>
    <pskc:Key Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp" Id="123456">
      <pskc:Issuer>Example-Issuer</pskc:Issuer>
      <pskc:AlgorithmParameters><pskc:ResponseFormat Length="8" Encoding="DECIMAL"/></pskc:AlgorithmParameters>
      <pskc:Data>
        <pskc:Secret>
          <pskc:EncryptedValue Id="ED">
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData><xenc:CipherValue>
      oTvo+S22nsmS2Z/RtcoF8Hfh+jzMe0RkiafpoDpnoZTjPYZu6V+A4aEn032yCr4f
            </xenc:CipherValue></xenc:CipherData>
          </pskc:EncryptedValue>
          <pskc:ValueMAC>LP6xMvjtypbfT9PdkJhBZ+D6O4w=
          </pskc:ValueMAC>
        </pskc:Secret>
      </pskc:Data>
    </pskc:Key>
  </pskc:KeyPackage>
</pskc:KeyContainer>`;

const RFC_SECRET = Buffer.from('12345678901234567890').toString('hex');
const PSK = Buffer.from('12345678901234567890123456789012', 'hex');

/** A plaintext container of the given key packages (RFC 6030 §4 layout). */
const container = (packages: string) =>
  `<?xml version="1.0"?>\n<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">${packages}</KeyContainer>`;
const plainKey = (serial: string, secret: Buffer, extra: { suite?: string; length?: number; interval?: number; algorithm?: string; time?: number; expiry?: string } = {}) => `
  <KeyPackage>
    <DeviceInfo><Manufacturer>Acme</Manufacturer><SerialNo>${serial}</SerialNo><Model>M1</Model></DeviceInfo>
    <Key Id="${serial}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:${extra.algorithm ?? 'totp'}">
      <AlgorithmParameters>${extra.suite ? `<Suite>${extra.suite}</Suite>` : ''}<ResponseFormat Length="${extra.length ?? 6}" Encoding="DECIMAL"/></AlgorithmParameters>
      <Data>
        <Secret><PlainValue>${secret.toString('base64')}</PlainValue></Secret>
        ${extra.interval ? `<TimeInterval><PlainValue>${extra.interval}</PlainValue></TimeInterval>` : ''}
        ${extra.time !== undefined ? `<Time><PlainValue>${extra.time}</PlainValue></Time>` : ''}
      </Data>
      ${extra.expiry ? `<Policy><ExpiryDate>${extra.expiry}</ExpiryDate></Policy>` : ''}
    </Key>
  </KeyPackage>`;

describe('PSKC (RFC 6030)', () => {
  it("reads RFC 6030 figure 6's secret with the pre-shared key, MAC checked", async () => {
    const rows = await collect(totp(FIGURE_6), { psk: PSK });
    assert.deepEqual(tokens(rows), [{ row: 1, serialNumber: '987654321', secret: RFC_SECRET, algorithm: 'SHA1', digits: 8, period: 30, manufacturer: 'Manufacturer' }]);
  });

  it("reads RFC 6030 figure 7's secret with the password (PBKDF2), MAC checked", async () => {
    const rows = await collect(totp(FIGURE_7), { password: 'qwerty' });
    assert.deepEqual(tokens(rows), [{ row: 1, serialNumber: '987654321', secret: RFC_SECRET, algorithm: 'SHA1', digits: 8, period: 30, manufacturer: 'TokenVendorAcme' }]);
  });

  it('refuses the figures as they are: their keys are HOTP (event-based)', async () => {
    assert.match(reasons(await collect(FIGURE_6, { psk: PSK }))[0]!, /HOTP/);
  });

  it('fails the file for a wrong password or pre-shared key, or none given', async () => {
    await assert.rejects(collect(totp(FIGURE_7), { password: 'qwertz' }), (e: Error) => e instanceof ImportFileError && /wrong password/.test(e.message));
    await assert.rejects(collect(totp(FIGURE_6), { psk: Buffer.alloc(16, 7) }), (e: Error) => e instanceof ImportFileError && /wrong password or pre-shared key/.test(e.message));
    await assert.rejects(collect(totp(FIGURE_7)), /give password/);
    await assert.rejects(collect(totp(FIGURE_6)), /give psk/);
  });

  it('rejects a value whose MAC does not match before decrypting it, and keeps going', async () => {
    const tampered = totp(FIGURE_6).replace('Su+NvtQfmvfJzF6bmQiJqoLRExc=', 'Tu+NvtQfmvfJzF6bmQiJqoLRExc=');
    assert.match(reasons(await collect(tampered, { psk: PSK }))[0]!, /MAC check failed/);
    const noMac = totp(FIGURE_6).replace(/<ValueMAC>[^<]*<\/ValueMAC>/, '');
    assert.match(reasons(await collect(noMac, { psk: PSK }))[0]!, /ValueMAC missing/);
  });

  it('rejects truncated base64 in a plain or an encrypted value', async () => {
    const truncated = totp(FIGURE_6).replace('AAECAwQFBgcICQoLDA0OD+cIHItlB3Wra1DUpxVvOx2lef1VmNPCMl8jwZqIUqGv', 'AAECAwQFBgcICQoLDA0OD+cIHItlB3Wra1DUpxVvOx2lef1VmNPCMl8jwZqIUqG');
    assert.match(reasons(await collect(truncated, { psk: PSK }))[0]!, /not valid base64/);
    const plain = container(plainKey('T-1', randomBytes(20))).replace(/<PlainValue>([^<]{10})[^<]*<\/PlainValue>/, '<PlainValue>$1</PlainValue>');
    assert.match(reasons(await collect(plain))[0]!, /not valid base64/);
  });

  it('reads SHA-256, 8-digit, 60-second TOTP keys and refuses what it cannot verify, key by key', async () => {
    const s = randomBytes(32);
    const rows = await collect(
      container(
        plainKey('OK-256', s, { suite: 'HMAC-SHA256', length: 8, interval: 60 }) +
          plainKey('SHA512', randomBytes(20), { suite: 'HMAC-SHA512' }) +
          plainKey('LEN-7', randomBytes(20), { length: 7 }) +
          plainKey('T61', randomBytes(20), { interval: 61 }) +
          plainKey('T0', randomBytes(20), { time: 1000 }) +
          plainKey('OLD', randomBytes(20), { expiry: '2020-01-01T00:00:00Z' }) +
          plainKey('SHORT', randomBytes(10)) +
          plainKey('OK-256', randomBytes(20)),
      ),
    );
    assert.deepEqual(tokens(rows), [{ row: 1, serialNumber: 'OK-256', secret: s.toString('hex'), algorithm: 'SHA256', digits: 8, period: 60, manufacturer: 'Acme', model: 'M1' }]);
    const why = reasons(rows);
    assert.equal(why.length, 7);
    for (const [i, pattern] of [/suite/, /response length/, /time interval/, /time origin/, /expired/, /shorter than 16 bytes/, /duplicate serial number \(first at key package 1\)/].entries()) assert.match(why[i]!, pattern);
  });

  it('refuses a DOCTYPE (billion laughs, external entities) without expanding anything', async () => {
    const laughs = `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"><KeyPackage><DeviceInfo><SerialNo>&lol3;</SerialNo></DeviceInfo></KeyPackage></KeyContainer>`;
    await assert.rejects(collect(laughs), (e: Error) => e instanceof ImportFileError && /DOCTYPE/.test(e.message));
    const external = `<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"><KeyPackage><DeviceInfo><SerialNo>&xxe;</SerialNo></DeviceInfo></KeyPackage></KeyContainer>`;
    await assert.rejects(collect(external), /DOCTYPE/);
  });

  it('fails the file for huge fields, broken XML and files that are not PSKC', async () => {
    await assert.rejects(collect(container(plainKey('H', randomBytes(20)).replace('<Model>M1</Model>', `<Model>${'x'.repeat(70_000)}</Model>`))), /more than 65536 characters/);
    await assert.rejects(collect('<KeyContainer xmlns="urn:ietf:params:xml:ns:keyprov:pskc"><KeyPackage>'), /not a readable XML file/);
    await assert.rejects(collect('<html><body>hello</body></html>'), /not a PSKC file/);
    await assert.rejects(collect('not xml at all'), ImportFileError);
  });

  it('reads a file split into arbitrary chunks, one key package per row, in order', async () => {
    const xml = container(Array.from({ length: 50 }, (_, i) => plainKey(`C-${i}`, randomBytes(20))).join(''));
    const bytes = Buffer.from(xml);
    async function* chunks() {
      for (let i = 0; i < bytes.length; i += 97) yield bytes.subarray(i, i + 97);
    }
    const rows: ParsedRow[] = [];
    for await (const row of parsePskc(chunks(), {})) rows.push(row);
    assert.deepEqual(tokens(rows).map((t) => [t.row, t.serialNumber]), Array.from({ length: 50 }, (_, i) => [i + 1, `C-${i}`]));
  });

  it('checks an HMAC-SHA256 value MAC and AES-256 encryption made here', async () => {
    const key = randomBytes(32);
    const macKey = randomBytes(32);
    const encrypt = (plain: Buffer) => {
      const iv = randomBytes(16);
      const c = createCipheriv('aes-256-cbc', key, iv);
      return Buffer.concat([iv, c.update(plain), c.final()]);
    };
    const secret = randomBytes(20);
    const value = encrypt(secret);
    const xml = `<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
      <EncryptionKey><ds:KeyName>transport</ds:KeyName></EncryptionKey>
      <MACMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"><MACKey><xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes256-cbc"/><xenc:CipherData><xenc:CipherValue>${encrypt(macKey).toString('base64')}</xenc:CipherValue></xenc:CipherData></MACKey></MACMethod>
      <KeyPackage><DeviceInfo><SerialNo>E-1</SerialNo></DeviceInfo><Key Id="E-1" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp"><Data><Secret>
        <EncryptedValue><xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes256-cbc"/><xenc:CipherData><xenc:CipherValue>${value.toString('base64')}</xenc:CipherValue></xenc:CipherData></EncryptedValue>
        <ValueMAC>${createHmac('sha256', macKey).update(value).digest('base64')}</ValueMAC>
      </Secret></Data></Key></KeyPackage></KeyContainer>`;
    assert.equal(tokens(await collect(xml, { psk: key }))[0]?.secret, secret.toString('hex'));
    await assert.rejects(collect(xml, { psk: randomBytes(16) }), /16 bytes/);
  });
});
