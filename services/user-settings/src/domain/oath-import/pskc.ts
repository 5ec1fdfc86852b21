/**
 * Hardware OATH tokens from a Portable Symmetric Key Container (PSKC, RFC 6030), the format token
 * vendors ship seed files in. pskc-xml.ts finds the values of each KeyPackage; this file decides
 * what they mean: one ParsedRow per KeyPackage, in file order.
 *
 * Only time-based tokens (TOTP, RFC 6238) are imported: HMAC-SHA1 or HMAC-SHA256, 6 or 8 decimal
 * digits, 30 or 60 seconds, T0 = 0. Anything else (HOTP among it: event tokens have a counter our
 * verification does not keep) refuses that key only, as does a damaged or unverifiable value.
 *
 * Protection (RFC 6030 §6): secrets, time intervals and T0 in EncryptedValue under AES-CBC (IV ‖
 * ciphertext), with a key given as a pre-shared key (EncryptionKey/KeyName, or an EncryptionKey
 * naming nothing) or derived from a password with PBKDF2 (EncryptionKey/DerivedKey). With a
 * MACMethod, each value's ValueMAC (HMAC over IV ‖ ciphertext under the MAC key, itself encrypted in
 * MACMethod/MACKey) is checked, in constant time, before anything is decrypted. A file without a
 * MACMethod (RFC 6030 makes it optional) is accepted: its values are decrypted with only their
 * padding checked, which a wrong key passes once in 256 values, so such a file is only taken to be
 * opened with the right key once many values in a row check out (WrongKeyGate); nothing protects
 * the values' integrity.
 *
 * The whole file fails (ImportFileError) when it cannot be read at all: not PSKC 1.0, a DOCTYPE,
 * encrypted without the psk or password it needs, a wrong one (the MAC key does not decrypt, no
 * encrypted value checks out, or, without a MAC, one fails before PROOF_WITHOUT_MAC have checked
 * out), unusable PBKDF2 parameters, more than MAX_IMPORT_TOKENS keys.
 */
