import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { headers as natsHeaders, MsgHdrsImpl, type MsgHdrs, type NatsConnection } from '@nats-io/nats-core';
import fc from 'fast-check';
import {
  AppPasswordsVerifyReply,
  AuditQueryReply,
  BlockedQueryReply,
  ChallengeResendReply,
  ChallengeStartReply,
  ChallengeStatusReply,
  ChallengeVerifyReply,
  ClientsCreateReply,
  ClientsListReply,
  ClientsRevokeReply,
  ERROR_CODES,
  ErrorReplySchema,
  FraudIpsListReply,
  FraudIpsUnlockReply,
  FraudQueryReply,
  FraudReportReply,
  maxRequestBytes,
  OathImportReply,
  OathImportStatusReply,
  OathTokensActivateReply,
  OathTokensAssignReply,
  OathTokensListReply,
  Operator,
  RequestSchemas,
  SCOPES,
  SigninsQueryReply,
  Subjects,
  TenantsConfigureReply,
  TenantsGetReply,
  TenantsDeleteReply,
  TotpActivateReply,
  TotpEnrollReply,
  UsageQueryReply,
  UsersAppPasswordsCreateReply,
  UsersAppPasswordsDeleteReply,
  UsersBlockReply,
  UsersDeleteReply,
  UsersDevicesDeleteReply,
  UsersGetReply,
  UsersListReply,
  UsersMethodsDefaultReply,
  UsersPinSetReply,
  UsersPushEnrollReply,
  UsersRegisterReply,
  UsersRememberedRevokeReply,
  UsersResetReply,
  UsersTokensDeleteReply,
  UsersUnblockReply,
  VoiceMessagesDeleteReply,
  VoiceMessagesListReply,
  VoiceMessagesUploadReply,
  type ApiSubject,
} from '@mfa/contracts';
import { base32Decode, totp } from '@mfa/crypto';
import { withoutNulls } from '@mfa/service-kit';
import { eventually, itWith, startStack, testDatabaseUrl, testEnv, uniqueTenant, uniqueUser, type Stack } from '@mfa/testing';

/**
 * A schema-aware, property-based fuzz of the whole public NATS API (docs/api.md), against the
 * services as processes (one instance of each), with MFA_AUTH=required and an API key of one
 * tenant made for the test, so that whatever a generated request writes stays in that tenant.
 *
 * Per subject of `Subjects`, fast-check builds requests from the subject's own zod schema
 * (RequestSchemas): each field gets a value that the schema accepts (drawn from a pool of real
 * data: the tenant, a registered user with an active TOTP token, a pending challenge, a client,
 * an app password, a cursor the service issued...) or a hostile one (wrong type, null, extreme
 * numbers, lengths at and over the limits, control, bidi and zero-width characters, lone
 * surrogates, `__proto__` keys, deep nesting, duplicate keys, extra fields); or a raw body
 * (invalid UTF-8, truncated JSON, a non-object, a body at and over the size limit). Headers vary
 * too: the API key (missing, malformed, repeated, another's), Mfa-Deadline (past, near, not a
 * number), traceparent/tracestate, Mfa-Operator, and header blocks that cannot be read.
 *
 * What every request must get (docs/api.md, "Transport" and "Errors"): a reply within the timeout
 * unless its deadline has passed (then none); a UTF-8 JSON object; a success that matches the
 * subject's reply schema, or an error whose code is one of ERROR_CODES, never `internal`, and
 * `invalid_request` whenever the schema refuses the body (after the documented `forbidden`s); no
 * reply ever carries a key or secret, and no error message echoes a value sent. After the run:
 * every service is up and healthy, nothing was logged at error level, and the tenant still signs
 * a user in.
 *
 * Deterministic: FUZZ_SEED (default below) and FUZZ_RUNS (requests per subject) choose the
 * requests; FUZZ_SUBJECTS (comma-separated substrings) runs only some subjects, with the same
 * per-subject seeds. A failure names the seed, the subject and the shrunk request.
 */

const intFromEnv = (name: string, fallback: number) => {
  const value = Number(process.env[name]);
  return Number.isSafeInteger(value) && value > 0 ? value : fallback;
};
const SEED = intFromEnv('FUZZ_SEED', 20_261_204);
const RUNS = intFromEnv('FUZZ_RUNS', 40);
const ONLY = (process.env.FUZZ_SUBJECTS ?? '').split(',').filter(Boolean);
/** How long a request that must be answered may take. */
const REPLY_TIMEOUT_MS = 5_000;
/** How long to listen for a reply that must not come (a request whose deadline has passed). */
const DROP_WAIT_MS = 600;

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };
const wholeStack = ['nats', 'redis', 'postgres'] as const;
const ALL_SUBJECTS = Object.values(Subjects) as ApiSubject[];
const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);

/** The reply schema of every subject: a success must match it. */
const ReplySchemas: Record<ApiSubject, ZodLike> = {
  [Subjects.usersRegister]: UsersRegisterReply,
  [Subjects.totpEnroll]: TotpEnrollReply,
  [Subjects.totpActivate]: TotpActivateReply,
  [Subjects.challengeStart]: ChallengeStartReply,
  [Subjects.challengeVerify]: ChallengeVerifyReply,
  [Subjects.challengeStatus]: ChallengeStatusReply,
  [Subjects.challengeResend]: ChallengeResendReply,
  [Subjects.reportsSigninsQuery]: SigninsQueryReply,
  [Subjects.usersBlock]: UsersBlockReply,
  [Subjects.fraudReport]: FraudReportReply,
  [Subjects.usersUnblock]: UsersUnblockReply,
  [Subjects.usersDelete]: UsersDeleteReply,
  [Subjects.usersGet]: UsersGetReply,
  [Subjects.usersList]: UsersListReply,
  [Subjects.usersReset]: UsersResetReply,
  [Subjects.usersMethodsDefault]: UsersMethodsDefaultReply,
  [Subjects.usersRememberedRevoke]: UsersRememberedRevokeReply,
  [Subjects.usersAppPasswordsCreate]: UsersAppPasswordsCreateReply,
  [Subjects.usersAppPasswordsDelete]: UsersAppPasswordsDeleteReply,
  [Subjects.appPasswordsVerify]: AppPasswordsVerifyReply,
  [Subjects.usersTokensDelete]: UsersTokensDeleteReply,
  [Subjects.usersPinSet]: UsersPinSetReply,
  [Subjects.tenantsConfigure]: TenantsConfigureReply,
  [Subjects.tenantsGet]: TenantsGetReply,
  [Subjects.tenantsDelete]: TenantsDeleteReply,
  [Subjects.clientsCreate]: ClientsCreateReply,
  [Subjects.clientsList]: ClientsListReply,
  [Subjects.clientsRevoke]: ClientsRevokeReply,
  [Subjects.reportsAuditQuery]: AuditQueryReply,
  [Subjects.reportsFraudQuery]: FraudQueryReply,
  [Subjects.reportsBlockedQuery]: BlockedQueryReply,
  [Subjects.reportsUsageQuery]: UsageQueryReply,
  [Subjects.fraudIpsList]: FraudIpsListReply,
  [Subjects.fraudIpsUnlock]: FraudIpsUnlockReply,
  [Subjects.voiceMessagesUpload]: VoiceMessagesUploadReply,
  [Subjects.voiceMessagesList]: VoiceMessagesListReply,
  [Subjects.voiceMessagesDelete]: VoiceMessagesDeleteReply,
  [Subjects.usersPushEnroll]: UsersPushEnrollReply,
  [Subjects.usersDevicesDelete]: UsersDevicesDeleteReply,
  [Subjects.oathImport]: OathImportReply,
  [Subjects.oathImportStatus]: OathImportStatusReply,
  [Subjects.oathTokensList]: OathTokensListReply,
  [Subjects.oathTokensAssign]: OathTokensAssignReply,
  [Subjects.oathTokensActivate]: OathTokensActivateReply,
};

// ---- zod 4 schemas, walked through their definitions ------------------------------------------

interface CheckDef {
  check: string;
  minimum?: number;
  maximum?: number;
  value?: number;
  inclusive?: boolean;
  format?: string;
  pattern?: RegExp;
}
interface Def {
  type: string;
  shape?: Record<string, ZodLike>;
  innerType?: ZodLike;
  element?: ZodLike;
  options?: ZodLike[];
  entries?: Record<string, string | number>;
  values?: unknown[];
  in?: ZodLike;
  format?: string;
  pattern?: RegExp;
  checks?: Array<{ _zod: { def: CheckDef } }>;
}
interface ZodLike {
  _zod: { def: Def };
  safeParse(value: unknown): { success: boolean };
}
const defOf = (schema: ZodLike): Def => schema._zod.def;
const WRAPPERS = new Set(['optional', 'nullable', 'default', 'prefault', 'readonly', 'nonoptional', 'catch']);

