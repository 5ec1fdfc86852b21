import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { describe, it } from 'node:test';
import { MAX_PBKDF2_ITERATIONS, parsePskc } from './pskc.js';
import { MAX_XML_TEXT } from './pskc-xml.js';
import { ImportFileError, MAX_IMPORT_TOKENS, type ParsedRow, type ParsedToken, type RejectedRow } from './types.js';

/** RFC 4226's and RFC 6030's test secret, "12345678901234567890". */
const SECRET = Buffer.from('3132333435363738393031323334353637383930', 'hex');
const RFC_PSK = Buffer.from('12345678901234567890123456789012', 'hex');

const PSKC = 'urn:ietf:params:xml:ns:keyprov:pskc';
const XENC = 'http://www.w3.org/2001/04/xmlenc#';
const DS = 'http://www.w3.org/2000/09/xmldsig#';
const TOTP = 'urn:ietf:params:xml:ns:keyprov:pskc:totp';
const HOTP = 'urn:ietf:params:xml:ns:keyprov:pskc:hotp';

type Keys = { password?: string; psk?: Buffer };

/** The rows of a file, fed whole or in chunks of `chunkBytes`. */
async function parse(xml: string | Buffer, keys: Keys = {}, chunkBytes?: number): Promise<ParsedRow[]> {
  const bytes = Buffer.isBuffer(xml) ? xml : Buffer.from(xml);
  const input =
    chunkBytes === undefined
      ? bytes
      : (async function* () {
          for (let at = 0; at < bytes.length; at += chunkBytes) yield bytes.subarray(at, at + chunkBytes);
        })();
  const rows: ParsedRow[] = [];
  for await (const row of parsePskc(input, keys)) rows.push(row);
  return rows;
}

const tokens = (rows: ParsedRow[]): ParsedToken[] => rows.flatMap((r) => (r.ok ? [r.token] : []));
const rejected = (rows: ParsedRow[]): RejectedRow[] => rows.flatMap((r) => (r.ok ? [] : [r.rejected]));
const summary = (rows: ParsedRow[]) => rows.map((r) => (r.ok ? `${r.token.row} ${r.token.serialNumber}` : `${r.rejected.row} ${r.rejected.reason}`));

async function fileError(xml: string | Buffer | AsyncIterable<Buffer>, keys: Keys, message: RegExp): Promise<void> {
  const rows: ParsedRow[] = [];
  await assert.rejects(
    (async () => {
      for await (const row of parsePskc(typeof xml === 'string' ? Buffer.from(xml) : (xml as Buffer), keys)) rows.push(row);
    })(),
    (error: unknown) => {
      assert.ok(error instanceof ImportFileError, String(error));
      assert.match(error.message, message);
      return true;
    },
  );
  return void rows;
}

// RFC 6030 figure 2: a plaintext HOTP key.
const FIGURE_2 = `<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" Id="exampleID1" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
  <KeyPackage>
    <DeviceInfo>
      <Manufacturer>Manufacturer</Manufacturer>
      <SerialNo>987654321</SerialNo>
      <UserId>DC=example-bank,DC=net</UserId>
    </DeviceInfo>
    <CryptoModuleInfo>
      <Id>CM_ID_001</Id>
    </CryptoModuleInfo>
    <Key Id="12345678" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
      <Issuer>Issuer</Issuer>
      <AlgorithmParameters>
        <ResponseFormat Length="8" Encoding="DECIMAL"/>
      </AlgorithmParameters>
      <Data>
        <Secret>
          <PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=</PlainValue>
        </Secret>
        <Counter>
          <PlainValue>0</PlainValue>
        </Counter>
      </Data>
      <UserId>UID=jsmith,DC=example-bank,DC=net</UserId>
    </Key>
  </KeyPackage>
</KeyContainer>
`;

// RFC 6030 figure 6: AES-128-CBC under the pre-shared key 12345678901234567890123456789012, HMAC-SHA1 MAC.
const FIGURE_6 = `<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0"
    xmlns="urn:ietf:params:xml:ns:keyprov:pskc"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
    xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
    <EncryptionKey>
        <ds:KeyName>Pre-shared-key</ds:KeyName>
    </EncryptionKey>
    <MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
        <MACKey>
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData>
                <xenc:CipherValue>
ESIzRFVmd4iZABEiM0RVZgKn6WjLaTC1sbeBMSvIhRejN9vJa2BOlSaMrR7I5wSX
                </xenc:CipherValue>
            </xenc:CipherData>
        </MACKey>
    </MACMethod>
    <KeyPackage>
        <DeviceInfo>
            <Manufacturer>Manufacturer</Manufacturer>
            <SerialNo>987654321</SerialNo>
        </DeviceInfo>
        <CryptoModuleInfo>
            <Id>CM_ID_001</Id>
        </CryptoModuleInfo>
        <Key Id="12345678" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
            <Issuer>Issuer</Issuer>
            <AlgorithmParameters>
                <ResponseFormat Length="8" Encoding="DECIMAL"/>
            </AlgorithmParameters>
            <Data>
                <Secret>
                    <EncryptedValue>
                        <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
                        <xenc:CipherData>
                            <xenc:CipherValue>
AAECAwQFBgcICQoLDA0OD+cIHItlB3Wra1DUpxVvOx2lef1VmNPCMl8jwZqIUqGv
                            </xenc:CipherValue>
                        </xenc:CipherData>
                    </EncryptedValue>
                    <ValueMAC>Su+NvtQfmvfJzF6bmQiJqoLRExc=</ValueMAC>
                </Secret>
                <Counter>
                    <PlainValue>0</PlainValue>
                </Counter>
            </Data>
        </Key>
    </KeyPackage>
</KeyContainer>
`;

