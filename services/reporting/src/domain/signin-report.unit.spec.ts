import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ContractError, ResultDetail, SigninItem } from '@mfa/contracts';
import { testChallenge } from '@mfa/testing';
import { keyringFromMasterKey, sealCursor } from '@mfa/crypto';
import { deriveOutcome, SIGNIN_CURSOR_KIND, signinCursors, toPage, toSigninItem, type SigninRow } from './signin-report.js';

// The columns a row carries unchanged into its item, taken from one sign-in of the test data.
const signin = testChallenge();
const context = {
  userId: signin.userId,
  displayName: signin.profile.displayName ?? null,
  email: signin.profile.email ?? null,
  phoneNumber: signin.profile.phoneNumber ?? null,
  deviceToken: null,
  authMethod: signin.method,
  serverName: signin.server.name,
  serverIp: signin.server.ip,
  via: signin.via ?? ('nats' as const),
  clientIp: signin.clientIp ?? null,
  application: signin.application ?? null,
};

const row = (overrides: Partial<SigninRow> = {}): SigninRow => ({
  challengeId: 'ch-1',
  occurredAt: new Date('2025-06-01T12:00:00.123Z'),
  position: '2025-06-01T12:00:00.123000Z',
  pii: null,
  ...context,
  result: 'success',
  resultDetail: ResultDetail.success,
  deliveryStatus: 'sent',
  ...overrides,
});

const invalid = (fn: () => unknown) =>
  assert.throws(fn, (e: unknown) => e instanceof ContractError && e.code === 'invalid_request');

describe('cursor', () => {
  const keyring = keyringFromMasterKey(Buffer.alloc(32, 7));
  const cursors = signinCursors(keyring, 'contoso');
  const position = { occurredAt: '2025-06-01T12:00:00.123456Z', challengeId: 'ch|"weird" id/é' };

  it('round-trips a position with microseconds and any challenge id', () => {
    const cursor = cursors.encode(position);
    assert.match(cursor, /^[A-Za-z0-9_.-]+$/, 'opaque base64url');
    assert.deepEqual(cursors.decode(cursor), position);
  });

  it('rejects forged cursors: the unsigned form, and any content without the key', () => {
    const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    invalid(() => cursors.decode('not a cursor!'));
    invalid(() => cursors.decode(b64([position.occurredAt, position.challengeId])));
    invalid(() => cursors.decode(`${b64([position.occurredAt, position.challengeId])}.${'A'.repeat(22)}`));
    invalid(() => cursors.decode(sealCursor(keyringFromMasterKey(Buffer.alloc(32, 8)), { tenantId: 'contoso', kind: SIGNIN_CURSOR_KIND }, [position.occurredAt, position.challengeId])));
  });

  it('rejects truncated and tampered cursors', () => {
    const cursor = cursors.encode(position);
    const [body, tag] = cursor.split('.') as [string, string];
    invalid(() => cursors.decode(cursor.slice(0, -1)));
    invalid(() => cursors.decode(body));
    invalid(() => cursors.decode(`${body.slice(4)}.${tag}`));
    const later = Buffer.from(JSON.stringify(['2030-01-01T00:00:00.000000Z', position.challengeId])).toString('base64url');
    invalid(() => cursors.decode(`${later}.${tag}`));
    invalid(() => cursors.decode(`${body}.${tag.slice(0, -2)}${tag.endsWith('AA') ? 'QA' : 'AA'}`));
  });

  it("rejects another tenant's cursor and another report's", () => {
    invalid(() => signinCursors(keyring, 'fabrikam').decode(cursors.encode(position)));
    invalid(() => cursors.decode(sealCursor(keyring, { tenantId: 'contoso', kind: 'reports.audit' }, [position.occurredAt, position.challengeId])));
  });

  it('rejects an issued cursor whose content is not a position', () => {
    const issued = (value: unknown) => sealCursor(keyring, { tenantId: 'contoso', kind: SIGNIN_CURSOR_KIND }, value);
    invalid(() => cursors.decode(issued({ occurredAt: '2025-06-01T12:00:00.123456Z', challengeId: 'x' })));
    invalid(() => cursors.decode(issued(['2025-06-01T12:00:00Z', 'x'])));
    invalid(() => cursors.decode(issued(['2025-02-31T12:00:00.000000Z', 'x'])));
    invalid(() => cursors.decode(issued(['2025-06-01T12:00:00.123456Z', ''])));
    invalid(() => cursors.decode(issued(['2025-06-01T12:00:00.123456Z', 42])));
    invalid(() => cursors.decode(issued(['2025-06-01T12:00:00.123456Z', 'x', 'extra'])));
  });
});