/** The schema under optional/default/nullable wrappers and transforms. */
function core(schema: ZodLike): ZodLike {
  const d = defOf(schema);
  if (WRAPPERS.has(d.type) && d.innerType) return core(d.innerType);
  if (d.type === 'pipe' && d.in) return core(d.in);
  return schema;
}
const isOptional = (schema: ZodLike) => ['optional', 'default', 'prefault'].includes(defOf(schema).type);
function lengthLimits(schema: ZodLike): { min: number; max: number | undefined } {
  let min = 0;
  let max: number | undefined;
  for (const c of defOf(schema).checks ?? []) {
    const d = c._zod.def;
    if (d.check === 'min_length' && d.minimum !== undefined) min = d.minimum;
    if (d.check === 'max_length' && d.maximum !== undefined) max = d.maximum;
  }
  return { min, max };
}
function numberLimits(schema: ZodLike): { min: number; max: number } {
  let min = -1_000;
  let max = 1_000;
  for (const c of defOf(schema).checks ?? []) {
    const d = c._zod.def;
    if (d.check === 'greater_than' && d.value !== undefined) min = d.value + (d.inclusive ? 0 : 1);
    if (d.check === 'less_than' && d.value !== undefined) max = d.value - (d.inclusive ? 0 : 1);
  }
  return { min, max };
}
/** Enum and literal values anywhere in a schema: a reply may name them without echoing anything. */
function vocabulary(schema: ZodLike, into = new Set<string>(), depth = 0): Set<string> {
  if (depth > 12) return into;
  const d = defOf(schema);
  if (d.type === 'enum') for (const v of Object.values(d.entries ?? {})) into.add(String(v));
  if (d.type === 'literal') for (const v of d.values ?? []) into.add(String(v));
  for (const child of [d.innerType, d.element, d.in, ...(d.options ?? []), ...Object.values(d.shape ?? {})]) {
    if (child) vocabulary(child, into, depth + 1);
  }
  for (const key of Object.keys(d.shape ?? {})) into.add(key);
  return into;
}

// ---- JSON text, including what JSON.stringify cannot write ------------------------------------

/** A JSON value as sent: raw tokens (`-0`, `1e309`, deep nesting) and objects with any keys, repeated ones too. */
type Node = null | boolean | number | string | Node[] | { $raw: string } | { $entries: Array<[string, Node]> };
const raw = (text: string): Node => ({ $raw: text });
const obj = (entries: Array<[string, Node]>): Node => ({ $entries: entries });

function jsonText(node: Node): string {
  if (node === null || typeof node !== 'object') return JSON.stringify(node) ?? 'null';
  if (Array.isArray(node)) return `[${node.map(jsonText).join(',')}]`;
  if ('$raw' in node) return node.$raw;
  return `{${node.$entries.map(([k, v]) => `${JSON.stringify(k)}:${jsonText(v)}`).join(',')}}`;
}

/** Pads a JSON object's text with an unknown field to exactly `bytes` bytes (when it is shorter). */
function padTo(text: string, bytes: number): string {
  const length = Buffer.byteLength(text);
  if (!text.endsWith('}')) return text;
  const empty = text === '{}' || /^\{\s*\}$/.test(text);
  const head = text.slice(0, -1) + (empty ? '' : ',') + '"~pad":"';
  const room = bytes - Buffer.byteLength(head) - 2;
  if (room < 0 || length >= bytes) return text;
  return `${head}${'x'.repeat(room)}"}`;
}

// ---- what the generated requests draw from ------------------------------------------------------

/** Real data of the test's tenant, made in before(). */
interface World {
  tenant: string;
  /** A second tenant nobody configured: only the platform key may name it. */
  ghost: string;
  clientKey: string;
  platformKey: string;
  /** Registered, with an active TOTP token, a phone, an app password, a remembered browser. */
  user: string;
  /** Registered with a phone only; the destructive subjects (delete, reset) aim at this one. */
  victim: string;
  tokenId: string;
  challengeIds: string[];
  victimClientId: string;
  appPasswordId: string;
  appPassword: string;
  rememberToken: string;
  rememberId: string;
  cursors: string[];
  jobId: string;
  serial: string;
  /** Strings no reply may ever carry. */
  secrets: string[];
}

const HOSTILE_STRINGS: readonly string[] = [
  '',
  ' ',
  '\t\n',
  '\u0000',
  'a\u0000b',
  '\u0007\u001b[31mred\u001b[0m',
  '\ud800',
  'x\udfffy',
  '\udbff\udfff\ud800',
  '\u202eevil.exe',
  '\u2066isolate\u2069',
  '\u200b',
  '\u2028line\u2029',
  '\ufeffbom',
  '\u00ad\u034f',
  'e\u0301\u0301\u0301\u0301\u0301',
  '😀'.repeat(70),
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  '\\',
  '"',
  "'; DROP TABLE signins; --",
  '%s%s%n%x',
  '${7*7}{{7*7}}',
  '*',
  '>',
  'mfa.v1.>',
  '_INBOX.>',
  '../../../../etc/passwd',
  'NaN',
  'Infinity',
  '-0',
  '1e999',
  '0x1F',
  'null',
  'true',
  '[]',
  '{}',
  'SELECT pg_sleep(10)',
  'a'.repeat(65),
  'a'.repeat(129),
  'a'.repeat(257),
  'a'.repeat(513),
  'x'.repeat(4_000),
  'é'.repeat(5_000),
  '\u4e00'.repeat(5_500),
];
const HOSTILE_NUMBERS: readonly Node[] = [
  0,
  -1,
  1.5,
  -0.5,
  1e308,
  -1e308,
  2 ** 31,
  2 ** 53 + 2,
  Number.MIN_VALUE,
  raw('-0'),
  raw('1e309'),
  raw('-1e309'),
  raw('9007199254740993'),
  raw('1E2'),
  raw('1.0'),
  raw('0.1e-400'),
  raw('123456789012345678901234567890'),
];
const HOSTILE_KEYS: readonly string[] = ['__proto__', 'constructor', 'prototype', 'toString', '', ' ', '\u0000', '\u202e', 'a'.repeat(300), '$where', 'extra', 'tenantId', 'userId'];

const deepArray = (levels: number): Node => raw('['.repeat(levels) + ']'.repeat(levels));
const deepObject = (levels: number): Node => raw('{"a":'.repeat(levels) + '1' + '}'.repeat(levels));

/** A field's values: constants (those its schema refuses are left out of valid bodies) and generated ones. */
interface Pool {
  values: Node[];
  more?: fc.Arbitrary<Node>;
}
const poolCache = new WeakMap<World, Record<string, Pool>>();
/** Values of one field by its name: what reaches deep code (real ids, valid formats, edge cases). */
function pools(w: World): Record<string, Pool> {
  const cached = poolCache.get(w);
  if (cached) return cached;
  const made = makePools(w);
  poolCache.set(w, made);
  return made;
}

function accepts(schema: ZodLike, value: unknown): boolean {
  try {
    return schema.safeParse(value).success;
  } catch {
    return false;
  }
}

/** The pool of a field, as values its own schema accepts; undefined when none does. */
function poolArb(w: World, name: string, leaf: ZodLike): fc.Arbitrary<Node> | undefined {
  const pool = pools(w)[name];
  if (!pool) return undefined;
  const fits = pool.values.filter((v) => accepts(leaf, v));
  const arbs: Array<fc.Arbitrary<Node>> = [];
  if (fits.length > 0) arbs.push(fc.constantFrom(...fits));
  if (pool.more && mostlyAccepted(pool.more, leaf)) arbs.push(pool.more.filter((v) => accepts(leaf, v)));
  return arbs.length === 0 ? undefined : arbs.length === 1 ? arbs[0] : fc.oneof({ weight: 3, arbitrary: arbs[0]! }, { weight: 1, arbitrary: arbs[1]! });
}

/** Whether a filter on `arb` would let most values through (a filter that never does would never end). */
function mostlyAccepted(arb: fc.Arbitrary<Node>, schema: ZodLike): boolean {
  return fc.sample(arb, { numRuns: 30, seed: 1 }).filter((v) => accepts(schema, v)).length >= 15;
}