// RFC 6030 figure 7: the key derived from the password "qwerty" with PBKDF2 (salt Ej7/PEpyEpw=, 1000 iterations, 16 bytes).
const FIGURE_7 = `<?xml version="1.0" encoding="UTF-8"?>
<pskc:KeyContainer
  xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
  xmlns:xenc11="http://www.w3.org/2009/xmlenc11#"
  xmlns:pkcs5=
  "http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#"
  xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Version="1.0">
    <pskc:EncryptionKey>
        <xenc11:DerivedKey>
            <xenc11:KeyDerivationMethod
              Algorithm=
 "http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2">
                <pkcs5:PBKDF2-params>
                    <Salt>
                        <Specified>Ej7/PEpyEpw=</Specified>
                    </Salt>
                    <IterationCount>1000</IterationCount>
                    <KeyLength>16</KeyLength>
                    <PRF/>
                </pkcs5:PBKDF2-params>
            </xenc11:KeyDerivationMethod>
            <xenc:ReferenceList>
                <xenc:DataReference URI="#ED"/>
            </xenc:ReferenceList>
            <xenc11:MasterKeyName>My Password 1</xenc11:MasterKeyName>
        </xenc11:DerivedKey>
    </pskc:EncryptionKey>
    <pskc:MACMethod
        Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
        <pskc:MACKey>
            <xenc:EncryptionMethod
            Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData>
                <xenc:CipherValue>
2GTTnLwM3I4e5IO5FkufoOEiOhNj91fhKRQBtBJYluUDsPOLTfUvoU2dStyOwYZx
                </xenc:CipherValue>
            </xenc:CipherData>
        </pskc:MACKey>
    </pskc:MACMethod>
    <pskc:KeyPackage>
        <pskc:DeviceInfo>
            <pskc:Manufacturer>TokenVendorAcme</pskc:Manufacturer>
            <pskc:SerialNo>987654321</pskc:SerialNo>
        </pskc:DeviceInfo>
        <pskc:CryptoModuleInfo>
            <pskc:Id>CM_ID_001</pskc:Id>
        </pskc:CryptoModuleInfo>
        <pskc:Key Algorithm=
        "urn:ietf:params:xml:ns:keyprov:pskc:hotp" Id="123456">
            <pskc:Issuer>Example-Issuer</pskc:Issuer>
            <pskc:AlgorithmParameters>
                <pskc:ResponseFormat Length="8" Encoding="DECIMAL"/>
            </pskc:AlgorithmParameters>
            <pskc:Data>
                <pskc:Secret>
                <pskc:EncryptedValue Id="ED">
                    <xenc:EncryptionMethod
                        Algorithm=
"http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
                        <xenc:CipherData>
                            <xenc:CipherValue>
      oTvo+S22nsmS2Z/RtcoF8Hfh+jzMe0RkiafpoDpnoZTjPYZu6V+A4aEn032yCr4f
                        </xenc:CipherValue>
                    </xenc:CipherData>
                    </pskc:EncryptedValue>
                    <pskc:ValueMAC>LP6xMvjtypbfT9PdkJhBZ+D6O4w=
                    </pskc:ValueMAC>
                </pskc:Secret>
            </pskc:Data>
        </pskc:Key>
    </pskc:KeyPackage>
</pskc:KeyContainer>
`;

/** A figure with its HOTP key turned into a TOTP key (the MAC covers the secret only, so it still holds). */
const asTotp = (xml: string) => xml.replace(/urn:ietf:params:xml:ns:keyprov:pskc:hotp/g, TOTP);

// ---- files built here, encrypted with node:crypto (python-pskc's files are in pskc-files.int.spec.ts)

interface Protection {
  cipher: 128 | 192 | 256;
  key: Buffer;
  /** undefined: no MACMethod at all. */
  mac?: { hash: 'sha1' | 'sha256'; key: Buffer };
  /** What the header says about the key. */
  header: string;
}

interface KeySpec {
  serial?: string;
  id?: string;
  algorithm?: string;
  suite?: string;
  format?: string;
  secret?: Buffer;
  /** Replaces the secret's element content (for damaged values). */
  secretXml?: string;
  data?: string;
  policy?: string;
  deviceExtra?: string;
  /** Corrupts the ValueMAC. */
  wrongMac?: boolean;
}

let ivCounter = 0;
/**
 * AES-CBC under a fixed-per-call IV (deterministic files, so deterministic tests), with PKCS #7
 * padding; `padded` false encrypts whole blocks as they are (a damaged value, when the last byte is 0).
 */
function encrypt(bits: number, key: Buffer, plain: Buffer, padded = true): Buffer {
  const iv = Buffer.alloc(16, ++ivCounter);
  const cipher = createCipheriv(`aes-${bits}-cbc`, key, iv).setAutoPadding(padded);
  return Buffer.concat([iv, cipher.update(plain), cipher.final()]);
}

/** Whether AES-128-CBC under `key` finds a valid PKCS #7 padding in IV ‖ ciphertext (node's own check). */
function paddingChecksOut(key: Buffer, data: Buffer): boolean {
  const decipher = createDecipheriv('aes-128-cbc', key, data.subarray(0, 16));
  decipher.update(data.subarray(16));
  try {
    decipher.final();
    return true;
  } catch {
    return false;
  }
}

