import { createDecipheriv, createHmac, pbkdf2Sync, timingSafeEqual } from 'node:crypto';
import { SaxesParser, type SaxesTagNS } from 'saxes';
import { ImportFileError, MAX_IMPORT_TOKENS, MIN_SECRET_BYTES, type OathAlgorithm, type ParsedRow } from './types.js';

/**
 * PSKC, the Portable Symmetric Key Container (RFC 6030), read as a stream with saxes, so a file of
 * 100,000 keys takes the memory of one key package, not of the document. What is read:
 * - DeviceInfo (Manufacturer, SerialNo, Model) and Key (Id, Algorithm) of each KeyPackage; the
 *   serial number is SerialNo, else the key's Id;
 * - TOTP keys only (`urn:ietf:params:xml:ns:keyprov:pskc:totp`): event-based HOTP keys are refused
 *   one by one, since this service verifies time-based codes;
 * - AlgorithmParameters: Suite (HMAC-SHA1 by default, or HMAC-SHA256), ResponseFormat Length 6 or 8
 *   with DECIMAL encoding; Data: Secret, TimeInterval (30 by default, or 60), Time (T0, must be 0);
 *   Policy ExpiryDate (an expired key is refused);
 * - encryption (RFC 6030 §6): AES-CBC (128, 192 or 256) under a pre-shared key (§6.1, EncryptionKey
 *   /KeyName) or a PBKDF2 key from a password (§6.2, EncryptionKey/DerivedKey); with a MACMethod
 *   (HMAC-SHA1 or HMAC-SHA256, its MACKey itself encrypted), each encrypted value's ValueMAC over
 *   IV ‖ ciphertext is checked in constant time before the value is decrypted.
 * Element names are matched by local name within the PSKC, XML Encryption, XML Signature and
 * PKCS #5 namespaces; anything else is ignored. A DOCTYPE is refused outright: no entity is ever
 * declared, so none is expanded (billion laughs, external entities).
 */

const NAMESPACES: ReadonlySet<string> = new Set([
  'urn:ietf:params:xml:ns:keyprov:pskc',
  'http://www.w3.org/2001/04/xmlenc#',
  'http://www.w3.org/2000/09/xmldsig#',
  'http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#',
  'http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5#',
  'http://www.w3.org/2009/xmlenc11#',
  // Writers put the PBKDF2 parameters (Salt, IterationCount...) in no namespace (python-pskc does).
  '',
]);
/** Longest text of one element: a secret is tens of bytes; a huge node is a hostile file's. */
const MAX_TEXT = 64 * 1024;
/** PBKDF2 iterations at most (a file could otherwise make every read of it take hours). */
const MAX_ITERATIONS = 2_000_000;

const CIPHERS: Readonly<Record<string, { name: string; keyBytes: number }>> = {
  'http://www.w3.org/2001/04/xmlenc#aes128-cbc': { name: 'aes-128-cbc', keyBytes: 16 },
  'http://www.w3.org/2001/04/xmlenc#aes192-cbc': { name: 'aes-192-cbc', keyBytes: 24 },
  'http://www.w3.org/2001/04/xmlenc#aes256-cbc': { name: 'aes-256-cbc', keyBytes: 32 },
};
const MACS: Readonly<Record<string, 'sha1' | 'sha256'>> = {
  'http://www.w3.org/2000/09/xmldsig#hmac-sha1': 'sha1',
  'http://www.w3.org/2001/04/xmldsig-more#hmac-sha256': 'sha256',
};
const PRFS: Readonly<Record<string, 'sha1' | 'sha256' | 'sha512'>> = {
  'http://www.w3.org/2000/09/xmldsig#hmac-sha1': 'sha1',
  'http://www.w3.org/2001/04/xmldsig-more#hmac-sha256': 'sha256',
  'http://www.w3.org/2001/04/xmldsig-more#hmac-sha512': 'sha512',
};

interface Encrypted {
  algorithm?: string;
  cipherValue?: string;
}

/** What is collected of one KeyPackage while it is read. */
interface KeyPackage {
  manufacturer?: string;
  serialNo?: string;
  model?: string;
  keyId?: string;
  algorithm?: string;
  suite?: string;
  length?: string;
  encoding?: string;
  plainSecret?: string;
  encryptedSecret?: Encrypted;
  valueMac?: string;
  timeInterval?: string;
  time?: string;
  expiryDate?: string;
}

/** The file's key material: declared in its header, derived at the first encrypted value. */
interface Header {
  keyName?: string;
  derivation?: string;
  salt?: string;
  iterations?: string;
  keyLength?: string;
  prf?: string;
  macAlgorithm?: string;
  macKey: Encrypted;
}