import { createDecipheriv, createHmac, createSecretKey, pbkdf2, timingSafeEqual, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { checkLabel, checkSerial, decodeBase64, SerialRegister } from './fields.js';
import { chunksOf } from './input.js';
import { describePath, HEADER, PACKAGE, PskcReader, type Found, type RawPackage } from './pskc-xml.js';
import {
  handOut,
  ImportFileError,
  MAX_SECRET_BASE32,
  MIN_SECRET_BYTES,
  type OathAlgorithm,
  type ParsedRow,
  type ParsedToken,
  type RejectedRow,
  zeroRow,
} from './types.js';

const pbkdf2Async = promisify(pbkdf2);

/** Longest secret accepted: what the longest Base32 secret of a CSV file decodes to. */
export const MAX_SECRET_BYTES = Math.floor((MAX_SECRET_BASE32 * 5) / 8);
/** PBKDF2 iterations at most: above this a file could hold the import for minutes with one number. */
export const MAX_PBKDF2_ITERATIONS = 10_000_000;
/**
 * When no encrypted value has checked out yet, this many failing in a row mean the psk or password
 * is wrong (or the file is damaged throughout); the rows waiting meanwhile are capped too.
 */
const WRONG_KEY_FAILURES = 32;
const MAX_WAITING_ROWS = 1024;
/**
 * In a file without a MAC, this many encrypted values decrypting, with none failing before, prove
 * the psk or password: a wrong one does that once in 256^32.
 */
const PROOF_WITHOUT_MAC = 32;

const WRONG_KEY = 'wrong password or pre-shared key: the file\'s encrypted values do not check out with it';
const WRONG_KEY_NO_MAC = 'wrong password or pre-shared key, or a damaged file: an encrypted value does not decrypt with it (the file has no MAC to tell which)';
const TOO_FEW_VALUES = `the file has no MAC, and fewer than ${PROOF_WITHOUT_MAC} encrypted values among its first ${MAX_WAITING_ROWS} keys: too few to tell whether the password or pre-shared key is right`;
const PSK_NEEDED = "the file's keys are encrypted with a pre-shared key: give psk";
const PASSWORD_NEEDED = "the file's keys are encrypted with a key derived from a password (PBKDF2): give password";

interface Cipher {
  name: string;
  keyBytes: number;
}

/** XML Encryption's block ciphers (RFC 6030 §6.1 names AES-128-CBC; the longer keys are the same scheme). */
const CIPHERS = new Map<string, Cipher>([
  ['http://www.w3.org/2001/04/xmlenc#aes128-cbc', { name: 'aes-128-cbc', keyBytes: 16 }],
  ['http://www.w3.org/2001/04/xmlenc#aes192-cbc', { name: 'aes-192-cbc', keyBytes: 24 }],
  ['http://www.w3.org/2001/04/xmlenc#aes256-cbc', { name: 'aes-256-cbc', keyBytes: 32 }],
]);
const AES_BLOCK = 16;

/** The hash of an HMAC algorithm URI (xmldsig#hmac-sha1, xmldsig-more#hmac-sha256, ...), or undefined. */
function hmacHash(uri: string | undefined): string | undefined {
  const match = /^http:\/\/www\.w3\.org\/(?:2000\/09\/xmldsig|2001\/04\/xmldsig-more)#hmac-(sha1|sha224|sha256|sha384|sha512)$/.exec(uri?.trim() ?? '');
  return match?.[1];
}

/**
 * AES-CBC over IV ‖ ciphertext: the plaintext without its PKCS #7 padding, or undefined when the
 * padding is wrong (a wrong key, or a damaged value). The caller zeroes the result.
 */
export function decryptCbc(cipher: Cipher, key: KeyObject, data: Buffer): Buffer | undefined {
  const decipher = createDecipheriv(cipher.name, key, data.subarray(0, AES_BLOCK)).setAutoPadding(false);
  const head = decipher.update(data.subarray(AES_BLOCK));
  const tail = decipher.final();
  const padded = tail.length === 0 ? head : Buffer.concat([head, tail]);
  if (padded !== head) head.fill(0);
  const pad = padded[padded.length - 1] ?? 0;
  let valid = pad >= 1 && pad <= AES_BLOCK;
  for (let i = 1; valid && i <= pad; i++) valid = padded[padded.length - i] === pad;
  const plain = valid ? Buffer.from(padded.subarray(0, padded.length - pad)) : undefined;
  padded.fill(0);
  return plain;
}

/** IV ‖ ciphertext of at least one block, whole blocks only. */
const cbcShaped = (data: Buffer): boolean => data.length >= 2 * AES_BLOCK && data.length % AES_BLOCK === 0;

interface Pbkdf2Params {
  salt: Buffer;
  iterations: number;
  keyLength: number | undefined;
  hash: string;
}

/** PBKDF2-params of the header (RFC 8018 §A.2 as RFC 6030 figure 7 writes them); unusable ones fail the file. */
function readPbkdf2(header: Map<string, string>): Pbkdf2Params {
  const algorithm = header.get(`${HEADER.derivation}@Algorithm`)?.trim();
  if (algorithm !== 'http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2') {
    throw new ImportFileError('the key derivation is not PBKDF2 (http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2)');
  }
  const salt = decodeBase64(header.get(HEADER.salt) ?? '');
  if (salt === undefined) throw new ImportFileError('PBKDF2: Salt/Specified is missing or not base64');
  const iterations = Number((header.get(HEADER.iterations) ?? '').trim());
  if (!Number.isSafeInteger(iterations) || iterations < 1 || iterations > MAX_PBKDF2_ITERATIONS) {
    throw new ImportFileError(`PBKDF2: IterationCount must be a whole number from 1 to ${MAX_PBKDF2_ITERATIONS}`);
  }
  const lengthText = header.get(HEADER.keyLength)?.trim();
  const keyLength = lengthText === undefined ? undefined : Number(lengthText);
  if (keyLength !== undefined && ![16, 24, 32].includes(keyLength)) throw new ImportFileError('PBKDF2: KeyLength must be 16, 24 or 32 (bytes of an AES key)');
  // No PRF: PKCS #5's default, HMAC-SHA1.
  const prf = header.get(`${HEADER.prf}@Algorithm`) ?? header.get(HEADER.prf);
  const hash = prf === undefined || prf.trim() === '' ? 'sha1' : hmacHash(prf);
  if (hash === undefined) throw new ImportFileError('PBKDF2: the PRF is not an HMAC with SHA-1 or SHA-2');
  return { salt, iterations, keyLength, hash };
}

/**
 * What opens the protection of one file, for as long as it is read, once or more (an import job
 * reads its file twice: to count its keys, then to import them): the psk or password given, and
 * the keys derived from that password, so that PBKDF2 (up to MAX_PBKDF2_ITERATIONS, seconds of
 * CPU) runs once however often the file is read. One password per instance. Whoever makes it
 * disposes of it when done: the psk given is zeroed then (a password, a string, cannot be).
 */
export class PskcKeys {
  private readonly derived = new Map<string, KeyObject>();

  constructor(
    readonly given: { password?: string; psk?: Buffer },
    private readonly pbkdf2: (password: string, salt: Buffer, iterations: number, length: number, hash: string) => Promise<Buffer> = pbkdf2Async,
  ) {}

  /** The key PBKDF2 derives from the password with `params`, `length` bytes long: derived the first time, then kept. */
  async derive(params: Pbkdf2Params, length: number): Promise<KeyObject> {
    const id = `${params.hash}\n${params.iterations}\n${length}\n${params.salt.toString('base64')}`;
    let key = this.derived.get(id);
    if (key === undefined) {
      key = secretKey(await this.pbkdf2(this.given.password!, params.salt, params.iterations, length, params.hash));
      this.derived.set(id, key);
    }
    return key;
  }

  /** Zeroes the psk and drops the derived keys (node keeps a KeyObject's bytes until it is collected). */
  dispose(): void {
    this.given.psk?.fill(0);
    this.derived.clear();
  }
}

/**
 * The keys of one reading of a file: the encryption key (the psk, or derived from the password,
 * which PskcKeys keeps across readings) and the MAC key. They are held as KeyObjects, built once:
 * node keeps its own copy of the bytes (as it would for every cipher made from a Buffer), and
 * building one per value would cost more than the decryption itself. The buffers they were made
 * from are zeroed at once.
 */
class FileKeys {
  private pbkdf2: Pbkdf2Params | undefined;
  private psk: KeyObject | undefined;
  private mac: { hash: string; key: KeyObject | undefined } | undefined;
  private ready = false;
  private readonly given: { password?: string; psk?: Buffer };

  constructor(private readonly keys: PskcKeys) {
    this.given = keys.given;
  }

  /** Reads the header's protection once: fails the file when the psk or password it needs is missing, or the MAC key does not decrypt. */
  async prepare(header: Found): Promise<void> {
    if (this.ready) return;
    this.ready = true;
    const values = header.values;
    if (header.repeated !== undefined) throw new ImportFileError(`the file's ${describePath(header.repeated)} appears more than once`);
    if (values.has(HEADER.derivedKey)) {
      if (this.given.password === undefined || this.given.password === '') throw new ImportFileError(PASSWORD_NEEDED);
      this.pbkdf2 = readPbkdf2(values);
    } else if (values.has(HEADER.encryptionKey) && this.given.psk === undefined) {
      throw new ImportFileError(PSK_NEEDED);
    }
    if (!values.has(HEADER.macMethod)) return;
    const hash = hmacHash(values.get(`${HEADER.macMethod}@Algorithm`));
    if (hash === undefined) throw new ImportFileError('MACMethod: the algorithm is not an HMAC with SHA-1 or SHA-2');
    // Without a MACKey, the encryption key is the MAC key (as in the drafts before RFC 6030; python-pskc reads them so).
    this.mac = { hash, key: values.has(HEADER.macKey) ? await this.openMacKey(values) : undefined };
  }

  private async openMacKey(values: Map<string, string>): Promise<KeyObject> {
    const cipher = CIPHERS.get(values.get(`${HEADER.macKeyMethod}@Algorithm`)?.trim() ?? '');
    if (cipher === undefined) throw new ImportFileError('MACKey: the encryption method is not AES-CBC');
    const data = decodeBase64(values.get(HEADER.macKeyCipher) ?? '');
    if (data === undefined || !cbcShaped(data)) throw new ImportFileError('MACKey: CipherValue is missing or not an AES-CBC value');
    const bytes = decryptCbc(cipher, await this.encryptionKey(cipher), data);
    if (bytes === undefined || bytes.length === 0) throw new ImportFileError("wrong password or pre-shared key: the file's MAC key does not decrypt with it");
    return secretKey(bytes);
  }

  /** The key that decrypts values under `cipher`. */
  async encryptionKey(cipher: Cipher): Promise<KeyObject> {
    if (this.pbkdf2 !== undefined) return this.derive(this.pbkdf2, cipher);
    const psk = this.given.psk;
    if (psk === undefined) throw new ImportFileError(PSK_NEEDED);
    if (psk.length !== cipher.keyBytes) {
      throw new ImportFileError(`the pre-shared key has ${psk.length} bytes; the file's ${cipher.name} needs ${cipher.keyBytes}`);
    }
    // The caller's buffer: not ours to zero.
    this.psk ??= createSecretKey(psk);
    return this.psk;
  }

  private async derive(params: Pbkdf2Params, cipher: Cipher): Promise<KeyObject> {
    const length = params.keyLength ?? cipher.keyBytes;
    if (length !== cipher.keyBytes) throw new ImportFileError(`PBKDF2: KeyLength ${length} does not fit the file's ${cipher.name}`);
    return this.keys.derive(params, length);
  }

  /** Whether the file names a MACMethod (known once `prepare` has run). */
  get hasMac(): boolean {
    return this.mac !== undefined;
  }

  /** The MAC of the file, if it names a MACMethod: its hash and the key for values under `cipher`. */
  async macFor(cipher: Cipher): Promise<{ hash: string; key: KeyObject } | undefined> {
    if (this.mac === undefined) return undefined;
    return { hash: this.mac.hash, key: this.mac.key ?? (await this.encryptionKey(cipher)) };
  }
}

/** A KeyObject of `bytes`, which are zeroed. */
function secretKey(bytes: Buffer): KeyObject {
  const key = createSecretKey(bytes);
  bytes.fill(0);
  return key;
}

/** How one encrypted value bears on whether the psk or password is right: it checked out, it failed, or it says nothing (plain, or refused before any check). */
type Evidence = 'ok' | 'bad' | 'none';

/** What a KeyPackage's values said: how many checked out, how many failed. */
interface Tally {
  ok: number;
  bad: number;
}

type ValuePaths = (typeof PACKAGE)['secret'];

type Decrypted = { ok: true; plain: Buffer; evidence: Evidence } | { ok: false; reason: string; evidence: Evidence };

/**
 * An EncryptedValue, checked against its ValueMAC first. Without a MAC, a good padding is only
 * taken as a sign of the right key when the plaintext is `plausible` as well. The caller zeroes it.
 */
async function decryptValue(values: Map<string, string>, paths: ValuePaths, label: string, keys: FileKeys, plausible: (plain: Buffer) => boolean): Promise<Decrypted> {
  const cipher = CIPHERS.get(values.get(`${paths.method}@Algorithm`)?.trim() ?? '');
  if (cipher === undefined) return { ok: false, reason: `${label}: the encryption method is not AES-CBC (aes128-cbc, aes192-cbc or aes256-cbc)`, evidence: 'none' };
  const data = decodeBase64(values.get(paths.cipher) ?? '');
  if (data === undefined) return { ok: false, reason: `${label}: CipherValue is missing or not valid base64`, evidence: 'none' };
  if (!cbcShaped(data)) return { ok: false, reason: `${label}: CipherValue is not an IV and whole AES blocks`, evidence: 'none' };
  const key = await keys.encryptionKey(cipher);
  const mac = await keys.macFor(cipher);
  const valueMac = values.get(paths.mac);
  if (mac === undefined && valueMac !== undefined) return { ok: false, reason: `${label}: has a ValueMAC but the file names no MACMethod`, evidence: 'none' };
  if (mac !== undefined) {
    if (valueMac === undefined) return { ok: false, reason: `${label}: no ValueMAC although the file names a MACMethod`, evidence: 'none' };
    const given = decodeBase64(valueMac);
    if (given === undefined) return { ok: false, reason: `${label}: ValueMAC is not valid base64`, evidence: 'none' };
    const expected = createHmac(mac.hash, mac.key).update(data).digest();
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: `${label}: MAC check failed`, evidence: 'bad' };
  }
  const plain = decryptCbc(cipher, key, data);
  // After a good MAC, the key is right: a bad padding or an odd value is the value's fault, not the key's.
  if (plain === undefined) return { ok: false, reason: `${label}: does not decrypt (its padding is wrong)`, evidence: mac !== undefined ? 'ok' : 'bad' };
  return { ok: true, plain, evidence: mac !== undefined || plausible(plain) ? 'ok' : 'bad' };
}