const macUri = (hash: 'sha1' | 'sha256') => (hash === 'sha1' ? `${DS}hmac-sha1` : 'http://www.w3.org/2001/04/xmldsig-more#hmac-sha256');

function encryptedValue(protection: Protection, plain: Buffer, wrongMac = false, padded = true): string {
  const data = encrypt(protection.cipher, protection.key, plain, padded);
  const method = `<xenc:EncryptionMethod Algorithm="${XENC}aes${protection.cipher}-cbc"/>`;
  let xml = `<EncryptedValue>${method}<xenc:CipherData><xenc:CipherValue>${data.toString('base64')}</xenc:CipherValue></xenc:CipherData></EncryptedValue>`;
  if (protection.mac) {
    const mac = createHmac(protection.mac.hash, protection.mac.key).update(data).digest();
    if (wrongMac) mac[0]! ^= 1;
    xml += `<ValueMAC>${mac.toString('base64')}</ValueMAC>`;
  }
  return xml;
}

function keyPackage(spec: KeySpec, protection?: Protection): string {
  const secret = spec.secret ?? SECRET;
  const secretXml = spec.secretXml ?? (protection ? encryptedValue(protection, secret, spec.wrongMac) : `<PlainValue>${secret.toString('base64')}</PlainValue>`);
  const device = spec.serial === undefined && spec.deviceExtra === undefined ? '' : `<DeviceInfo><Manufacturer>Acme</Manufacturer>${spec.serial === undefined ? '' : `<SerialNo>${spec.serial}</SerialNo>`}<Model>T-1</Model>${spec.deviceExtra ?? ''}</DeviceInfo>`;
  const id = spec.id === undefined ? '' : ` Id="${spec.id}"`;
  const algorithm = spec.algorithm === '' ? '' : ` Algorithm="${spec.algorithm ?? TOTP}"`;
  const suite = spec.suite === undefined ? '' : `<Suite>${spec.suite}</Suite>`;
  const format = spec.format ?? '<ResponseFormat Length="6" Encoding="DECIMAL"/>';
  return `<KeyPackage>${device}<Key${id}${algorithm}><Issuer>Acme</Issuer><AlgorithmParameters>${suite}${format}</AlgorithmParameters><Data><Secret>${secretXml}</Secret>${spec.data ?? ''}</Data>${spec.policy ?? ''}</Key></KeyPackage>`;
}

function container(packages: string[], protection?: Protection): string {
  let header = '';
  if (protection) {
    header += protection.header;
    if (protection.mac) {
      const macKey = encrypt(protection.cipher, protection.key, protection.mac.key);
      header += `<MACMethod Algorithm="${macUri(protection.mac.hash)}"><MACKey><xenc:EncryptionMethod Algorithm="${XENC}aes${protection.cipher}-cbc"/><xenc:CipherData><xenc:CipherValue>${macKey.toString('base64')}</xenc:CipherValue></xenc:CipherData></MACKey></MACMethod>`;
    }
  }
  return `<?xml version="1.0" encoding="UTF-8"?>\n<KeyContainer Version="1.0" xmlns="${PSKC}" xmlns:ds="${DS}" xmlns:xenc="${XENC}">${header}${packages.join('\n')}</KeyContainer>\n`;
}

const pskProtection = (bits: 128 | 192 | 256, key: Buffer, mac?: 'sha1' | 'sha256'): Protection => ({
  cipher: bits,
  key,
  ...(mac ? { mac: { hash: mac, key: Buffer.alloc(mac === 'sha1' ? 20 : 32, 0x5a) } } : {}),
  header: '<EncryptionKey><ds:KeyName>Pre-shared-key</ds:KeyName></EncryptionKey>',
});

function passwordProtection(password: string, options: { iterations?: number; prf?: string; keyLength?: string } = {}): Protection {
  const salt = Buffer.from('salt of the test');
  const iterations = options.iterations ?? 1000;
  const hash = options.prf === undefined ? 'sha1' : 'sha256';
  const key = pbkdf2Sync(password, salt, Math.min(iterations, 1000), 16, hash);
  const prf = options.prf === undefined ? '' : `<PRF Algorithm="${options.prf}"/>`;
  return {
    cipher: 128,
    key,
    mac: { hash: 'sha1', key: Buffer.alloc(20, 0x33) },
    header:
      `<EncryptionKey><xenc11:DerivedKey xmlns:xenc11="http://www.w3.org/2009/xmlenc11#"><xenc11:KeyDerivationMethod Algorithm="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2">` +
      `<pkcs5:PBKDF2-params xmlns:pkcs5="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#"><pkcs5:Salt><pkcs5:Specified>${salt.toString('base64')}</pkcs5:Specified></pkcs5:Salt>` +
      `<pkcs5:IterationCount>${iterations}</pkcs5:IterationCount><pkcs5:KeyLength>${options.keyLength ?? '16'}</pkcs5:KeyLength>${prf}</pkcs5:PBKDF2-params></xenc11:KeyDerivationMethod></xenc11:DerivedKey></EncryptionKey>`,
  };
}