describe('derived result', () => {
  it('keeps a recorded outcome', () => {
    assert.deepEqual(deriveOutcome({ result: 'success', resultDetail: ResultDetail.success, deliveryStatus: 'sent' }), {
      result: 'success',
      resultDetail: ResultDetail.success,
    });
    assert.deepEqual(
      deriveOutcome({ result: 'failure', resultDetail: ResultDetail.invalidCode, deliveryStatus: 'failed' }),
      { result: 'failure', resultDetail: ResultDetail.invalidCode },
    );
  });

  it('reports an expired challenge without outcome as timed out', () => {
    for (const deliveryStatus of [null, 'sent'] as const) {
      assert.deepEqual(deriveOutcome({ result: null, resultDetail: null, deliveryStatus }), {
        result: 'failure',
        resultDetail: ResultDetail.timedOut,
      });
    }
  });

  it('reports it as not delivered when its SMS could not be delivered, with or without the expiry event', () => {
    const expected = { result: 'failure', resultDetail: ResultDetail.smsNotDelivered };
    assert.deepEqual(deriveOutcome({ result: null, resultDetail: null, deliveryStatus: 'failed' }), expected);
    assert.deepEqual(
      deriveOutcome({ result: 'failure', resultDetail: ResultDetail.timedOut, deliveryStatus: 'failed' }),
      expected,
    );
  });

  it('words a delivery failure by its method: a call not answered, a push not delivered', () => {
    for (const [authMethod, resultDetail] of [['voice', ResultDetail.callNotAnswered], ['push', ResultDetail.pushNotDelivered], ['sms', ResultDetail.smsNotDelivered]] as const) {
      assert.deepEqual(deriveOutcome({ authMethod, result: null, resultDetail: null, deliveryStatus: 'failed' }), { result: 'failure', resultDetail }, authMethod);
      assert.deepEqual(deriveOutcome({ authMethod, result: 'failure', resultDetail: ResultDetail.timedOut, deliveryStatus: 'failed' }), { result: 'failure', resultDetail }, authMethod);
    }
  });
});

describe('row to item', () => {
  it('has exactly the contract fields, nulls for absent values', () => {
    const item = toSigninItem(row({ displayName: null, email: null, application: null, resends: 2, deviceId: 'dev-1' }));
    assert.deepEqual(item, {
      challengeId: 'ch-1',
      occurredAt: '2025-06-01T12:00:00.123Z',
      ...context,
      displayName: null,
      email: null,
      application: null,
      result: 'success',
      resultDetail: ResultDetail.success,
      delivery: { status: 'sent', provider: null, error: null },
      resends: 2,
      deviceToken: 'dev-1',
      deviceId: 'dev-1',
    });
    assert.deepEqual(Object.keys(item).sort(), Object.keys(SigninItem.shape).sort());
    // A method that sends nothing has no delivery; a code never sent again, no resends.
    assert.equal('delivery' in toSigninItem(row({ deliveryStatus: null })), false);
    assert.equal('resends' in toSigninItem(row({ resends: 0 })), false);
    assert.equal('deviceId' in toSigninItem(row({ deviceId: null })), false, 'no device: not a push answered by one');
    assert.equal(toSigninItem(row({ deviceId: null })).deviceToken, null, 'no device token without an app');
    SigninItem.strict().parse(item);
  });

  it('derives the result of an expired pending row', () => {
    const item = toSigninItem(row({ result: null, resultDetail: null, deliveryStatus: 'failed' }));
    assert.equal(item.result, 'failure');
    assert.equal(item.resultDetail, ResultDetail.smsNotDelivered);
  });
});

describe('page', () => {
  const cursors = signinCursors(keyringFromMasterKey(Buffer.alloc(32, 7)), 'contoso');
  const rows = [1, 2, 3, 4].map((n) => row({ challengeId: `ch-${n}`, position: `2025-06-01T12:00:0${n}.000001Z` }));

  it('returns limit items and a cursor at the last one when an extra row was read', () => {
    const page = toPage(rows, 3, cursors);
    assert.deepEqual(
      page.items.map((i) => i.challengeId),
      ['ch-1', 'ch-2', 'ch-3'],
    );
    assert.ok(page.nextCursor);
    assert.deepEqual(cursors.decode(page.nextCursor), { occurredAt: '2025-06-01T12:00:03.000001Z', challengeId: 'ch-3' });
  });

  it('has no cursor on the last page', () => {
    assert.equal(toPage(rows, 4, cursors).nextCursor, undefined);
    assert.equal(toPage(rows, 10, cursors).nextCursor, undefined);
    assert.deepEqual(toPage([], 5, cursors), { items: [] });
  });
});