export async function* parsePskc(input: AsyncIterable<Buffer> | Buffer, keys: { password?: string; psk?: Buffer }): AsyncGenerator<ParsedRow> {
  const parser = new SaxesParser({ xmlns: true, position: false });
  const path: string[] = [];
  const ready: ParsedRow[] = [];
  const header: Header = { macKey: {} };
  const seen = new Map<string, number>();
  let text = '';
  let current: KeyPackage | undefined;
  let row = 0;
  let encryptionKey: Buffer | undefined;
  let macKey: Buffer | undefined | null;
  let sawContainer = false;
  let failure: Error | undefined;

  const fail = (error: Error) => {
    failure ??= error;
  };
  const keyOf = (): Buffer => (encryptionKey ??= deriveKey(header, keys));
  const macKeyOf = (): Buffer | null => {
    if (macKey !== undefined) return macKey;
    if (!header.macAlgorithm) return (macKey = null);
    if (!MACS[header.macAlgorithm]) throw new ImportFileError(`MACMethod ${header.macAlgorithm} is not supported (HMAC-SHA1 or HMAC-SHA256)`);
    const opened = decrypt(header.macKey, keyOf());
    if (opened === undefined) throw new ImportFileError('wrong password or pre-shared key (the MAC key does not decrypt)');
    return (macKey = opened);
  };

  parser.on('doctype', () => fail(new ImportFileError('a DOCTYPE is not allowed in a PSKC file')));
  parser.on('error', (error) => fail(new ImportFileError(`not a readable XML file (${error.message.split('\n')[0]?.slice(0, 120)})`)));
  parser.on('opentag', (tag: SaxesTagNS) => {
    if (failure) return;
    const name = NAMESPACES.has(tag.uri) ? tag.local : `?${tag.local}`;
    path.push(name);
    text = '';
    const attr = (local: string) => {
      const a = tag.attributes[local];
      return a && typeof a === 'object' ? a.value : undefined;
    };
    if (name === 'KeyContainer' && path.length === 1) {
      sawContainer = true;
      const version = attr('Version');
      if (version !== undefined && version !== '1.0') fail(new ImportFileError(`PSKC version ${version} is not supported (1.0)`));
    }
    if (name === 'KeyPackage') {
      current = {};
      if (++row > MAX_IMPORT_TOKENS) fail(new ImportFileError(`more than ${MAX_IMPORT_TOKENS} keys in one file: split it`));
    }
    if (current && name === 'Key') {
      const id = attr('Id');
      const algorithm = attr('Algorithm');
      if (id !== undefined) current.keyId = id;
      if (algorithm !== undefined) current.algorithm = algorithm;
    }
    if (current && name === 'ResponseFormat') {
      const length = attr('Length');
      const encoding = attr('Encoding');
      if (length !== undefined) current.length = length;
      if (encoding !== undefined) current.encoding = encoding;
    }
    if (name === 'EncryptionMethod') {
      const algorithm = attr('Algorithm');
      if (algorithm !== undefined) {
        if (current && path.includes('Secret')) (current.encryptedSecret ??= {}).algorithm = algorithm;
        else if (path.includes('MACKey')) header.macKey.algorithm = algorithm;
      }
    }
    if (!current && name === 'MACMethod') {
      const algorithm = attr('Algorithm');
      if (algorithm !== undefined) header.macAlgorithm = algorithm;
    }
    if (!current && name === 'KeyDerivationMethod') {
      const algorithm = attr('Algorithm');
      if (algorithm !== undefined) header.derivation = algorithm;
    }
    if (!current && name === 'PRF') {
      const algorithm = attr('Algorithm');
      if (algorithm !== undefined) header.prf = algorithm;
    }
  });
  parser.on('text', (chunk) => {
    if (failure || path.length === 0) return;
    text += chunk;
    if (text.length > MAX_TEXT) fail(new ImportFileError(`an element holds more than ${MAX_TEXT} characters of text`));
  });
  parser.on('closetag', () => {
    if (failure) return;
    const name = path.at(-1)!;
    const value = text.trim();
    const inside = (ancestor: string) => path.includes(ancestor);
    if (current) {
      if (name === 'Manufacturer' && inside('DeviceInfo')) current.manufacturer = value;
      else if (name === 'SerialNo' && inside('DeviceInfo')) current.serialNo = value;
      else if (name === 'Model' && inside('DeviceInfo')) current.model = value;
      else if (name === 'Suite' && inside('AlgorithmParameters')) current.suite = value;
      else if (name === 'PlainValue' && inside('Secret')) current.plainSecret = value;
      else if (name === 'CipherValue' && inside('Secret')) (current.encryptedSecret ??= {}).cipherValue = value;
      else if (name === 'ValueMAC' && inside('Secret')) current.valueMac = value;
      else if (name === 'PlainValue' && inside('TimeInterval')) current.timeInterval = value;
      else if (name === 'PlainValue' && inside('Time')) current.time = value;
      else if (name === 'ExpiryDate' && inside('Policy')) current.expiryDate = value;
      else if (name === 'KeyPackage') {
        try {
          ready.push(packageRow(row, current, { keyOf, macKeyOf, macHash: () => MACS[header.macAlgorithm ?? ''] ?? 'sha1', seen }));
        } catch (error) {
          fail(error instanceof Error ? error : new Error(String(error)));
        }
        current = undefined;
      }
    } else if (inside('EncryptionKey')) {
      if (name === 'KeyName') header.keyName = value;
      else if (name === 'Specified' && inside('Salt')) header.salt = value;
      else if (name === 'IterationCount') header.iterations = value;
      else if (name === 'KeyLength') header.keyLength = value;
    } else if (inside('MACKey') && name === 'CipherValue') {
      header.macKey.cipherValue = value;
    }
    path.pop();
    text = '';
  });

  const chunks = Buffer.isBuffer(input) ? [input] : input;
  const decoder = new TextDecoder('utf-8', { fatal: true });
  for await (const chunk of chunks) {
    try {
      parser.write(decoder.decode(chunk, { stream: true }));
    } catch (error) {
      fail(error instanceof ImportFileError ? error : new ImportFileError(`not a readable XML file (${(error as Error).message.split('\n')[0]?.slice(0, 120)})`));
    }
    if (failure) throw failure;
    yield* ready.splice(0);
  }
  try {
    parser.close();
  } catch (error) {
    fail(new ImportFileError(`not a readable XML file (${(error as Error).message.split('\n')[0]?.slice(0, 120)})`));
  }
  if (failure) throw failure;
  if (!sawContainer) throw new ImportFileError('not a PSKC file: no KeyContainer (urn:ietf:params:xml:ns:keyprov:pskc)');
  yield* ready.splice(0);
  encryptionKey?.fill(0);
  macKey?.fill(0);
}