type SecretRead = { ok: true; secret: Buffer; evidence: Evidence } | { ok: false; reason: string; evidence: Evidence };

/** The Secret of a KeyPackage: base64 PlainValue, or EncryptedValue. */
async function readSecret(values: Map<string, string>, keys: FileKeys): Promise<SecretRead> {
  const paths = PACKAGE.secret;
  const plain = values.get(paths.plain);
  const encrypted = values.has(paths.encrypted);
  if (plain === undefined && !encrypted) return { ok: false, reason: 'secret: missing', evidence: 'none' };
  if (plain !== undefined && encrypted) return { ok: false, reason: 'secret: has both a PlainValue and an EncryptedValue', evidence: 'none' };
  if (plain !== undefined) {
    const secret = decodeBase64(plain);
    return secret ? { ok: true, secret, evidence: 'none' } : { ok: false, reason: 'secret: PlainValue is not valid base64', evidence: 'none' };
  }
  // No file holds an empty secret; a wrong key gives one when its padding happens to be a whole block.
  const read = await decryptValue(values, paths, 'secret', keys, (secret) => secret.length > 0);
  return read.ok ? { ok: true, secret: read.plain, evidence: read.evidence } : read;
}

/** Longest encrypted integer read: a big-endian unsigned long. */
const MAX_INTEGER_BYTES = 8;