function makePools(w: World): Record<string, Pool> {
  const now = Date.now();
  const iso = (ms: number) => new Date(ms).toISOString();
  const dates: Node[] = [
    iso(now - 86_400_000),
    iso(now - 3_600_000),
    iso(now),
    iso(now + 60_000),
    iso(now - 86_400_000).slice(0, 10) + 'T00:00:00Z',
    '1970-01-01T00:00:00Z',
    '0000-01-01T00:00:00Z',
    '0001-01-01T00:00:00+14:00',
    '9999-12-31T23:59:59.999999999Z',
    '9999-12-31T23:59:59-23:59',
    '2024-02-29T12:00:00.123456789+05:30',
    '2026-03-29T02:30:00+01:00',
    '1999-12-31T23:59:60Z',
  ];
  const ips: Node[] = [
    '198.51.100.7',
    '203.0.113.250',
    '8.8.8.8',
    '0.0.0.0',
    '255.255.255.255',
    '127.0.0.1',
    '10.0.0.1',
    '2001:db8::1',
    '2a00:1450:4001:81b::200e',
    '::',
    '::1',
    '::ffff:198.51.100.7',
    'fe80::1',
    'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
    '1:2:3:4:5:6:7::',
    '2001:db8:1:2::/64',
  ];
  const text: Pool = {
    values: ['Helga Larsson', 'Δοκιμή', '東京', 'Émile Zola', 'a', '😀', 'x'.repeat(64), 'y'.repeat(256), 'ok\u00a0nbsp', "O'Brien; DROP TABLE x", '<script>alert(1)</script>'],
    more: fc.string({ minLength: 1, maxLength: 40, unit: 'grapheme' }),
  };
  const cidrs: Node[] = ['8.8.8.0/24', '198.51.100.0/24', '10.0.0.0/8', '0.0.0.0/0', '2a00:1450::/32', '2001:db8::/32', '::/0', '1.2.3.4/32', '1.2.3.4/33', '2001:db8::1/128'];
  const csvRow = (serial: string) => `${w.user},${serial},JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,30,Acme,K1`;
  const pskc = (inner: string) =>
    `<?xml version="1.0" encoding="UTF-8"?><KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">${inner}</KeyContainer>`;
  const countries: Node[] = ['FR', 'SE', 'US', 'GB', 'KP', 'XK', 'AQ', 'UK', 'EU'];
  // Strings a free-form field's schema accepts that stores, caches, case folding and logs may not:
  // NUL, lone surrogates, names of Object.prototype's members, characters whose case changes length.
  const odd: Node[] = ['\u0000', 'a\u0000b', '\ud800', 'x\udfff', '😀', '%', '_', "'", '"', '\\', '\u202e', '\n', ' ', '__proto__', 'constructor', 'toString', '$ne', '*', '>', '.', '..', 'İ', 'ß', 'ǅ', 'ﬀ', 'x'.repeat(128)];
  const oddIds: Node[] = ['__proto__@contoso.example', '__proto__', 'constructor', 'hasOwnProperty', 'İnci@contoso.example', 'straße@contoso.example', 'ǅemal@contoso.example', '😀@contoso.example', "o'brien@contoso.example", '%@contoso.example'];
  return {
    tenantId: { values: [...Array.from({ length: 24 }, () => w.tenant), w.ghost, 'other-tenant', w.tenant.toUpperCase()] },
    userId: { values: [w.user, w.user, w.user, w.user, w.user, w.user, w.victim, 'nobody@contoso.example', w.user.toUpperCase(), 'x'.repeat(256), ...oddIds] },
    challengeId: { values: [...w.challengeIds, ...w.challengeIds, 'no-such-challenge', w.challengeIds[0]!.slice(0, -1), `${w.challengeIds[0]}x`, ...odd] },
    tokenId: { values: [w.tokenId, w.tokenId, 'no-such-token', w.tokenId.slice(0, 8), ...odd] },
    clientId: { values: [w.victimClientId, w.victimClientId, 'AAAAAAAAAAAAAAAA', 'platform', 'anonymous', ...odd] },
    appPasswordId: { values: [w.appPasswordId, w.appPasswordId, 'no-such-password', ...odd] },
    rememberId: { values: [w.rememberId, w.rememberId, 'no-such-browser', ...odd] },
    rememberToken: { values: [w.rememberToken, w.rememberToken, `${w.rememberToken}x`, 'not-a-token', ...odd] },
    deviceId: { values: ['no-such-device', 'dev_0123456789abcdef', ...odd] },
    code: { values: ['123456', '000000', '999999', '12345678', '0123', '0', '9'], more: fc.stringMatching(/^\d{6}$/) },
    pin: { values: ['1234', '00000000', '13579'] },
    password: { values: [w.appPassword, w.appPassword, 'wrong password', 'p'.repeat(256), ...odd] },
    psk: { values: ['00112233445566778899aabbccddeeff', 'f'.repeat(64)] },
    phoneNumber: { values: ['+14155550123', '+46701234567', '+442071838750', '+19005550123', '+123456789012345', '+33612345678', '+4930901820'] },
    phoneExtension: { values: ['1', '0123456789'] },
    email: { values: ['helga@contoso.example', 'a@b.co', `${'a'.repeat(64)}@${'b'.repeat(63)}.example`] },
    notificationEmails: { values: ['soc@contoso.example', 'a@b.co'] },
    language: { values: ['en', 'sv-SE', 'fr-CA', 'EN', 'zh-Hant-TW', 'i-klingon', 'x-private', 'en-US-u-ca-gregory', 'fr', 'SV', 'tlh'] },
    displayName: { ...text, values: [...text.values, ...odd] },
    application: text,
    requestId: text,
    reason: { ...text, values: [...text.values, ...odd] },
    comment: text,
    name: { ...text, values: [...text.values, ...odd] },
    label: text,
    serverName: text,
    query: { values: [w.user.slice(0, 4), 'a', '+1415', 'Z'.repeat(256), 'Fuzz', 'İ', 'STRASSE', ...odd] },
    clientIp: { values: ips },
    serverIp: { values: ips },
    ip: { values: [...ips, "'; --", '\u0000\u0000', '::1/64x', '%%', '😀😀', '1.2.3.4/0', 'x'.repeat(64)] },
    ranges: { values: cidrs },
    neverBlock: { values: cidrs },
    allowedCountries: { values: countries },
    blockedCountries: { values: countries },
    callerId: { values: ['+18665394191', '+14155550123', '+16135550123', '+12025550123'] },
    from: { values: dates },
    to: { values: dates },
    cursor: { values: [...w.cursors, 'x', `${w.cursors[0] ?? 'c'}A`, 'a'.repeat(512), ...odd] },
    jobId: { values: [w.jobId, 'no-such-job', 'a'.repeat(64)] },
    serialNumber: { values: [w.serial, w.serial, 'SN-UNKNOWN', 's'.repeat(64), ...odd] },
    object: { values: [`${w.tenant}/upload.wav`, `${w.tenant}/../../x`, `${w.tenant}/`, 'other-tenant/x', `${w.tenant}/${'o'.repeat(200)}`, `${w.tenant}/a.b.c*>`] },
    content: {
      values: [
        `upn,serial number,secret key,time interval,manufacturer,model\n${csvRow('FUZZ-SN-NEW')}\n`,
        `upn,serial number,secret key,time interval\n${w.user},FUZZ-SN-2,JBSWY3DP,30\n`,
        `serial number,secret key,time interval\r\nFUZZ-SN-3,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,60\r\n`,
        `upn,serial number,secret key,time interval\n"=cmd|' /c calc'!A1",FUZZ-SN-4,JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,30\n`,
        `upn,serial number,secret key,time interval\n${'z'.repeat(5_000)},S,K,30\n`,
        `\ufeffupn,serial number,secret key,time interval\n"unclosed,S,K,30\n`,
        'upn,serial number,secret key,time interval\n\u0000,\u0000,\u0000,\u0000\n',
        `upn,serial number,secret key,time interval\n${csvRow(w.serial)}\n${csvRow(w.serial)}\n`,
        pskc('<KeyPackage><Key Id="1" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp"><Data><Secret><PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=</PlainValue></Secret></Data></Key></KeyPackage>'),
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><KeyContainer>&lol2;</KeyContainer>',
        pskc('<a>'.repeat(40) + '</a>'.repeat(40)),
        pskc(`<KeyPackage><Key Id="${'i'.repeat(70_000)}"/></KeyPackage>`),
        '<?xml version="1.0" encoding="UTF-16"?><KeyContainer/>',
        'not a file at all',
        'AAAA',
      ],
    },
  };
}

// ---- bodies from a schema -----------------------------------------------------------------------

/**
 * How hostile a body is: `valid` fields all come from the pools and the schema (the body reaches
 * the handler), `mild` ones are hostile one time in ten, `wild` ones four in ten, with extra and
 * missing fields.
 */
type Mode = 'valid' | 'mild' | 'wild';
const HOSTILE_WEIGHT: Record<Mode, number> = { valid: 0, mild: 1, wild: 4 };

/** Any value of a field: valid most of the time (so that bodies reach deep code), hostile otherwise. */
function fieldArb(schema: ZodLike, name: string, w: World, depth: number, mode: Mode): fc.Arbitrary<Node> {
  const valid = validArb(schema, name, w, depth, mode);
  if (mode === 'valid') return valid;
  return fc.oneof({ weight: 10 - HOSTILE_WEIGHT[mode], arbitrary: valid }, { weight: HOSTILE_WEIGHT[mode], arbitrary: hostileArb(schema, name, w, depth) });
}