function packageRow(
  row: number,
  p: KeyPackage,
  ctx: { keyOf: () => Buffer; macKeyOf: () => Buffer | null; macHash: () => 'sha1' | 'sha256'; seen: Map<string, number> },
): ParsedRow {
  const serialNumber = (p.serialNo || p.keyId || '').trim();
  const reject = (reason: string): ParsedRow => ({ ok: false, rejected: { row, ...(serialNumber ? { serialNumber } : {}), reason } });
  if (!serialNumber) return reject('no serial number (DeviceInfo/SerialNo) and no key Id');
  if (serialNumber.length > 64 || /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069]/u.test(serialNumber)) return reject('serial number: at most 64 printable characters');
  const first = ctx.seen.get(serialNumber);
  if (first !== undefined) return reject(`duplicate serial number (first at key package ${first})`);
  ctx.seen.set(serialNumber, row);
  const algorithm = p.algorithm ?? '';
  if (/:hotp$/i.test(algorithm)) return reject('HOTP (event-based) keys are not supported: only time-based (TOTP) tokens');
  if (!/:totp$/i.test(algorithm)) return reject(`key algorithm ${algorithm.slice(0, 80) || '(none)'} is not supported: only urn:ietf:params:xml:ns:keyprov:pskc:totp`);
  let hash: OathAlgorithm;
  const suite = (p.suite ?? 'HMAC-SHA1').toUpperCase().replace(/^HMAC-/, '');
  if (suite === 'SHA1' || suite === 'SHA-1') hash = 'SHA1';
  else if (suite === 'SHA256' || suite === 'SHA-256') hash = 'SHA256';
  else return reject(`suite ${p.suite?.slice(0, 40)} is not supported (HMAC-SHA1 or HMAC-SHA256)`);
  const length = p.length ?? '6';
  if (length !== '6' && length !== '8') return reject(`response length ${length.slice(0, 10)} is not supported (6 or 8 digits)`);
  if (p.encoding !== undefined && p.encoding.toUpperCase() !== 'DECIMAL') return reject(`response encoding ${p.encoding.slice(0, 20)} is not supported (DECIMAL)`);
  const interval = p.timeInterval ?? '30';
  if (interval !== '30' && interval !== '60') return reject('time interval: must be 30 or 60 (seconds)');
  if (p.time !== undefined && p.time !== '0') return reject('time origin (Data/Time) other than 0 is not supported');
  if (p.expiryDate !== undefined) {
    const expiry = Date.parse(p.expiryDate);
    if (Number.isNaN(expiry)) return reject('ExpiryDate: not a date');
    if (expiry <= Date.now()) return reject(`the key expired on ${p.expiryDate.slice(0, 40)}`);
  }
  let secret: Buffer;
  if (p.plainSecret !== undefined) {
    const decoded = strictBase64(p.plainSecret);
    if (!decoded) return reject('secret: not valid base64');
    secret = decoded;
  } else if (p.encryptedSecret?.cipherValue !== undefined) {
    const macKey = ctx.macKeyOf();
    const cipher = strictBase64(p.encryptedSecret.cipherValue);
    if (!cipher) return reject('secret: the encrypted value is not valid base64');
    if (macKey) {
      const mac = p.valueMac !== undefined ? strictBase64(p.valueMac) : undefined;
      if (!mac) return reject('secret: ValueMAC missing or not base64 (the file declares a MACMethod)');
      const expected = createHmac(ctx.macHash(), macKey).update(cipher).digest();
      if (mac.length !== expected.length || !timingSafeEqual(mac, expected)) return reject('secret: MAC check failed (the file was altered, or the password or key is wrong)');
    }
    const opened = decrypt({ ...p.encryptedSecret }, ctx.keyOf());
    if (opened === undefined) {
      if (!macKey && row === 1) throw new ImportFileError('wrong password or pre-shared key (the first secret does not decrypt)');
      return reject('secret: does not decrypt (wrong password or key, or a damaged value)');
    }
    secret = opened;
  } else {
    return reject('no secret (Data/Secret)');
  }
  if (secret.length < MIN_SECRET_BYTES) {
    secret.fill(0);
    return reject(`secret: shorter than ${MIN_SECRET_BYTES} bytes`);
  }
  const text = (value: string | undefined) => (value && value.length <= 64 && !/[\u0000-\u001f\u007f-\u009f]/.test(value) ? value : undefined);
  const manufacturer = text(p.manufacturer);
  const model = text(p.model);
  return {
    ok: true,
    token: {
      row,
      serialNumber,
      secret,
      algorithm: hash,
      digits: length === '8' ? 8 : 6,
      period: interval === '60' ? 60 : 30,
      ...(manufacturer ? { manufacturer } : {}),
      ...(model ? { model } : {}),
    },
  };
}