/**
 * An encrypted integer as python-pskc reads it: ASCII digits when that is all it holds, else a
 * big-endian unsigned number (what python-pskc writes). Undefined when empty or over 64 bits.
 */
function decryptedInteger(plain: Buffer): number | undefined {
  if (plain.length > 0 && plain.every((byte) => byte >= 0x30 && byte <= 0x39)) return Number(plain.toString('latin1'));
  if (plain.length === 0 || plain.length > MAX_INTEGER_BYTES) return undefined;
  const word = Buffer.alloc(MAX_INTEGER_BYTES);
  plain.copy(word, MAX_INTEGER_BYTES - plain.length);
  return Number(word.readBigUInt64BE());
}

type IntegerRead = { ok: true; value: number | undefined; evidence: Evidence } | { ok: false; reason: string; evidence: Evidence };

/** A Data value that is an integer (TimeInterval, Time): absent, a whole-number PlainValue, or an EncryptedValue. */
async function readInteger(values: Map<string, string>, which: 'time' | 'timeInterval', label: string, keys: FileKeys): Promise<IntegerRead> {
  const paths = PACKAGE[which];
  if (!values.has(paths.element)) return { ok: true, value: undefined, evidence: 'none' };
  if (values.has(paths.encrypted)) {
    if (values.has(paths.plain)) return { ok: false, reason: `${label}: has both a PlainValue and an EncryptedValue`, evidence: 'none' };
    const read = await decryptValue(values, paths, label, keys, (plain) => decryptedInteger(plain) !== undefined);
    if (!read.ok) return read;
    const value = decryptedInteger(read.plain);
    read.plain.fill(0);
    if (value === undefined) return { ok: false, reason: `${label}: EncryptedValue is not a whole number (ASCII digits, or big-endian of at most ${MAX_INTEGER_BYTES} bytes)`, evidence: read.evidence };
    return { ok: true, value, evidence: read.evidence };
  }
  const text = values.get(paths.plain)?.trim();
  if (text === undefined || !/^\d+$/.test(text)) return { ok: false, reason: `${label}: PlainValue must be a whole number`, evidence: 'none' };
  return { ok: true, value: Number(text), evidence: 'none' };
}