describe('PSKC: RFC 6030 figures', () => {
  it('figure 2 (plaintext): the HOTP key is refused; as TOTP its secret, serial and 8 digits are read', async () => {
    assert.deepEqual(await parse(FIGURE_2), [
      {
        ok: false,
        rejected: { row: 1, serialNumber: '987654321', reason: 'algorithm: HOTP (event/counter-based) tokens are not supported; only time-based (TOTP) tokens are' },
      },
    ]);
    assert.deepEqual(tokens(await parse(asTotp(FIGURE_2))), [
      { row: 1, serialNumber: '987654321', secret: SECRET, algorithm: 'SHA1', digits: 8, period: 30, manufacturer: 'Manufacturer' },
    ]);
  });

  it('figure 6 (AES-128-CBC, pre-shared key, HMAC-SHA1 MAC): decrypts with the psk, fails the file without it or with a wrong one', async () => {
    assert.match(rejected(await parse(FIGURE_6, { psk: RFC_PSK }))[0]!.reason, /^algorithm: HOTP/);
    for (const chunkBytes of [undefined, 3]) {
      assert.deepEqual(tokens(await parse(asTotp(FIGURE_6), { psk: RFC_PSK }, chunkBytes)), [
        { row: 1, serialNumber: '987654321', secret: SECRET, algorithm: 'SHA1', digits: 8, period: 30, manufacturer: 'Manufacturer' },
      ]);
    }
    await fileError(FIGURE_6, {}, /encrypted with a pre-shared key: give psk/);
    await fileError(FIGURE_6, { password: 'qwerty' }, /encrypted with a pre-shared key: give psk/);
    const wrong = Buffer.from(RFC_PSK);
    wrong[15]! ^= 1;
    await fileError(FIGURE_6, { psk: wrong }, /^wrong password or pre-shared key/);
    await fileError(FIGURE_6, { psk: Buffer.alloc(32, 1) }, /the pre-shared key has 32 bytes; the file's aes-128-cbc needs 16/);
  });

  it('figure 7 (PBKDF2 from "qwerty"): decrypts with the password, fails the file without it or with a wrong one', async () => {
    assert.match(rejected(await parse(FIGURE_7, { password: 'qwerty' }))[0]!.reason, /^algorithm: HOTP/);
    assert.deepEqual(tokens(await parse(asTotp(FIGURE_7), { password: 'qwerty' })), [
      { row: 1, serialNumber: '987654321', secret: SECRET, algorithm: 'SHA1', digits: 8, period: 30, manufacturer: 'TokenVendorAcme' },
    ]);
    await fileError(FIGURE_7, {}, /derived from a password \(PBKDF2\): give password/);
    await fileError(FIGURE_7, { psk: RFC_PSK }, /give password/);
    await fileError(FIGURE_7, { password: 'qwertz' }, /^wrong password or pre-shared key/);
  });

  it('reads namespaces by URI, whatever the prefixes, and ignores look-alikes from other namespaces', async () => {
    const prefixed = asTotp(FIGURE_2)
      .replace('xmlns="urn:ietf:params:xml:ns:keyprov:pskc"', 'xmlns:k="urn:ietf:params:xml:ns:keyprov:pskc"')
      .replace(/<(\/?)([A-Z])/g, '<$1k:$2');
    assert.equal(tokens(await parse(prefixed))[0]?.serialNumber, '987654321');
    const lookAlike = asTotp(FIGURE_2).replace('<SerialNo>987654321</SerialNo>', '<x:SerialNo xmlns:x="urn:example:other">999</x:SerialNo>');
    // Without a SerialNo of PSKC's namespace, the Key Id is the serial number.
    assert.equal(tokens(await parse(lookAlike))[0]?.serialNumber, '12345678');
    const wrongRoot = FIGURE_2.replace('xmlns="urn:ietf:params:xml:ns:keyprov:pskc"', 'xmlns="urn:example:other"');
    await fileError(wrongRoot, {}, /not a PSKC file/);
  });
});

describe('PSKC: protected files built here', () => {
  it('accepts an 8-digit HMAC-SHA256 60-second TOTP key, plain and under AES-256-CBC with an HMAC-SHA256 MAC', async () => {
    const spec: KeySpec = { serial: 'SN-256', suite: 'HMAC-SHA256', format: '<ResponseFormat Length="8" Encoding="DECIMAL"/>', data: '<Time><PlainValue>0</PlainValue></Time><TimeInterval><PlainValue>60</PlainValue></TimeInterval>', secret: Buffer.alloc(32, 7) };
    const expected = { row: 1, serialNumber: 'SN-256', secret: Buffer.alloc(32, 7), algorithm: 'SHA256', digits: 8, period: 60, manufacturer: 'Acme', model: 'T-1' };
    assert.deepEqual(tokens(await parse(container([keyPackage(spec)]))), [expected]);
    const psk = Buffer.alloc(32, 0x42);
    assert.deepEqual(tokens(await parse(container([keyPackage(spec, pskProtection(256, psk, 'sha256'))], pskProtection(256, psk, 'sha256')), { psk })), [expected]);
  });

  it('checks each MAC before decrypting: a wrong one refuses that key only', async () => {
    const psk = Buffer.alloc(16, 9);
    const p = pskProtection(128, psk, 'sha1');
    const xml = container([keyPackage({ serial: 'A' }, p), keyPackage({ serial: 'B', wrongMac: true }, p), keyPackage({ serial: 'C' }, p)], p);
    assert.deepEqual(summary(await parse(xml, { psk })), ['1 A', '2 secret: MAC check failed', '3 C']);
    assert.equal(rejected(await parse(xml, { psk }))[0]?.serialNumber, 'B');
  });

  it('fails the file when no encrypted value checks out, without a refusal per key first', async () => {
    const psk = Buffer.alloc(16, 9);
    const p = pskProtection(128, psk, 'sha1');
    // The MAC key decrypts, but every ValueMAC is wrong: the file is not what its MAC key says.
    await fileError(container([keyPackage({ serial: 'A', wrongMac: true }, p), keyPackage({ serial: 'B', wrongMac: true }, p)], p), { psk }, /^wrong password or pre-shared key/);
    const many = Array.from({ length: 40 }, (_, i) => keyPackage({ serial: `S${i}`, wrongMac: true }, p));
    const seen: ParsedRow[] = [];
    await assert.rejects(async () => {
      for await (const row of parsePskc(Buffer.from(container(many, p)), { psk })) seen.push(row);
    }, ImportFileError);
    assert.deepEqual(seen, []);
  });

  it('accepts an encrypted file without a MACMethod; a wrong psk then fails on the padding', async () => {
    const psk = Buffer.alloc(16, 0x21);
    const p = pskProtection(128, psk);
    const xml = container([keyPackage({ serial: 'NM1' }, p), keyPackage({ serial: 'NM2' }, p)], p);
    assert.deepEqual(summary(await parse(xml, { psk })), ['1 NM1', '2 NM2']);
    assert.deepEqual(tokens(await parse(xml, { psk }))[0]?.secret, SECRET);
    await fileError(xml, { psk: Buffer.alloc(16, 0x22) }, /^wrong password or pre-shared key/);
    // A ValueMAC with nothing to check it against is refused rather than ignored.
    const stray = container([keyPackage({ serial: 'NM3', secretXml: encryptedValue({ ...p, mac: { hash: 'sha1', key: Buffer.alloc(20) } }, SECRET) }, p)], p);
    assert.deepEqual(summary(await parse(stray, { psk })), ['1 secret: has a ValueMAC but the file names no MACMethod']);
  });

  it('without a MACMethod, lets no good padding vouch for a value that fails: the file fails', async () => {
    const psk = Buffer.alloc(16, 0x21);
    const p = pskProtection(128, psk);
    const damaged = encryptedValue(p, Buffer.alloc(32), false, false);
    // A value that does not decrypt, before or after one that does, fails the file: it could be a wrong key.
    for (const packages of [
      [keyPackage({ serial: 'B1', secretXml: damaged }, p), keyPackage({ serial: 'G1' }, p)],
      [keyPackage({ serial: 'G1' }, p), keyPackage({ serial: 'B1', secretXml: damaged }, p), keyPackage({ serial: 'G2' }, p)],
    ]) {
      await fileError(container(packages, p), { psk }, /^wrong password or pre-shared key, or a damaged file/);
    }
    // 32 values that decrypted prove the key: a damaged value after them refuses its key only.
    const proven = Array.from({ length: 32 }, (_, i) => keyPackage({ serial: `G${i}` }, p));
    const rows = await parse(container([...proven, keyPackage({ serial: 'B1', secretXml: damaged }, p), keyPackage({ serial: 'G32' }, p)], p), { psk });
    assert.deepEqual(summary(rows).slice(31), ['32 G31', '33 secret: does not decrypt (its padding is wrong)', '34 G32']);
  });

  it('without a MACMethod, fails the file for each of 500 wrong keys, with nothing imported, though some decrypt a value', async () => {
    const p = pskProtection(128, Buffer.alloc(16, 0x21));
    const secrets = Array.from({ length: 32 }, (_, i) => createHash('sha256').update(`secret ${i}`).digest().subarray(0, 20));
    const xml = Buffer.from(container(secrets.map((secret, i) => keyPackage({ serial: `S${i}`, secret }, p)), p));
    const values = [...xml.toString().matchAll(/<xenc:CipherValue>([^<]+)</g)].map((match) => Buffer.from(match[1]!, 'base64'));
    let lucky = 0;
    for (let i = 0; i < 500; i++) {
      const psk = createHash('sha256').update(`wrong key ${i}`).digest().subarray(0, 16);
      if (values.some((data) => paddingChecksOut(psk, data))) lucky++;
      const seen: ParsedRow[] = [];
      await assert.rejects(
        async () => {
          for await (const row of parsePskc(xml, { psk })) seen.push(row);
        },
        (error: unknown) => error instanceof ImportFileError && /^wrong password or pre-shared key/.test(error.message),
      );
      assert.deepEqual(seen, []);
    }
    // About one wrong key in eight finds a valid padding in one of 32 values: each of those used to import it.
    assert.ok(lucky > 30, `${lucky} wrong keys decrypt a value`);
  });

  it('reads an encrypted TimeInterval and Time: big-endian (as python-pskc writes them) or ASCII digits, MAC checked', async () => {
    const psk = Buffer.alloc(16, 9);
    for (const p of [pskProtection(128, psk, 'sha1'), pskProtection(128, psk)]) {
      const interval = (plain: Buffer, wrongMac = false) => `<TimeInterval>${encryptedValue(p, plain, wrongMac)}</TimeInterval>`;
      const time = (plain: Buffer) => `<Time>${encryptedValue(p, plain)}</Time>`;
      const packages = [
        keyPackage({ serial: 'I60', data: interval(Buffer.from([60])) }, p),
        keyPackage({ serial: 'I30', data: interval(Buffer.from([0, 0, 0, 30])) + time(Buffer.from([0])) }, p),
        keyPackage({ serial: 'A60', data: interval(Buffer.from('60')) + time(Buffer.from('0')) }, p),
        keyPackage({ serial: 'I45', data: interval(Buffer.from([45])) }, p),
        keyPackage({ serial: 'T7', data: interval(Buffer.from([30])) + time(Buffer.from([7])) }, p),
      ];
      const rows = await parse(container(packages, p), { psk });
      assert.deepEqual(
        tokens(rows).map((t) => `${t.serialNumber} ${t.period}`),
        ['I60 60', 'I30 30', 'A60 60'],
      );
      assert.deepEqual(summary(rows).slice(3), ['4 time interval: must be 30 or 60 seconds', '5 time: T0 must be 0 (a token counting from another epoch is not supported)']);
    }
    const p = pskProtection(128, psk, 'sha1');
    const odd = container(
      [
        keyPackage({ serial: 'M1', data: `<TimeInterval>${encryptedValue(p, Buffer.from([30]), true)}</TimeInterval>` }, p),
        keyPackage({ serial: 'M2', data: `<TimeInterval>${encryptedValue(p, Buffer.alloc(9, 1))}</TimeInterval>` }, p),
        keyPackage({ serial: 'M3', data: `<TimeInterval><PlainValue>30</PlainValue>${encryptedValue(p, Buffer.from([30]))}</TimeInterval>` }, p),
      ],
      p,
    );
    assert.deepEqual(summary(await parse(odd, { psk })), [
      '1 time interval: MAC check failed',
      '2 time interval: EncryptedValue is not a whole number (ASCII digits, or big-endian of at most 8 bytes)',
      '3 time interval: has both a PlainValue and an EncryptedValue',
    ]);
    // Without a MAC, a value that decrypts to no number counts against the key, as a bad padding does.
    const noMac = pskProtection(128, psk);
    const implausible = container([keyPackage({ serial: 'M2', data: `<TimeInterval>${encryptedValue(noMac, Buffer.alloc(9, 1))}</TimeInterval>` }, noMac)], noMac);
    await fileError(implausible, { psk }, /^wrong password or pre-shared key, or a damaged file/);
  });

  it('derives the key with PBKDF2 as the file says (PRF HMAC-SHA256), and bounds the iteration count', async () => {
    const p = passwordProtection('correct horse', { prf: 'http://www.w3.org/2001/04/xmldsig-more#hmac-sha256' });
    const xml = container([keyPackage({ serial: 'PW1' }, p)], p);
    assert.deepEqual(tokens(await parse(xml, { password: 'correct horse' }))[0]?.secret, SECRET);
    await fileError(xml, { password: 'correct horse battery' }, /^wrong password or pre-shared key/);
    const slow = passwordProtection('x', { iterations: MAX_PBKDF2_ITERATIONS + 1 });
    await fileError(container([keyPackage({ serial: 'PW2' }, slow)], slow), { password: 'x' }, /IterationCount must be a whole number from 1 to 10000000/);
    const odd = passwordProtection('x', { keyLength: '17' });
    await fileError(container([keyPackage({ serial: 'PW3' }, odd)], odd), { password: 'x' }, /KeyLength must be 16, 24 or 32/);
  });

  it('refuses damaged values per key: truncated or invalid base64, partial blocks', async () => {
    const psk = Buffer.alloc(16, 9);
    const p = pskProtection(128, psk, 'sha1');
    const good = encryptedValue(p, SECRET);
    const truncated = good.replace(/<xenc:CipherValue>([^<]*)<\/xenc:CipherValue>/, (_, b64: string) => `<xenc:CipherValue>${b64.slice(0, -3)}</xenc:CipherValue>`);
    const shortened = good.replace(/<xenc:CipherValue>([^<]*)<\/xenc:CipherValue>/, (_, b64: string) => `<xenc:CipherValue>${Buffer.from(b64, 'base64').subarray(0, 40).toString('base64')}</xenc:CipherValue>`);
    const xml = container(
      [
        keyPackage({ serial: 'T1', secretXml: truncated }, p),
        keyPackage({ serial: 'T2', secretXml: shortened }, p),
        keyPackage({ serial: 'T3', secretXml: good.replace(/<ValueMAC>([^<]*)</, '<ValueMAC>$1!<') }, p),
        keyPackage({ serial: 'T4' }, p),
        keyPackage({ serial: 'T5', secretXml: '<PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA</PlainValue>' }),
        keyPackage({ serial: 'T6', secretXml: '<PlainValue>MTIzNDU2Nzg5MDEy*zQ1Njc4OTA=</PlainValue>' }),
        keyPackage({ serial: 'T7', secretXml: '<PlainValue>\n  MTIzNDU2Nzg5\n  MDEyMzQ1Njc4OTA=\n</PlainValue>' }),
        keyPackage({ serial: 'T8', secretXml: '' }),
      ],
      p,
    );
    assert.deepEqual(summary(await parse(xml, { psk })), [
      '1 secret: CipherValue is missing or not valid base64',
      '2 secret: CipherValue is not an IV and whole AES blocks',
      '3 secret: ValueMAC is not valid base64',
      '4 T4',
      '5 secret: PlainValue is not valid base64',
      '6 secret: PlainValue is not valid base64',
      '7 T7',
      '8 secret: missing',
    ]);
  });
});

describe('PSKC: what a key must be', () => {
  const one = async (spec: KeySpec) => summary(await parse(container([keyPackage({ serial: 'SN', ...spec })])))[0];

  it('refuses what our TOTP cannot verify, each with its reason', async () => {
    assert.equal(await one({ algorithm: HOTP }), '1 algorithm: HOTP (event/counter-based) tokens are not supported; only time-based (TOTP) tokens are');
    assert.equal(await one({ algorithm: 'urn:ietf:params:xml:ns:keyprov:pskc#hotp' }), '1 algorithm: HOTP (event/counter-based) tokens are not supported; only time-based (TOTP) tokens are');
    assert.equal(await one({ algorithm: 'http://www.ietf.org/keyprov/pskc#ocra' }), '1 algorithm: not supported; only time-based tokens (urn:ietf:params:xml:ns:keyprov:pskc:totp) are');
    assert.equal(await one({ algorithm: '' }), '1 algorithm: missing (the Key has no Algorithm)');
    assert.equal(await one({ suite: 'HMAC-SHA512' }), '1 suite: HMAC-SHA512 is not supported (only HMAC-SHA1 and HMAC-SHA256)');
    assert.equal(await one({ suite: 'HMAC-MD5' }), '1 suite: not supported (only HMAC-SHA1 and HMAC-SHA256)');
    assert.equal(await one({ format: '<ResponseFormat Length="7" Encoding="DECIMAL"/>' }), '1 response format: Length must be 6 or 8');
    assert.equal(await one({ format: '<ResponseFormat Length="6" Encoding="HEXADECIMAL"/>' }), '1 response format: Encoding must be DECIMAL');
    assert.equal(await one({ format: '<ResponseFormat Length="6" Encoding="DECIMAL" CheckDigits="true"/>' }), '1 response format: check digits are not supported');
    assert.equal(await one({ data: '<TimeInterval><PlainValue>45</PlainValue></TimeInterval>' }), '1 time interval: must be 30 or 60 seconds');
    assert.equal(await one({ data: '<TimeInterval><PlainValue>thirty</PlainValue></TimeInterval>' }), '1 time interval: PlainValue must be a whole number');
    assert.equal(await one({ data: '<Time><PlainValue>1</PlainValue></Time>' }), '1 time: T0 must be 0 (a token counting from another epoch is not supported)');
    assert.equal(await one({ secret: Buffer.alloc(15, 1) }), '1 secret: shorter than 16 bytes');
    assert.equal(await one({ secret: Buffer.alloc(81, 1) }), '1 secret: longer than 80 bytes');
  });

  it('takes the defaults RFC 6030 allows: SHA-1 suite, 30 seconds, T0 of 0, 6 digits without a ResponseFormat', async () => {
    const rows = await parse(container([keyPackage({ serial: 'D1', format: '', data: '<Time><PlainValue>0</PlainValue></Time><Counter><PlainValue>5</PlainValue></Counter>' })]));
    assert.deepEqual(tokens(rows), [{ row: 1, serialNumber: 'D1', secret: SECRET, algorithm: 'SHA1', digits: 6, period: 30, manufacturer: 'Acme', model: 'T-1' }]);
    assert.equal(await one({ suite: 'HMAC-SHA1', data: '<TimeInterval><PlainValue> 30 </PlainValue></TimeInterval>' }), '1 SN');
  });

  it('refuses an expired key (Policy or DeviceInfo ExpiryDate), takes one expiring later', async () => {
    assert.equal(await one({ policy: '<Policy><ExpiryDate>2006-05-31T00:00:00Z</ExpiryDate></Policy>' }), '1 expiry date: the key expired on 2006-05-31');
    assert.equal(await one({ deviceExtra: '<ExpiryDate>2012-01-01T00:00:00+01:00</ExpiryDate>' }), '1 expiry date: the key expired on 2011-12-31');
    assert.equal(await one({ policy: '<Policy><StartDate>2006-05-01T00:00:00Z</StartDate><ExpiryDate>2999-05-31T00:00:00Z</ExpiryDate></Policy>' }), '1 SN');
    assert.equal(await one({ policy: '<Policy><ExpiryDate>next year</ExpiryDate></Policy>' }), '1 expiry date: Key/Policy/ExpiryDate is not a date and time (xs:dateTime)');
  });

  it('takes the serial number from DeviceInfo, else the Key Id; refuses a key with neither, or a hostile one', async () => {
    const rows = await parse(
      container([
        keyPackage({ serial: 'DEV-1', id: 'KEY-1' }),
        keyPackage({ id: 'KEY-2' }),
        keyPackage({}),
        keyPackage({ serial: 'EVIL\u202E1' }),
        keyPackage({ serial: 'S'.repeat(65) }),
        keyPackage({ serial: 'OK', deviceExtra: '' }).replace('<Model>T-1</Model>', `<Model>${'m'.repeat(65)}</Model>`),
      ]),
    );
    assert.deepEqual(summary(rows), [
      '1 DEV-1',
      '2 KEY-2',
      '3 serial number: missing (no DeviceInfo SerialNo and no Key Id)',
      '4 serial number: must not contain bidirectional override or isolate characters (U+202A to U+202E, U+2066 to U+2069)',
      '5 serial number: must be at most 64 characters',
      '6 model: must be at most 64 characters',
    ]);
    assert.equal(rejected(rows)[1]?.serialNumber, undefined);
  });

  it('refuses a later key with a serial number already imported, and packages without exactly one Key', async () => {
    const twoKeys = keyPackage({ serial: 'K2' }).replace('</Key>', '</Key><Key Id="x" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp"/>');
    const rows = await parse(container([keyPackage({ serial: 'A' }), keyPackage({ serial: 'B', algorithm: HOTP }), keyPackage({ serial: 'B' }), keyPackage({ serial: 'A' }), '<KeyPackage/>', twoKeys]));
    assert.deepEqual(summary(rows), [
      '1 A',
      '2 algorithm: HOTP (event/counter-based) tokens are not supported; only time-based (TOTP) tokens are',
      '3 B',
      '4 duplicate serial number (first at row 1)',
      '5 the KeyPackage has no Key',
      '6 the KeyPackage has more than one Key',
    ]);
  });
});

describe('PSKC: hostile files', () => {
  it('refuses a DOCTYPE: billion laughs and external entities never get expanded', async () => {
    const laughs =
      '<?xml version="1.0"?>\n<!DOCTYPE KeyContainer [\n<!ENTITY lol "lol">\n' +
      Array.from({ length: 9 }, (_, i) => `<!ENTITY lol${i + 1} "${`&lol${i === 0 ? '' : i};`.repeat(10)}">`).join('\n') +
      `\n]>\n<KeyContainer Version="1.0" xmlns="${PSKC}"><KeyPackage><DeviceInfo><SerialNo>&lol9;</SerialNo></DeviceInfo></KeyPackage></KeyContainer>`;
    const before = process.memoryUsage().heapUsed;
    await fileError(laughs, {}, /DOCTYPE/);
    assert.ok(process.memoryUsage().heapUsed - before < 50 * 1024 * 1024);
    const external = `<?xml version="1.0"?>\n<!DOCTYPE KeyContainer [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n<KeyContainer Version="1.0" xmlns="${PSKC}"><KeyPackage><DeviceInfo><SerialNo>&secret;</SerialNo></DeviceInfo></KeyPackage></KeyContainer>`;
    await fileError(external, {}, /DOCTYPE/);
    // Without a DOCTYPE, an entity is simply undefined.
    await fileError(`<KeyContainer Version="1.0" xmlns="${PSKC}"><KeyPackage><DeviceInfo><SerialNo>&secret;</SerialNo></DeviceInfo></KeyPackage></KeyContainer>`, {}, /not well-formed XML/);
  });

  it('fails on a text node over the limit, having read little more of the file', async () => {
    await fileError(container([keyPackage({ serial: 'S'.repeat(MAX_XML_TEXT + 1) })]), {}, /longer than 65536 characters/);
    // A 50 MB CipherValue, streamed: the parser stops within a few slices of the limit.
    let pulled = 0;
    async function* huge(): AsyncGenerator<Buffer> {
      const start = `<KeyContainer Version="1.0" xmlns="${PSKC}"><KeyPackage><Key Id="1"><Data><Secret><PlainValue>`;
      yield Buffer.from(start);
      const block = Buffer.alloc(64 * 1024, 'A');
      for (let i = 0; i < 800; i++) {
        pulled += block.length;
        yield block;
      }
    }
    await fileError(huge(), {}, /longer than 65536 characters/);
    assert.ok(pulled < 512 * 1024, `read ${pulled} bytes`);
    // The same in a comment, an attribute and an element name.
    await fileError(`<KeyContainer Version="1.0" xmlns="${PSKC}"><!--${'x'.repeat(200_000)}--></KeyContainer>`, {}, /longer than 65536 characters/);
    await fileError(`<KeyContainer Version="1.0" xmlns="${PSKC}"><KeyPackage><Key Id="${'x'.repeat(70_000)}"/></KeyPackage></KeyContainer>`, {}, /an attribute value longer than 65536 characters/);
    await fileError(`<KeyContainer Version="1.0" xmlns="${PSKC}"><KeyPackage a="${'x'.repeat(200_000)}"/></KeyContainer>`, {}, /longer than 65536 characters/);
    await fileError(`<KeyContainer Version="1.0" xmlns="${PSKC}"><${'x'.repeat(200_000)}/></KeyContainer>`, {}, /longer than 65536 characters/);
  });

  it('fails on deep nesting, a wrong version, broken XML, another encoding, a header after the keys', async () => {
    await fileError(`<KeyContainer Version="1.0" xmlns="${PSKC}">${'<a>'.repeat(40)}${'</a>'.repeat(40)}</KeyContainer>`, {}, /deeper than 32 levels/);
    await fileError(FIGURE_2.replace('Version="1.0"', 'Version="2.0"'), {}, /PSKC 1.0/);
    await fileError(FIGURE_2.replace('</KeyPackage>', ''), {}, /not well-formed XML/);
    await fileError(FIGURE_2.slice(0, 300), {}, /not well-formed XML/);
    await fileError(FIGURE_2.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"'), {}, /must be UTF-8/);
    await fileError(Buffer.concat([Buffer.from(FIGURE_2.slice(0, 200)), Buffer.from([0xff, 0xfe]), Buffer.from(FIGURE_2.slice(200))]), {}, /not UTF-8/);
    await fileError('', {}, /not well-formed XML/);
    await fileError(container([keyPackage({ serial: 'A' })]).replace('</KeyContainer>', '<EncryptionKey/></KeyContainer>'), {}, /EncryptionKey must come before the first KeyPackage/);
  });

  it(`fails a file of more than ${MAX_IMPORT_TOKENS} KeyPackages`, async () => {
    async function* many(count: number): AsyncGenerator<Buffer> {
      yield Buffer.from(`<KeyContainer Version="1.0" xmlns="${PSKC}">`);
      const block = Buffer.from('<KeyPackage/>'.repeat(1000));
      for (let i = 0; i < count / 1000; i++) yield block;
      yield Buffer.from('</KeyContainer>');
    }
    // Every KeyPackage up to the limit is read (each refused: it has no Key); the one after fails the file.
    let rows = 0;
    await assert.rejects(
      async () => {
        for await (const _ of parsePskc(many(MAX_IMPORT_TOKENS + 1000), {})) rows++;
      },
      (error: unknown) => error instanceof ImportFileError && /more than 200000 KeyPackages/.test(error.message),
    );
    assert.equal(rows, MAX_IMPORT_TOKENS);
  });
});