function validArb(schema: ZodLike, name: string, w: World, depth: number, mode: Mode = 'valid'): fc.Arbitrary<Node> {
  const d = defOf(schema);
  const leaf = core(schema);
  const pool = name === 'tenantId' && mode === 'valid' ? fc.constant<Node>(w.tenant) : defOf(leaf).type === 'string' ? poolArb(w, name, leaf) : undefined;
  if (d.type === 'nullable' && d.innerType) return fc.oneof({ weight: 4, arbitrary: validArb(d.innerType, name, w, depth, mode) }, { weight: 1, arbitrary: fc.constant(null) });
  if (WRAPPERS.has(d.type) && d.innerType) return validArb(d.innerType, name, w, depth, mode);
  if (d.type === 'pipe' && d.in) return validArb(d.in, name, w, depth, mode);
  switch (d.type) {
    case 'object':
      return objectArb(schema, w, depth, mode);
    case 'array': {
      const { min, max } = lengthLimits(schema);
      return fc.array(fieldArb(d.element!, name, w, depth + 1, mode), { minLength: Math.min(min, 3), maxLength: Math.max(Math.min(max ?? 4, 4), Math.min(min, 3)) });
    }
    case 'union':
      return fc.oneof(...d.options!.map((o) => validArb(o, name, w, depth, mode)));
    case 'enum':
      return fc.constantFrom<Node>(...Object.values(d.entries!));
    case 'literal':
      return fc.constantFrom<Node>(...(d.values as Node[]));
    case 'boolean':
      return fc.boolean();
    case 'number': {
      const { min, max } = numberLimits(schema);
      return fc.oneof(fc.integer({ min, max }), fc.constantFrom<Node>(min, max));
    }
    case 'string':
      return pool ?? stringArb(schema);
    default:
      return fc.constant(null);
  }
}

function stringArb(schema: ZodLike): fc.Arbitrary<Node> {
  const d = defOf(schema);
  const { min, max } = lengthLimits(schema);
  if (d.format === 'email') return fc.constantFrom<Node>('helga@contoso.example');
  if (d.format === 'datetime') return fc.constantFrom<Node>(new Date().toISOString());
  const pattern = d.pattern ?? (d.checks ?? []).map((c) => c._zod.def.pattern).find((p) => p !== undefined);
  if (pattern) {
    const matching = fc.stringMatching(pattern);
    const fits = (s: Node) => typeof s === 'string' && s.length >= min && (max === undefined || s.length <= max);
    if (!fc.sample(matching, { numRuns: 30, seed: 1 }).some(fits)) return fc.constant<Node>('a'.repeat(Math.max(min, 1)));
    return fc.oneof(matching.filter(fits), fc.constant<Node>('a'.repeat(Math.max(min, 1))));
  }
  return fc.oneof(
    fc.string({ minLength: Math.max(min, 1), maxLength: Math.min(max ?? 40, 40) }),
    fc.constant<Node>('m'.repeat(max ?? 256)),
  );
}

function hostileArb(schema: ZodLike, name: string, w: World, depth: number): fc.Arbitrary<Node> {
  const c = core(schema);
  const { max } = lengthLimits(c);
  const edges: Node[] = [];
  if (max !== undefined) edges.push('b'.repeat(max), 'b'.repeat(max + 1), '😀'.repeat(Math.ceil(max / 2) + 1), '\u0301'.repeat(max));
  const valid = validArb(schema, name, w, depth + 1);
  const decorated = valid.chain((v): fc.Arbitrary<Node> => {
    const variants: Node[] = [[v], obj([['value', v]]), obj([['$ne', v]])];
    if (typeof v === 'string') variants.push(` ${v}`, `${v}\u0000`, `${v}\u202e`, `${v}\n`, v.toUpperCase(), `${v}${'\u200b'}`, Number(v) || 0);
    if (typeof v === 'number') variants.push(String(v), v + 0.5, -v, [v]);
    if (typeof v === 'boolean') variants.push(String(v), v ? 1 : 0);
    return fc.constantFrom(...variants);
  });
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom<Node>(null, true, false, [], obj([])) },
    { weight: 4, arbitrary: fc.constantFrom<Node>(...HOSTILE_STRINGS) },
    { weight: 2, arbitrary: fc.constantFrom<Node>(...HOSTILE_NUMBERS) },
    { weight: 3, arbitrary: decorated },
    ...(edges.length > 0 ? [{ weight: 3, arbitrary: fc.constantFrom<Node>(...edges) }] : []),
    { weight: 1, arbitrary: fc.constantFrom<Node>(deepArray(64), deepArray(3_000), deepObject(500), deepObject(2_000)) },
    {
      weight: 1,
      arbitrary: fc.constantFrom<Node>(obj([['__proto__', obj([['tenantId', 'other-tenant'], ['admin', true]])]]), obj([['constructor', obj([['prototype', obj([['polluted', true]])]])]])),
    },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  );
}

function objectArb(schema: ZodLike, w: World, depth: number, mode: Mode): fc.Arbitrary<Node> {
  const shape = defOf(core(schema)).shape ?? {};
  const fields = Object.entries(shape).map(([key, s]) => {
    const value = fieldArb(s, key, w, depth + 1, mode).map((v): [string, Node] => [key, v]);
    // Optional fields are often left out; a required one is sometimes missing.
    if (!isOptional(s) && mode === 'valid') return value;
    return fc.option(value, { nil: undefined, freq: isOptional(s) ? 2 : mode === 'wild' ? 8 : 30 });
  });
  const extra = fc.tuple(fc.constantFrom(...HOSTILE_KEYS), fc.oneof(fc.constantFrom<Node>(...HOSTILE_STRINGS.slice(0, 20)), fc.constantFrom<Node>(w.ghost, 'other-tenant', 1, null)));
  const extras = depth > 2 || mode === 'valid' ? fc.constant<Array<[string, Node]>>([]) : fc.array(extra, { maxLength: mode === 'wild' ? 2 : 1 });
  return fc.tuple(fc.tuple(...fields), extras, fc.boolean()).map(([present, more, extrasFirst]) => {
    const entries = present.filter((e): e is [string, Node] => e !== undefined);
    return obj(extrasFirst ? [...more, ...entries] : [...entries, ...more]);
  });
}

// ---- requests -----------------------------------------------------------------------------------

/** A body: schema-shaped JSON (padded to a size), or raw bytes. */
type BodyPlan = { json: Node; padTo?: 'limit' | 'over' } | { bytes: string; note: string };

interface HeaderPlan {
  /** `ours`: the tenant's key; `platform`: the operator's key (only for the test's tenants). */
  auth: 'ours' | 'platform' | 'none' | { values: readonly string[] };
  /** Mfa-Deadline relative to the send time in ms, in some spelling; or a literal text. */
  deadline?: { offsetMs: number; spelling: 'int' | 'float' | 'exp' | 'plus' | 'padded' } | { text: string };
  traceparent?: string;
  tracestate?: string;
  operator?: string;
  extra: Array<[string, string]>;
  /** Written as raw bytes, with one of these malformations (a header block nats.js would not write). */
  rawMutation?: string;
}

interface FuzzRequest {
  body: BodyPlan;
  headers: HeaderPlan;
}

/** Subjects that destroy a user: they aim at the victim, so that the other subjects still meet a user with everything. */
const DESTRUCTIVE: ReadonlySet<string> = new Set([Subjects.usersDelete, Subjects.usersReset]);