/** TOTP, or the reason the key's Algorithm is refused. */
function checkAlgorithm(uri: string | undefined): string | undefined {
  if (uri === undefined || uri.trim() === '') return 'algorithm: missing (the Key has no Algorithm)';
  const kind = /^(?:urn:ietf:params:xml:ns:keyprov:pskc[:#])?(hotp|totp)$/i.exec(uri.trim())?.[1]?.toLowerCase();
  if (kind === 'totp') return undefined;
  if (kind === 'hotp') return 'algorithm: HOTP (event/counter-based) tokens are not supported; only time-based (TOTP) tokens are';
  return 'algorithm: not supported; only time-based tokens (urn:ietf:params:xml:ns:keyprov:pskc:totp) are';
}

/** The HMAC of AlgorithmParameters/Suite (HMAC-SHA1 when absent). */
function checkSuite(text: string | undefined): { ok: true; algorithm: OathAlgorithm } | { ok: false; reason: string } {
  const name = (text ?? '').trim().replace(/^.*#/, '').toUpperCase().replace(/^HMAC/, '').replace(/-/g, '');
  if (name === '' || name === 'SHA1') return { ok: true, algorithm: 'SHA1' };
  if (name === 'SHA256') return { ok: true, algorithm: 'SHA256' };
  if (name === 'SHA512') return { ok: false, reason: 'suite: HMAC-SHA512 is not supported (only HMAC-SHA1 and HMAC-SHA256)' };
  return { ok: false, reason: 'suite: not supported (only HMAC-SHA1 and HMAC-SHA256)' };
}

/** Digits of AlgorithmParameters/ResponseFormat; 6 when the file leaves the format out (RFC 6238's usual length). */
function checkResponseFormat(values: Map<string, string>): { ok: true; digits: 6 | 8 } | { ok: false; reason: string } {
  const path = PACKAGE.responseFormat;
  if (!values.has(path)) return { ok: true, digits: 6 };
  const encoding = values.get(`${path}@Encoding`)?.trim().toUpperCase();
  if (encoding !== undefined && encoding !== 'DECIMAL') return { ok: false, reason: 'response format: Encoding must be DECIMAL' };
  const checkDigits = values.get(`${path}@CheckDigits`)?.trim();
  if (checkDigits === 'true' || checkDigits === '1') return { ok: false, reason: 'response format: check digits are not supported' };
  const length = values.get(`${path}@Length`)?.trim();
  if (length === '6') return { ok: true, digits: 6 };
  if (length === '8') return { ok: true, digits: 8 };
  return { ok: false, reason: 'response format: Length must be 6 or 8' };
}

function checkPeriod(read: IntegerRead): { ok: true; period: 30 | 60 } | { ok: false; reason: string } {
  if (!read.ok) return read;
  if (read.value === undefined) return { ok: true, period: 30 };
  if (read.value === 30 || read.value === 60) return { ok: true, period: read.value };
  return { ok: false, reason: 'time interval: must be 30 or 60 seconds' };
}

function checkT0(read: IntegerRead): string | undefined {
  if (!read.ok) return read.reason;
  return read.value === undefined || read.value === 0 ? undefined : 'time: T0 must be 0 (a token counting from another epoch is not supported)';
}

const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?$/;

/**
 * Refuses a key whose Policy/ExpiryDate or DeviceInfo/ExpiryDate has passed. StartDate is not
 * checked: a token imported before its start is only assigned and used later.
 */
function checkExpiry(values: Map<string, string>, now: number): string | undefined {
  for (const path of [PACKAGE.keyExpiry, PACKAGE.deviceExpiry]) {
    const text = values.get(path)?.trim();
    if (text === undefined) continue;
    const at = DATE_TIME.test(text) ? Date.parse(text) : Number.NaN;
    if (Number.isNaN(at)) return `expiry date: ${describePath(path)} is not a date and time (xs:dateTime)`;
    if (at <= now) return `expiry date: the key expired on ${new Date(at).toISOString().slice(0, 10)}`;
  }
  return undefined;
}

/** What may go into the error file of a refused key: its serial number when that one is valid. */
function serialOf(values: Map<string, string>): { serial: ReturnType<typeof checkSerial>; known: Pick<RejectedRow, 'serialNumber'> } {
  const fromDevice = values.get(PACKAGE.serialNo);
  const raw = fromDevice !== undefined && fromDevice.trim() !== '' ? fromDevice : values.get(`${PACKAGE.key}@Id`);
  const serial = raw === undefined ? ({ ok: false, reason: 'serial number: missing (no DeviceInfo SerialNo and no Key Id)' } as const) : checkSerial(raw);
  return { serial, known: serial.ok ? { serialNumber: serial.value! } : {} };
}

const NO_EVIDENCE: Tally = { ok: 0, bad: 0 };

/** One KeyPackage as a token or a refusal, with what its encrypted values say about the psk or password. */
async function readPackage(raw: RawPackage, keys: FileKeys, now: number): Promise<{ parsed: ParsedRow; evidence: Tally }> {
  const { row, values } = raw;
  const { serial, known } = serialOf(values);
  const refuse = (reason: string, evidence = NO_EVIDENCE) => ({ parsed: { ok: false, rejected: { row, ...known, reason } } as ParsedRow, evidence });
  if (!values.has(PACKAGE.key)) return refuse('the KeyPackage has no Key');
  if (raw.repeated === PACKAGE.key) return refuse('the KeyPackage has more than one Key');
  if (raw.repeated !== undefined) return refuse(`${describePath(raw.repeated)} appears more than once`);
  if (!serial.ok) return refuse(serial.reason);
  const manufacturer = checkLabel('manufacturer', values.get(PACKAGE.manufacturer));
  if (!manufacturer.ok) return refuse(manufacturer.reason);
  const model = checkLabel('model', values.get(PACKAGE.model));
  if (!model.ok) return refuse(model.reason);

  // Every encrypted value is opened before the other checks, so that each tells whether the psk or password is right.
  const secret = await readSecret(values, keys);
  const interval = await readInteger(values, 'timeInterval', 'time interval', keys);
  const t0 = await readInteger(values, 'time', 'time', keys);
  const signs = [secret.evidence, interval.evidence, t0.evidence];
  const evidence = { ok: signs.filter((sign) => sign === 'ok').length, bad: signs.filter((sign) => sign === 'bad').length };
  if (!secret.ok) return refuse(secret.reason, evidence);
  const drop = (reason: string) => {
    secret.secret.fill(0);
    return refuse(reason, evidence);
  };
  const problem = secretLengthProblem(secret.secret) ?? checkAlgorithm(values.get(`${PACKAGE.key}@Algorithm`));
  if (problem !== undefined) return drop(problem);
  const suite = checkSuite(values.get(PACKAGE.suite));
  if (!suite.ok) return drop(suite.reason);
  const format = checkResponseFormat(values);
  if (!format.ok) return drop(format.reason);
  const period = checkPeriod(interval);
  if (!period.ok) return drop(period.reason);
  const timing = checkT0(t0) ?? checkExpiry(values, now);
  if (timing !== undefined) return drop(timing);
  const token: ParsedToken = {
    row,
    serialNumber: serial.value!,
    secret: secret.secret,
    algorithm: suite.algorithm,
    digits: format.digits,
    period: period.period,
    ...(manufacturer.value !== undefined ? { manufacturer: manufacturer.value } : {}),
    ...(model.value !== undefined ? { model: model.value } : {}),
  };
  return { parsed: { ok: true, token }, evidence };
}

function secretLengthProblem(secret: Buffer): string | undefined {
  if (secret.length < MIN_SECRET_BYTES) return `secret: shorter than ${MIN_SECRET_BYTES} bytes`;
  if (secret.length > MAX_SECRET_BYTES) return `secret: longer than ${MAX_SECRET_BYTES} bytes`;
  return undefined;
}

/**
 * Holds rows back while the psk or password is in doubt, so that a wrong one ends as one clear
 * error, with nothing imported, rather than as a refusal per key.
 *
 * With a MAC, rows are held once an encrypted value has failed and none has checked out yet: the
 * first that checks out proves the key and lets them through; WRONG_KEY_FAILURES failures, or the
 * end of the file without a success, fail the file. Without a MAC, a good padding proves little
 * (a wrong key finds one in 256 values): rows are held from the first encrypted value until
 * PROOF_WITHOUT_MAC values have checked out, and any failure before that fails the file, as does
 * the end of a file with fewer values unless every one checked out. Once the key is proven, a
 * value that fails refuses its key only.
 */
class WrongKeyGate {
  private verified = false;
  private checkedOut = 0;
  private failures = 0;
  private held: ParsedRow[] = [];

  /** `mac`: whether the file has a MACMethod. */
  pass(parsed: ParsedRow, evidence: Tally, mac: boolean): ParsedRow[] {
    if (!this.verified) {
      if (!mac && evidence.bad > 0) {
        // The file fails here: this row is handed to nobody.
        zeroRow(parsed);
        throw new ImportFileError(WRONG_KEY_NO_MAC);
      }
      this.checkedOut += evidence.ok;
      this.failures += evidence.bad;
      this.verified = this.checkedOut >= (mac ? 1 : PROOF_WITHOUT_MAC);
    }
    if (this.verified || (evidence.ok + evidence.bad === 0 && this.held.length === 0)) return this.release(parsed);
    this.held.push(parsed);
    if (this.failures >= WRONG_KEY_FAILURES) throw new ImportFileError(WRONG_KEY);
    if (this.held.length > MAX_WAITING_ROWS) throw new ImportFileError(mac ? WRONG_KEY : TOO_FEW_VALUES);
    return [];
  }

  end(): ParsedRow[] {
    // Without a MAC a failure has thrown already: the values held all checked out.
    if (!this.verified && this.failures > 0) throw new ImportFileError(WRONG_KEY);
    return this.release();
  }

  /** Zeroes the secrets of rows that were never handed out. */
  zero(): void {
    for (const row of this.held) zeroRow(row);
    this.held = [];
  }

  private release(parsed?: ParsedRow): ParsedRow[] {
    const out = this.held;
    this.held = [];
    if (parsed) out.push(parsed);
    return out;
  }
}

/**
 * The keys of a PSKC file, one row per KeyPackage in file order. `keys` holds what the file's
 * protection needs: the pre-shared key (16, 24 or 32 bytes, by the file's cipher) or the password;
 * a PskcKeys when the file is read more than once (the derivation is then done once), which the
 * caller disposes of. A psk given as a plain Buffer is the caller's: it is not zeroed here.
 */
export async function* parsePskc(input: AsyncIterable<Buffer> | Buffer, keys: { password?: string; psk?: Buffer } | PskcKeys): AsyncGenerator<ParsedRow> {
  const reader = new PskcReader();
  const fileKeys = new FileKeys(keys instanceof PskcKeys ? keys : new PskcKeys(keys));
  const gate = new WrongKeyGate();
  const serials = new SerialRegister();
  const now = Date.now();
  const readAll = async function* (packages: RawPackage[]): AsyncGenerator<ParsedRow> {
    for (const raw of packages) {
      await fileKeys.prepare(reader.header);
      const { parsed, evidence } = await readPackage(raw, fileKeys, now);
      yield* handOut(gate.pass(unique(parsed, serials), evidence, fileKeys.hasMac));
    }
  };
  try {
    for await (const chunk of chunksOf(input)) {
      reader.write(chunk);
      yield* readAll(reader.drain());
    }
    reader.end();
    yield* readAll(reader.drain());
    yield* handOut(gate.end());
  } finally {
    gate.zero();
  }
}

/** A later key with a serial number an earlier imported key has is refused. */
function unique(parsed: ParsedRow, serials: SerialRegister): ParsedRow {
  if (!parsed.ok) return parsed;
  const duplicate = serials.claim(parsed.token.serialNumber, parsed.token.row);
  if (duplicate === undefined) return parsed;
  parsed.token.secret.fill(0);
  return { ok: false, rejected: { row: parsed.token.row, serialNumber: parsed.token.serialNumber, reason: duplicate } };
}