/** The file's encryption key: the pre-shared key given, or PBKDF2 of the password with the file's parameters. */
function deriveKey(header: Header, keys: { password?: string; psk?: Buffer }): Buffer {
  if (header.derivation !== undefined) {
    if (!/pkcs-5v2-0#pbkdf2$/.test(header.derivation)) throw new ImportFileError(`key derivation ${header.derivation.slice(0, 80)} is not supported (PBKDF2)`);
    if (keys.password === undefined) throw new ImportFileError("the file's keys are encrypted with a password: give password");
    const salt = header.salt !== undefined ? strictBase64(header.salt) : undefined;
    const iterations = Number(header.iterations);
    const length = Number(header.keyLength ?? '16');
    if (!salt) throw new ImportFileError('PBKDF2: no salt (Salt/Specified)');
    if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) throw new ImportFileError(`PBKDF2: the iteration count must be 1 to ${MAX_ITERATIONS}`);
    if (![16, 24, 32].includes(length)) throw new ImportFileError('PBKDF2: the key length must be 16, 24 or 32 bytes');
    const prf = header.prf === undefined ? 'sha1' : PRFS[header.prf];
    if (!prf) throw new ImportFileError(`PBKDF2: PRF ${header.prf?.slice(0, 80)} is not supported`);
    return pbkdf2Sync(Buffer.from(keys.password, 'utf8'), salt, iterations, length, prf);
  }
  if (keys.psk === undefined) throw new ImportFileError("the file's keys are encrypted with a pre-shared key: give psk");
  return Buffer.from(keys.psk);
}

/** AES-CBC with the IV first (XML Encryption), PKCS #7 padding checked; undefined when it does not decrypt. */
function decrypt(value: Encrypted, key: Buffer): Buffer | undefined {
  const cipher = CIPHERS[value.algorithm ?? ''];
  if (!cipher) throw new ImportFileError(`encryption ${String(value.algorithm).slice(0, 80)} is not supported (AES-128/192/256-CBC)`);
  if (key.length !== cipher.keyBytes) throw new ImportFileError(`the key is ${key.length} bytes; ${value.algorithm} needs ${cipher.keyBytes}`);
  const bytes = value.cipherValue !== undefined ? strictBase64(value.cipherValue) : undefined;
  if (!bytes || bytes.length < 32 || bytes.length % 16 !== 0) return undefined;
  try {
    const decipher = createDecipheriv(cipher.name, key, bytes.subarray(0, 16));
    return Buffer.concat([decipher.update(bytes.subarray(16)), decipher.final()]);
  } catch {
    return undefined;
  }
}

/** Base64 with whitespace allowed between characters, the length a multiple of 4: no truncated values. */
function strictBase64(text: string): Buffer | undefined {
  const clean = text.replace(/\s+/g, '');
  if (clean.length === 0 || clean.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(clean)) return undefined;
  return Buffer.from(clean, 'base64');
}