function bodyArb(subject: ApiSubject, world: World): fc.Arbitrary<BodyPlan> {
  // tenants.delete aims at the ghost tenant (which the platform key may have created meanwhile): the
  // test's tenant must stay for every other subject.
  const w = DESTRUCTIVE.has(subject) ? { ...world, user: world.victim } : subject === Subjects.tenantsDelete ? { ...world, tenant: world.ghost } : world;
  const schema = RequestSchemas[subject] as unknown as ZodLike;
  // Valid bodies are the ones the schema accepts, where enough generated ones are (the rules across
  // fields, such as a usage query's span, refuse most).
  const allValid = objectArb(schema, w, 0, 'valid');
  const accepted = (v: Node) => accepts(schema, parseLikeTheTransport(Buffer.from(jsonText(v))).ok ? JSON.parse(jsonText(v)) : undefined);
  const rate = fc.sample(allValid, { numRuns: 200, seed: 7 }).filter(accepted).length;
  const valid = rate >= 4 ? allValid.filter(accepted) : allValid;
  const shaped = fc.oneof(
    { weight: 7, arbitrary: valid },
    { weight: 8, arbitrary: objectArb(schema, w, 0, 'mild') },
    { weight: 5, arbitrary: objectArb(schema, w, 0, 'wild') },
  );
  const max = maxRequestBytes(subject);
  const rawBodies: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['space', Buffer.from(' ')],
    ['whitespace', Buffer.from('\r\n\t  \n')],
    ['null', Buffer.from('null')],
    ['number', Buffer.from('42')],
    ['negative zero', Buffer.from('-0')],
    ['string', Buffer.from('"tenantId"')],
    ['true', Buffer.from('true')],
    ['array', Buffer.from(`[{"tenantId":"${w.tenant}"}]`)],
    ['empty object', Buffer.from('{}')],
    ['open brace', Buffer.from('{')],
    ['NaN literal', Buffer.from(`{"tenantId":"${w.tenant}","limit":NaN}`)],
    ['single quotes', Buffer.from(`{'tenantId':'${w.tenant}'}`)],
    ['comment', Buffer.from(`{"tenantId":"${w.tenant}" /* c */}`)],
    ['trailing comma', Buffer.from(`{"tenantId":"${w.tenant}",}`)],
    ['two objects', Buffer.from(`{"tenantId":"${w.tenant}"}{"a":1}`)],
    ['invalid utf-8 0xff', Buffer.from([0x7b, 0xff, 0xfe, 0x7d])],
    ['invalid utf-8 in a string', Buffer.concat([Buffer.from(`{"tenantId":"${w.tenant}","userId":"`), Buffer.from([0xc3, 0x28]), Buffer.from('"}')])],
    ['overlong utf-8', Buffer.concat([Buffer.from(`{"tenantId":"${w.tenant}","userId":"`), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')])],
    ['utf-8 surrogate', Buffer.concat([Buffer.from(`{"tenantId":"${w.tenant}","userId":"`), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')])],
    ['utf-16', Buffer.from(`{"tenantId":"${w.tenant}"}`, 'utf16le')],
    ['bom', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(`{"tenantId":"${w.tenant}"}`)])],
    ['nul byte', Buffer.from(`{"tenantId":"${w.tenant}"}\u0000`)],
    ['unclosed nesting', Buffer.from('['.repeat(8_000))],
    ['deep nesting', Buffer.from(`{"tenantId":"${w.tenant}","x":${'['.repeat(8_000)}${']'.repeat(8_000)}}`)],
    ['oversized', Buffer.from(`{"tenantId":"${w.tenant}","pad":"${'x'.repeat(max)}"}`)],
  ];
  const truncated = shaped.chain((json) => {
    const text = jsonText(json);
    return fc.nat({ max: Math.max(text.length - 1, 0) }).map((n): BodyPlan => ({ bytes: Buffer.from(text.slice(0, n)).toString('base64'), note: `truncated at ${n}` }));
  });
  return fc.oneof(
    { weight: 16, arbitrary: shaped.map((json): BodyPlan => ({ json })) },
    { weight: 1, arbitrary: fc.tuple(shaped, fc.constantFrom<'limit' | 'over'>('limit', 'over')).map(([json, size]): BodyPlan => ({ json, padTo: size })) },
    { weight: 2, arbitrary: fc.constantFrom(...rawBodies).map(([note, bytes]): BodyPlan => ({ bytes: bytes.toString('base64'), note })) },
    { weight: 1, arbitrary: truncated },
  );
}

function headerArb(w: World): fc.Arbitrary<HeaderPlan> {
  const key = w.clientKey;
  const [, clientId] = key.split('.');
  const auth = fc.oneof(
    { weight: 30, arbitrary: fc.constant<HeaderPlan['auth']>('ours') },
    { weight: 3, arbitrary: fc.constant<HeaderPlan['auth']>('platform') },
    { weight: 1, arbitrary: fc.constant<HeaderPlan['auth']>('none') },
    {
      weight: 3,
      arbitrary: fc
        .constantFrom(
          [`bearer ${key}`],
          [`BEARER ${key}`],
          [`Bearer  ${key}`],
          [`Bearer\t${key}`],
          [`Basic ${Buffer.from('a:b').toString('base64')}`],
          [key],
          [`Bearer ${key}x`],
          [`Bearer ${key.slice(0, -1)}`],
          [`Bearer ${key.toUpperCase()}`],
          [`Bearer mfak.${clientId}.`],
          [`Bearer mfak..${key.split('.')[2]}`],
          [`Bearer mfak.${'A'.repeat(16)}.${key.split('.')[2]}`],
          [`Bearer ${w.platformKey}x`],
          [`Bearer ${'k'.repeat(513)}`],
          [`Bearer ${'k'.repeat(20_000)}`],
          [`Bearer ${key}\u00e9`],
          [`Bearer ${key}`, `Bearer ${key}`],
          [`Bearer ${key}`, `Bearer ${w.platformKey}`],
          ['Bearer'],
          [''],
        )
        .map((values): HeaderPlan['auth'] => ({ values: [...values] })),
    },
  );
  const deadline = fc.oneof(
    { weight: 24, arbitrary: fc.constant(undefined) },
    {
      weight: 4,
      arbitrary: fc.record({
        offsetMs: fc.constantFrom(5_000, 30_000, 3_600_000, 10 ** 12, -86_400_000, -10_000, -1_500, 120, 900),
        spelling: fc.constantFrom<'int' | 'float' | 'exp' | 'plus' | 'padded'>('int', 'int', 'int', 'float', 'exp', 'plus', 'padded'),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.constantFrom('abc', 'NaN', 'Infinity', '-Infinity', '0', '-1', '0x10', '1e3', '1e400', '9'.repeat(400), '-0', '١٢٣', '\u0000', 'null', ' ').map((text) => ({ text })),
    },
  );
  const traceparent = sometimes(
    fc.constantFrom(
      `00-${randomHex(16)}-${randomHex(8)}-01`,
      `00-${'0'.repeat(32)}-${'0'.repeat(16)}-01`,
      `ff-${randomHex(16)}-${randomHex(8)}-01`,
      `00-${randomHex(16)}-${randomHex(8)}-01-extra`,
      `00-${randomHex(16).toUpperCase()}-${randomHex(8)}-01`,
      '00-xyz',
      `99-${randomHex(16)}-${randomHex(8)}-09-${'f'.repeat(4_000)}`,
      '\u202e00-',
    ),
    25,
  );
  const tracestate = sometimes(fc.constantFrom('a=b', Array.from({ length: 100 }, (_, i) => `k${i}=v`).join(','), '=,=,=', 'x'.repeat(10_000)), 10);
  const operator = sometimes(
    fc.constantFrom(
      JSON.stringify({ sub: 'op-1', email: 'op@contoso.example', name: 'Operator' }),
      JSON.stringify({ sub: '\u202eevil' }),
      JSON.stringify({ sub: 'x'.repeat(300) }),
      '{"sub":',
      'not json',
      '[]',
      JSON.stringify({ sub: 'op', __proto__: { admin: true } }),
    ),
    5,
  );
  const extra = fc.oneof({ weight: 9, arbitrary: fc.constant<Array<[string, string]>>([]) }, { weight: 1, arbitrary: fc.array(
    fc.constantFrom<[string, string]>(
      ['Mfa-Tenant', 'other-tenant'],
      ['Nats-Msg-Id', 'fuzz'],
      ['Nats-Expected-Stream', 'MFA_USERS'],
      ['Mfa-Event-Type', 'TenantCreated'],
      ['Content-Type', 'application/xml'],
      ['X-Huge', 'h'.repeat(30_000)],
      ['mfa-deadline', '1'],
    ),
    { minLength: 1, maxLength: 2 },
  ) });
  const rawMutation = sometimes(
    fc.constantFrom(
      'name with a space',
      'bare line feed in the deadline',
      'bare carriage return in a value',
      'invalid utf-8 in a value',
      'invalid utf-8 in a name',
      'status 503',
      'status 408',
      'status junk',
      'line without a colon',
      'empty name',
      'deadline twice, past first',
      'deadline twice, future first',
      'no space after colons',
      'lower-case names',
      'a thousand headers',
    ),
    10,
  );
  return fc.record({ auth, deadline, traceparent, tracestate, operator, extra, rawMutation });
}

/** `arb` in `percent` % of the requests, undefined otherwise. */
function sometimes<T>(arb: fc.Arbitrary<T>, percent: number): fc.Arbitrary<T | undefined> {
  return fc.oneof({ weight: 100 - percent, arbitrary: fc.constant(undefined) }, { weight: percent, arbitrary: arb });
}

function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

// ---- sending --------------------------------------------------------------------------------------

interface Built {
  data: Uint8Array;
  headerBytes: Uint8Array;
  /** The header block as text, for the failure message. */
  headerText: string;
  sentAt: number;
}

function deadlineText(plan: NonNullable<HeaderPlan['deadline']>, now: number): string {
  if ('text' in plan) return plan.text;
  const at = now + plan.offsetMs;
  switch (plan.spelling) {
    case 'int':
      return String(at);
    case 'float':
      return `${at}.5`;
    case 'exp':
      return at.toExponential();
    case 'plus':
      return `+${at}`;
    case 'padded':
      return `000${at}`;
  }
}

/** The request's header lines and body bytes, as they go on the wire. */
function build(subject: ApiSubject, request: FuzzRequest, w: World): Built {
  const sentAt = Date.now();
  let data: Uint8Array;
  if ('bytes' in request.body) data = Buffer.from(request.body.bytes, 'base64');
  else {
    let text = jsonText(request.body.json);
    if (request.body.padTo) text = padTo(text, maxRequestBytes(subject) + (request.body.padTo === 'over' ? 1 : 0));
    data = Buffer.from(text);
  }
  const h = request.headers;
  const lines: Array<[string, string]> = [];
  // The operator's key only ever names the test's own tenants (whatever else the body says).
  const auth = h.auth === 'platform' && !platformMayTarget(data, w) ? 'ours' : h.auth;
  if (auth === 'ours') lines.push(['Authorization', `Bearer ${w.clientKey}`]);
  else if (auth === 'platform') lines.push(['Authorization', `Bearer ${w.platformKey}`]);
  else if (auth !== 'none') for (const v of auth.values) lines.push(['Authorization', v]);
  if (h.deadline) lines.push(['Mfa-Deadline', deadlineText(h.deadline, sentAt)]);
  if (h.traceparent !== undefined) lines.push(['traceparent', h.traceparent]);
  if (h.tracestate !== undefined) lines.push(['tracestate', h.tracestate]);
  if (h.operator !== undefined) lines.push(['Mfa-Operator', h.operator]);
  lines.push(...h.extra.map(([k, v]): [string, string] => [k, v]));
  let status = '';
  if (h.rawMutation) {
    switch (h.rawMutation) {
      case 'name with a space':
        lines.push(['Bad Name', 'x']);
        break;
      case 'bare line feed in the deadline':
        lines.push(['Mfa-Deadline', `${sentAt + 5_000}\n1`]);
        break;
      case 'bare carriage return in a value':
        lines.push(['X-Note', 'a\rb']);
        break;
      case 'invalid utf-8 in a value':
        lines.push(['X-Note', '\u0000INVALID\u0000']);
        break;
      case 'invalid utf-8 in a name':
        lines.push(['X-\u0000INVALID\u0000', 'v']);
        break;
      case 'status 503':
        status = ' 503';
        break;
      case 'status 408':
        status = ' 408 Request Timeout';
        break;
      case 'status junk':
        status = ' junk \u00e9';
        break;
      case 'line without a colon':
        lines.push(['garbage-without-colon', '\u0000NOCOLON\u0000']);
        break;
      case 'empty name':
        lines.push(['', 'value']);
        break;
      case 'deadline twice, past first':
        lines.unshift(['Mfa-Deadline', String(sentAt - 60_000)]);
        lines.push(['Mfa-Deadline', String(sentAt + 60_000)]);
        break;
      case 'deadline twice, future first':
        lines.unshift(['Mfa-Deadline', String(sentAt + 60_000)]);
        lines.push(['Mfa-Deadline', String(sentAt - 60_000)]);
        break;
      case 'no space after colons':
        break;
      case 'lower-case names':
        for (const line of lines) line[0] = line[0].toLowerCase();
        break;
      case 'a thousand headers':
        for (let i = 0; i < 1_000; i++) lines.push([`X-H${i}`, String(i)]);
        break;
    }
  }
  const separator = h.rawMutation === 'no space after colons' ? ':' : ': ';
  const block = lines.map(([k, v]) => (k.startsWith('garbage') ? v : `${k}${separator}${v}`)).join('\r\n');
  let text = `NATS/1.0${status}\r\n${block ? `${block}\r\n` : ''}\r\n`;
  let headerBytes: Uint8Array = Buffer.from(text);
  if (text.includes('\u0000INVALID\u0000') || text.includes('\u0000NOCOLON\u0000')) {
    // Bytes no UTF-8 encoder writes: a lone continuation byte and a 0xff.
    const parts = text.split(/\u0000(?:INVALID|NOCOLON)\u0000/);
    const filler = text.includes('NOCOLON') ? Buffer.from('no colon here') : Buffer.from([0x80, 0xff]);
    headerBytes = Buffer.concat(parts.flatMap((p, i) => (i === 0 ? [Buffer.from(p)] : [filler, Buffer.from(p)])));
    text = text.replace(/\u0000(?:INVALID|NOCOLON)\u0000/g, text.includes('NOCOLON') ? 'no colon here' : '\\x80\\xff');
  }
  return { data, headerBytes, headerText: text, sentAt };
}

/** Whether a body names only the test's tenants (or none that could be read): the platform key may be used. */
function platformMayTarget(data: Uint8Array, w: World): boolean {
  const parsed = parseLikeTheTransport(data);
  if (!parsed.ok) return true;
  const tenantId = parsed.body.tenantId;
  return typeof tenantId !== 'string' || tenantId === w.tenant || tenantId === w.ghost;
}

const fatalUtf8 = new TextDecoder('utf-8', { fatal: true });
/** Size aside, what the transport makes of a body (libs/service-kit nats.transport.ts, docs/api.md "Requests"). */
function parseLikeTheTransport(data: Uint8Array): { ok: true; body: Record<string, unknown> } | { ok: false } {
  try {
    const body: unknown = JSON.parse(fatalUtf8.decode(data));
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return { ok: false };
    return { ok: true, body: body as Record<string, unknown> };
  } catch {
    return { ok: false };
  }
}

/** A header object nats.js sends as it is: the bytes of a header block it would refuse to write. */
function rawHeaders(bytes: Uint8Array): MsgHdrs {
  return { encode: () => bytes } as unknown as MsgHdrs;
}

// ---- what the contract says the reply must be -------------------------------------------------

interface Expectation {
  /** `ok` for a success; error codes otherwise. */
  allowed: Set<string>;
  /** No reply is right (deadline passed or too close); `mustDrop`: a reply is wrong. */
  mayDrop: boolean;
  mustDrop: boolean;
  /** How long to wait for the reply. */
  waitMs: number;
  why: string;
}

const STRICT_DECIMAL = /^\d+(\.\d+)?([eE][+-]?\d+)?$/;
const BEARER = /^Bearer ([\x21-\x7e]{1,512})$/i;

function expectationOf(subject: ApiSubject, built: Built, w: World): Expectation {
  const anyOutcome = () => new Set(['ok', ...ERROR_CODES.filter((c) => c !== 'internal' && c !== 'unavailable')]);
  let decoded: MsgHdrsImpl;
  try {
    decoded = MsgHdrsImpl.decode(built.headerBytes);
  } catch {
    // The transport refuses a header block it cannot read, before anything else.
    return { allowed: new Set(['invalid_request']), mayDrop: false, mustDrop: false, waitMs: REPLY_TIMEOUT_MS, why: 'unreadable headers' };
  }
  let mayDrop = false;
  let mustDrop = false;
  let nearDeadline = false;
  let waitMs = REPLY_TIMEOUT_MS;
  const deadline = decoded.get('Mfa-Deadline');
  if (deadline) {
    const ms = Number(deadline);
    // A reply to a request taken up in time comes soon after the deadline at worst: a second past it is enough.
    if (Number.isFinite(ms)) waitMs = Math.min(REPLY_TIMEOUT_MS, Math.max(DROP_WAIT_MS, ms - built.sentAt + 1_000));
    if (Number.isFinite(ms)) {
      const strict = STRICT_DECIMAL.test(deadline);
      if (!strict || deadline.length > 40) {
        // Not an unsigned decimal number of ms, exponent allowed ("0x10", "-5", "+…", ".5"), or longer
        // than docs/api.md allows: not a deadline, so the request is answered.
        waitMs = REPLY_TIMEOUT_MS;
      } else if (ms < built.sentAt - 200) {
        mustDrop = true;
      } else if (ms < built.sentAt + 1_500) {
        mayDrop = true;
        nearDeadline = true;
      }
    }
  }
  const result = (allowed: Set<string>, why: string): Expectation => {
    if (nearDeadline) allowed.add('unavailable');
    return { allowed, mayDrop: mayDrop || mustDrop, mustDrop, waitMs, why };
  };
  if (built.data.length > maxRequestBytes(subject)) return result(new Set(['invalid_request']), 'oversized body');
  const parsed = parseLikeTheTransport(built.data);
  if (!parsed.ok) return result(new Set(['invalid_request']), 'not a UTF-8 JSON object');
  const body = parsed.body;
  const auth = decoded.values('Authorization');
  let principal: 'client' | 'platform' | undefined;
  if (auth.length === 1) {
    const token = BEARER.exec(auth[0]!)?.[1];
    if (token === w.clientKey) principal = 'client';
    else if (token === w.platformKey) principal = 'platform';
  }
  if (!principal) return result(new Set(['forbidden']), 'no valid API key');
  if (principal === 'client' && typeof body.tenantId === 'string' && body.tenantId !== w.tenant) return result(new Set(['forbidden']), "another tenant than the key's");
  const operator = decoded.get('Mfa-Operator');
  if (operator) {
    if (principal === 'client') return result(new Set(['forbidden']), 'Mfa-Operator from a tenant key');
    let value: unknown;
    try {
      value = JSON.parse(operator);
    } catch {
      return result(new Set(['invalid_request']), 'Mfa-Operator not JSON');
    }
    if (!Operator.safeParse(value).success) return result(new Set(['invalid_request']), 'Mfa-Operator not an operator');
  }
  let accepted: boolean;
  try {
    // A top-level null is an absent field (ContractPipe, docs/api.md "Requests").
    accepted = (RequestSchemas[subject] as unknown as ZodLike).safeParse(withoutNulls(body)).success;
  } catch (error) {
    // A refinement that throws (instead of saying no) is the schema refusing the body all the same.
    return result(new Set(['invalid_request']), `the schema refuses the body (its safeParse throws ${String(error)})`);
  }
  if (!accepted) return result(new Set(['invalid_request']), 'the schema refuses the body');
  return result(anyOutcome(), 'a body the schema accepts');
}

/** String values of a body and its headers that a reply's error message must not repeat. */
function sentValues(built: Built, subject: ApiSubject): string[] {
  const words = vocabulary(RequestSchemas[subject] as unknown as ZodLike);
  const out = new Set<string>();
  const visit = (v: unknown, depth: number) => {
    if (depth > 50) return;
    if (typeof v === 'string') out.add(v);
    else if (Array.isArray(v)) v.forEach((x) => visit(x, depth + 1));
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        out.add(k);
        visit(x, depth + 1);
      }
    }
  };
  const parsed = parseLikeTheTransport(built.data);
  if (parsed.ok) visit(parsed.body, 0);
  try {
    const decoded = MsgHdrsImpl.decode(built.headerBytes);
    for (const k of decoded.keys()) for (const v of decoded.values(k)) out.add(v);
  } catch {
    // unreadable: nothing of it can be echoed
  }
  // Words and plain names may appear in a message for other reasons (an unknown setting is named on purpose).
  return [...out].filter((s) => s.length >= 8 && !words.has(s) && !/^[A-Za-z ]+$/.test(s) && !/^[A-Za-z0-9_-]{1,64}$/.test(s));
}

// ---- the test -----------------------------------------------------------------------------------

describe('contract fuzz: every subject of the NATS API, property-based (fast-check)', () => {
  const platformKey = randomBytes(36).toString('base64url');
  let stack: Stack;
  let nc: NatsConnection;
  const w = { tenant: uniqueTenant('fuzz'), ghost: uniqueTenant('fuzz-ghost'), platformKey } as World;
  /** Lines the services logged at error level or above, with the request sent last before each. */
  const errorLines: Array<{ service: string; line: string; after: string }> = [];
  let lastRequest = '(setup)';
  let requests = 0;
  /** Outcomes per subject, to show how deep the requests got. */
  const outcomes = new Map<string, Map<string, number>>();
  const count = (subject: string, outcome: string) => {
    const bySubject = outcomes.get(subject) ?? new Map<string, number>();
    bySubject.set(outcome, (bySubject.get(outcome) ?? 0) + 1);
    outcomes.set(subject, bySubject);
  };
  const sentinel = uniqueUser('sentinel');
  let sentinelSecret = '';
  let sentinelActivatedAt = 0;

  const ask = async (subject: string, body: unknown, key = w.clientKey): Promise<Reply> => {
    const h = natsHeaders();
    h.set('Authorization', `Bearer ${key}`);
    const msg = await nc.request(subject, JSON.stringify(body), { timeout: 10_000, headers: h });
    return msg.json<Reply>();
  };
  const must = async (subject: string, body: unknown, key?: string): Promise<Reply> => {
    const reply = await ask(subject, body, key);
    assert.equal(reply.error, undefined, `${subject}: ${JSON.stringify(reply.error)}`);
    return reply;
  };

  /**
   * A line about an event the service could not read and skipped, of an event written before this
   * suite began: the shared streams hold such events because unreadable-events.int writes them on
   * purpose, and the services replay them at boot. One the fuzz itself led to still counts.
   */
  const streamEnds = new Map<string, number>();
  const skippedOldEvent = (line: string): boolean => {
    if (!/"msg":"unreadable [^"]*event skipped/.test(line)) return false;
    try {
      const { stream, seq } = JSON.parse(line) as { stream?: unknown; seq?: unknown };
      const end = typeof stream === 'string' ? streamEnds.get(stream) : undefined;
      return end !== undefined && typeof seq === 'number' && seq <= end;
    } catch {
      return false;
    }
  };

  before(async () => {
    const probe = await connect({ servers: testEnv.natsUrl, name: 'e2e-contract-fuzz-streams' });
    for await (const info of (await jetstreamManager(probe)).streams.list()) streamEnds.set(info.config.name, info.state.last_seq);
    await probe.close();
    stack = await startStack({
      services: ['user-settings', 'auth-challenge', 'dispatch', 'fraud', 'reporting'],
      instances: 1,
      env: {
        NODE_ENV: 'test',
        MFA_AUTH: 'required',
        MFA_PLATFORM_API_KEY: platformKey,
        DATABASE_URL: testDatabaseUrl('mfa_e2e'),
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
      },
      onLine: (service, line) => {
        if (skippedOldEvent(line)) return;
        if (/"level":"(error|fatal)"/.test(line)) {
          errorLines.push({ service, line, after: lastRequest });
          process.stderr.write(`[${service}] ${line.slice(0, 2_000)}\n`);
        }
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connect({ servers: testEnv.natsUrl, name: 'e2e-contract-fuzz', maxPingOut: 10 });

    // The tenant, with the features whose code the fuzz should reach turned on; its keys.
    await must(Subjects.tenantsConfigure, { tenantId: w.tenant, settings: { codeLifetimeSeconds: 600, appPasswords: { allowed: true }, rememberMfa: { enabled: true, days: 30 } } }, platformKey);
    w.clientKey = String((await must(Subjects.clientsCreate, { tenantId: w.tenant, name: 'fuzz', scopes: [...SCOPES] }, platformKey)).apiKey);
    w.victimClientId = String((await must(Subjects.clientsCreate, { tenantId: w.tenant, name: 'fuzz victim', scopes: ['reports'] })).clientId);

    // The users: one with everything, one to delete and reset, and one the fuzz never names.
    w.user = uniqueUser('fuzz');
    w.victim = uniqueUser('victim');
    await must(Subjects.usersRegister, { tenantId: w.tenant, userId: w.user, displayName: 'Fuzz User', email: 'fuzz@contoso.example', phoneNumber: '+14155550147', language: 'sv-SE' });
    await must(Subjects.usersRegister, { tenantId: w.tenant, userId: w.victim, phoneNumber: '+14155550148' });
    const enrolled = await must(Subjects.totpEnroll, { tenantId: w.tenant, userId: w.user, label: 'Phone' });
    const secret = base32Decode(String(enrolled.secret));
    w.tokenId = String(enrolled.tokenId);
    const activatedAt = Date.now();
    await must(Subjects.totpActivate, { tenantId: w.tenant, userId: w.user, tokenId: w.tokenId, code: totp(secret, activatedAt) });
    // A remembered browser: a sign-in that asks for it, approved with the next step's code.
    const remembered = await must(Subjects.challengeStart, { tenantId: w.tenant, userId: w.user, method: 'totp', context: { rememberDevice: true } });
    const approved = await must(Subjects.challengeVerify, { tenantId: w.tenant, challengeId: remembered.challengeId, code: totp(secret, activatedAt + 30_000) });
    assert.equal(approved.status, 'approved', JSON.stringify(approved));
    w.rememberToken = String(approved.rememberToken);
    const pendingTotp = await must(Subjects.challengeStart, { tenantId: w.tenant, userId: w.user, method: 'totp' });
    const pendingSms = await must(Subjects.challengeStart, { tenantId: w.tenant, userId: w.user, method: 'sms' });
    w.challengeIds = [String(pendingTotp.challengeId), String(pendingSms.challengeId), String(remembered.challengeId)];
    const appPassword = await must(Subjects.usersAppPasswordsCreate, { tenantId: w.tenant, userId: w.user, name: 'Outlook 2010' });
    w.appPasswordId = String(appPassword.appPasswordId);
    w.appPassword = String(appPassword.password);
    const profile = (await must(Subjects.usersGet, { tenantId: w.tenant, userId: w.user })) as Reply & { rememberedBrowsers: Array<{ rememberId: string }> };
    w.rememberId = profile.rememberedBrowsers[0]?.rememberId ?? 'no-remembered-browser';
    // Hardware tokens: an import job and a serial number in the inventory.
    w.serial = `FUZZ-${randomHex(4)}`;
    const job = await must(Subjects.oathImport, {
      tenantId: w.tenant,
      format: 'csv',
      content: `serial number,secret key,time interval\n${w.serial},JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP,30\n`,
    });
    w.jobId = String(job.jobId);
    // Cursors the services issued, so that bodies carry real ones (and tampered copies).
    w.cursors = [];
    const page = await must(Subjects.usersList, { tenantId: w.tenant, limit: 1 });
    if (typeof page.nextCursor === 'string') w.cursors.push(page.nextCursor);
    const audit = await eventually(async () => {
      const r = await ask(Subjects.reportsAuditQuery, { tenantId: w.tenant, limit: 1 });
      return typeof r.nextCursor === 'string' ? r.nextCursor : undefined;
    }, 20_000, 'an audit cursor').catch(() => undefined);
    if (audit) w.cursors.push(audit);
    // The sentinel: signs in after the run (the fuzz never names it).
    await must(Subjects.usersRegister, { tenantId: w.tenant, userId: sentinel });
    const sentinelToken = await must(Subjects.totpEnroll, { tenantId: w.tenant, userId: sentinel });
    sentinelSecret = String(sentinelToken.secret);
    sentinelActivatedAt = Date.now();
    await must(Subjects.totpActivate, { tenantId: w.tenant, userId: sentinel, tokenId: sentinelToken.tokenId, code: totp(base32Decode(sentinelSecret), sentinelActivatedAt) });
    w.secrets = [platformKey, w.clientKey, String(w.clientKey.split('.')[2]), String(enrolled.secret), sentinelSecret, w.appPassword, w.rememberToken];
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
  });

  /** Sends one request and checks its reply against the contract; throws what is wrong. */
  async function check(subject: ApiSubject, request: FuzzRequest): Promise<void> {
    // A service that died is started again first, so that each run (and each shrinking step) meets a whole stack.
    for (const p of [...stack.processes]) {
      if (p.child.exitCode !== null || p.child.signalCode !== null) {
        await stack.kill(p.name, p.instance);
        await stack.restart(p.name, p.instance);
      }
    }
    const built = build(subject, request, w);
    const expected = expectationOf(subject, built, w);
    lastRequest = `${subject} ${describeRequest(built)}`;
    requests++;
    // The header block goes out as built: exactly what nats.js writes, or a malformed one.
    fc.pre(built.data.length + built.headerBytes.length <= (nc.info?.max_payload ?? 1_048_576) - 1_024);
    const headers = rawHeaders(built.headerBytes);
    let reply: Uint8Array | undefined;
    try {
      const msg = await nc.request(subject, built.data, { timeout: expected.waitMs, headers });
      reply = msg.data;
    } catch (error) {
      const name = (error as Error).name;
      if (name !== 'TimeoutError' && !/timeout/i.test((error as Error).message)) throw new Error(`request failed (${name}): ${(error as Error).message}`, { cause: error });
    }
    const dead = stack.processes.filter((p) => p.child.exitCode !== null || p.child.signalCode !== null);
    if (dead.length > 0) throw new Error(`a service exited: ${dead.map((p) => `${p.name} (code ${p.child.exitCode}, signal ${p.child.signalCode})`).join(', ')}`);
    if (reply === undefined) {
      if (expected.mayDrop) return count(subject, 'dropped');
      throw new Error(`no reply within ${expected.waitMs} ms (expected: ${expected.why})`);
    }
    if (expected.mustDrop) throw new Error(`answered although its Mfa-Deadline had passed: ${Buffer.from(reply).toString().slice(0, 300)}`);
    let value: unknown;
    try {
      value = JSON.parse(fatalUtf8.decode(reply));
    } catch {
      throw new Error(`the reply is not UTF-8 JSON: ${Buffer.from(reply).toString('base64').slice(0, 300)}`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`the reply is not a JSON object: ${JSON.stringify(value)}`);
    const text = Buffer.from(reply).toString();
    for (const secret of w.secrets) if (secret && text.includes(secret)) throw new Error(`the reply carries a secret: ${text.slice(0, 300)}`);
    const outcome = 'error' in value ? errorCodeOf(value) : 'ok';
    if (outcome === 'internal') throw new Error(`answered internal (expected ${[...expected.allowed].join('|')}: ${expected.why}): ${text.slice(0, 300)}`);
    if (!expected.allowed.has(outcome)) throw new Error(`answered ${outcome}, expected ${[...expected.allowed].join('|')} (${expected.why}): ${text.slice(0, 500)}`);
    count(subject, outcome);
    if (outcome === 'ok') {
      if (!ReplySchemas[subject].safeParse(value).success) throw new Error(`a success that does not match the reply schema: ${text.slice(0, 500)}`);
    } else {
      const message = (value as { error: { message: string } }).error.message;
      // The examples the messages give ("such as +14155550123") are the contract's, not the caller's.
      const own = message.replace(/such as \S+/g, 'such as …');
      const echoed = sentValues(built, subject).find((s) => own.includes(s));
      if (echoed !== undefined) throw new Error(`the error message echoes a value sent (${JSON.stringify(echoed.slice(0, 80))}): ${message.slice(0, 300)}`);
    }
  }

  function errorCodeOf(value: object): string {
    const parsed = ErrorReplySchema.safeParse(value);
    if (!parsed.success) throw new Error(`an error reply that is not the contract's {"error":{code,message}}: ${JSON.stringify(value).slice(0, 300)}`);
    if (!KNOWN_CODES.has(parsed.data.error.code)) throw new Error(`an undocumented error code: ${parsed.data.error.code}`);
    return parsed.data.error.code;
  }

  const chosen = ALL_SUBJECTS.filter((subject) => ONLY.length === 0 || ONLY.some((o) => subject.includes(o)));
  /** The request arbitrary of each subject, made once (it samples its schema). */
  const requestArbs = new Map<ApiSubject, fc.Arbitrary<FuzzRequest>>();
  const requestArb = (subject: ApiSubject) => {
    let arb = requestArbs.get(subject);
    if (!arb) requestArbs.set(subject, (arb = fc.record({ body: bodyArb(subject, w), headers: headerArb(w) })));
    return arb;
  };

  /** Runs a property of (subject, request) pairs and fails with the seed, the subject and the shrunk request. */
  async function fuzz(what: string, seed: number, runs: number, replay: string, arb: fc.Arbitrary<{ subject: ApiSubject; request: FuzzRequest }>): Promise<void> {
    const property = fc.asyncProperty(arb, ({ subject, request }) => check(subject, request));
    const details = await fc.check(property, { seed, numRuns: runs, interruptAfterTimeLimit: 240_000, markInterruptAsFailure: false });
    if (!details.failed) return;
    const failed = details.counterexample?.[0];
    const built = failed ? build(failed.subject, failed.request, w) : undefined;
    assert.fail(
      [
        `contract fuzz failed: ${what}, subject ${failed?.subject}, FUZZ_SEED=${SEED} (fast-check seed ${seed}, path ${details.counterexamplePath}), after ${details.numRuns} runs and ${details.numShrinks} shrinks`,
        `replay: FUZZ_SEED=${SEED} FUZZ_RUNS=${RUNS}${replay ? ` FUZZ_SUBJECTS=${replay}` : ''}`,
        `error: ${details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)}`,
        built ? `shrunk request:\n${describeRequest(built)}` : '',
      ].join('\n'),
    );
  }

  for (const subject of chosen) {
    const index = ALL_SUBJECTS.indexOf(subject);
    itWith({ real: wholeStack }, `${subject}: ${RUNS} generated requests are answered as the contract says`, async () => {
      await fuzz('one subject', SEED + index, RUNS, subject, requestArb(subject).map((request) => ({ subject, request })));
    }, { timeout: 300_000 });
  }

  // What one subject leaves (settings, blocks, tokens, erased users) meets the others in any order.
  itWith({ real: wholeStack }, `all subjects interleaved: ${RUNS * 5} generated requests in one random order`, async () => {
    const arb = fc.constantFrom(...chosen).chain((subject) => requestArb(subject).map((request) => ({ subject, request })));
    await fuzz('subjects interleaved', SEED + 1_000, RUNS * 5, ONLY.join(','), arb);
  }, { timeout: 300_000 });

  itWith({ real: wholeStack }, 'after the fuzz: every service is up and healthy, nothing was logged at error level, and the tenant still signs a user in', async () => {
    for (const p of stack.processes) {
      assert.equal(p.child.exitCode, null, `${p.name} is running`);
      const res = await fetch(`${p.url}/health`);
      assert.equal(res.status, 200, `${p.name} healthy`);
    }
    // Settings the fuzz may have changed are put back; the key and the sentinel were never named.
    await must(Subjects.tenantsConfigure, {
      tenantId: w.tenant,
      settings: {
        enabledMethods: ['sms', 'voice', 'push', 'totp'],
        securityDefaults: false,
        maxAttempts: 5,
        codeLifetimeSeconds: 300,
        lockout: { threshold: 10, counterResetMinutes: 15, autoUnblockMinutes: 15 },
        trustedIps: { ranges: [], onPremises: false, federatedBypass: false },
        namedLocations: [],
      },
    });
    const start = await must(Subjects.challengeStart, { tenantId: w.tenant, userId: sentinel, method: 'totp' });
    assert.equal(start.status, 'pending', JSON.stringify(start));
    const code = totp(base32Decode(sentinelSecret), Math.max(Date.now(), sentinelActivatedAt + 30_000));
    assert.deepEqual(await must(Subjects.challengeVerify, { tenantId: w.tenant, challengeId: start.challengeId, code }), { challengeId: start.challengeId, status: 'approved' });
    // Reads of the fuzzed user still answer (whatever the fuzz did to it), and asynchronous work has settled.
    const user = await ask(Subjects.usersGet, { tenantId: w.tenant, userId: w.user });
    assert.notEqual(user.error?.code, 'internal');
    await sleep(2_000);
    process.stderr.write(`contract fuzz: ${requests} requests (FUZZ_SEED=${SEED}, FUZZ_RUNS=${RUNS}); outcomes per subject:\n`);
    for (const [subject, byOutcome] of outcomes) {
      process.stderr.write(`  ${subject.padEnd(32)} ${[...byOutcome].sort().map(([o, n]) => `${o} ${n}`).join(', ')}\n`);
    }
    assert.deepEqual(
      errorLines.map((e) => `[${e.service}] ${e.line.slice(0, 600)}\n  after: ${e.after.slice(0, 600)}`),
      [],
      'lines logged at error level',
    );
  });

});

/** A request as text for a failure message: header block and body (escaped, cut). */
function describeRequest(built: Built): string {
  const body = (() => {
    try {
      return fatalUtf8.decode(built.data);
    } catch {
      return `base64:${Buffer.from(built.data).toString('base64')}`;
    }
  })();
  const cut = (s: string, n: number) => (s.length > n ? `${s.slice(0, n)}… (${s.length} chars)` : s);
  return `headers: ${cut(JSON.stringify(built.headerText), 1_500)}\nbody (${built.data.length} bytes): ${cut(JSON.stringify(body), 3_000)}`;
}
