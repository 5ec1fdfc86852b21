import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { z } from 'zod';
import {
  Application,
  ChallengeStartRequest,
  describeIssues,
  DisplayName,
  Label,
  RequestId,
  SealedSecret,
  SigninsQueryRequest,
  TotpEnrollRequest,
  UserId,
  UsersRegisterRequest,
} from './index.js';

// Every schema that takes an identifier or display text, with the field it has in requests.
const TEXT_SCHEMAS: ReadonlyArray<readonly [string, z.ZodType]> = [
  ['UserId', UserId],
  ['DisplayName', DisplayName],
  ['Label', Label],
  ['Application', Application],
  ['RequestId', RequestId],
];

const hex = (cp: number) => `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;

const CLASSES = [
  { name: 'C0 and C1 controls', codePoints: [0x00, 0x09, 0x0a, 0x0d, 0x1b, 0x1f, 0x7f, 0x85, 0x9f], message: /control characters/ },
  {
    name: 'bidi overrides and isolates',
    codePoints: [0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069],
    message: /bidirectional override or isolate/,
  },
  { name: 'bidi marks', codePoints: [0x200e, 0x200f, 0x061c], message: /bidirectional marks/ },
  { name: 'zero-width characters', codePoints: [0x200b, 0x200c, 0x200d, 0x2060, 0xfeff], message: /zero-width/ },
  { name: 'line and paragraph separators', codePoints: [0x2028, 0x2029], message: /line or paragraph separators/ },
] as const;

function refusal(schema: z.ZodType, value: string): string {
  const parsed = schema.safeParse(value);
  assert.equal(parsed.success, false, `accepted ${JSON.stringify(value)}`);
  return describeIssues(parsed.error!.issues);
}

describe('identifiers and display text', () => {
  for (const { name, codePoints, message } of CLASSES) {
    it(`refuse ${name}, anywhere in the text, with a message naming the class`, () => {
      for (const [schemaName, schema] of TEXT_SCHEMAS) {
        for (const cp of codePoints) {
          const ch = String.fromCodePoint(cp);
          for (const value of [`${ch}helga`, `hel${ch}ga`, `helga${ch}`, ch]) {
            const text = refusal(schema, value);
            assert.match(text, message, `${schemaName} ${hex(cp)}: ${text}`);
            assert.ok(!text.includes(value) && !text.includes('helga'), `${schemaName} ${hex(cp)}: the message echoes the value`);
          }
        }
      }
    });
  }

  it('accept text in any script, accents, emoji and ordinary punctuation', () => {
    for (const value of ['helga.nordin@contoso.com', 'Åsa Öberg-Lindström', 'محمد عبد الله', 'דוד לוי', '山田 太郎', 'Zoë 🙂', 'Outlook (web) #2']) {
      for (const [schemaName, schema] of TEXT_SCHEMAS) {
        if (schemaName === 'Label' && value.length > 64) continue;
        assert.ok(schema.safeParse(value).success, `${schemaName} refused ${value}`);
      }
    }
  });

  it('still refuse lone surrogates, empty and overlong values', () => {
    assert.match(refusal(UserId, 'a\ud800b'), /well-formed Unicode/);
    assert.match(refusal(DisplayName, ''), /must not be empty/);
    assert.match(refusal(RequestId, 'x'.repeat(129)), /at most 128/);
  });

  it('are checked in every request that carries them, and the error reply never echoes the value', () => {
    const rlo = '\u202e';
    const requests: ReadonlyArray<readonly [z.ZodType, Record<string, unknown>, string]> = [
      [UsersRegisterRequest, { tenantId: 'contoso', userId: `evil${rlo}gpj.exe` }, 'userId'],
      [UsersRegisterRequest, { tenantId: 'contoso', userId: 'u', displayName: `Helga\u200bNordin` }, 'displayName'],
      [TotpEnrollRequest, { tenantId: 'contoso', userId: 'u', label: `phone\u2028two` }, 'label'],
      [ChallengeStartRequest, { tenantId: 'contoso', userId: 'u', application: `VPN\u200e` }, 'application'],
      [ChallengeStartRequest, { tenantId: 'contoso', userId: 'u', requestId: `req\u2066-1` }, 'requestId'],
      [SigninsQueryRequest, { tenantId: 'contoso', userId: `admin\ufeff` }, 'userId'],
    ];
    for (const [schema, body, field] of requests) {
      const text = refusal(schema, body as unknown as string);
      assert.match(text, new RegExp(`^${field}: must not contain`), text);
      assert.ok(!text.includes(String(body[field])), `${field}: the message echoes the value`);
    }
  });
});

describe('sealed secrets', () => {
  it('accept the v2 form (kid, hour) and the v1 form stored before it', () => {
    for (const sealed of [
      'v2.Y0PbS83U.494922.cQUKrpR9Mo64vd0r.XfS_7VJL.P-psnRm09NJ8rYTcYtCI0Q',
      'v2.Y0PbS83U.0.cQUKrpR9Mo64vd0r.XfS_7VJL.P-psnRm09NJ8rYTcYtCI0Q',
      'v1.Y0PbS83U.iKasnUcxPBTl2jTm.yRM64xysd_i0ADuKdzyL_7LBDt8.yYFT-OnTKeu1E81TmAV7bw',
    ]) {
      assert.ok(SealedSecret.safeParse(sealed).success, sealed);
    }
  });

  it('refuse other versions, a missing or malformed hour, and short parts', () => {
    for (const sealed of [
      'v3.Y0PbS83U.494922.cQUKrpR9Mo64vd0r.XfS_7VJL.P-psnRm09NJ8rYTcYtCI0Q',
      'v2.Y0PbS83U.cQUKrpR9Mo64vd0r.XfS_7VJL.P-psnRm09NJ8rYTcYtCI0Q',
      'v2.Y0PbS83U.0494922.cQUKrpR9Mo64vd0r.XfS_7VJL.P-psnRm09NJ8rYTcYtCI0Q',
      'v2.Y0PbS83U.49x922.cQUKrpR9Mo64vd0r.XfS_7VJL.P-psnRm09NJ8rYTcYtCI0Q',
      'v1.Y0PbS83U.494922.iKasnUcxPBTl2jTm.yRM64xysd_i0ADuKdzyL_7LBDt8.yYFT-OnTKeu1E81TmAV7bw',
      'v2.Y0PbS83U.494922.cQUKrpR9Mo64vd0r.XfS_7VJL.P-psnRm09NJ8rYT',
    ]) {
      assert.equal(SealedSecret.safeParse(sealed).success, false, sealed);
    }
  });
});
