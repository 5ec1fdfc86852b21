import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ContractError } from '@mfa/contracts';
import { keyringFromMasterKey, sealCursor } from '@mfa/crypto';
import { AUDIT_CURSOR_KIND, auditCursors } from './audit-report.js';
import { SIGNIN_CURSOR_KIND, signinCursors } from './signin-report.js';

const invalid = (fn: () => unknown) =>
  assert.throws(fn, (e: unknown) => e instanceof ContractError && e.code === 'invalid_request' && e.message === 'cursor: not a cursor this report issued');

describe('audit cursor', () => {
  const keyring = keyringFromMasterKey(Buffer.alloc(32, 7));
  const cursors = auditCursors(keyring, 'contoso');
  const position = { occurredAt: '2026-11-30T04:00:00.123456Z', eventId: '7b1e2f40-3c1d-4c55-9a2e-1f0e6c7d8e9f' };

  it('round-trips a position', () => {
    assert.deepEqual(cursors.decode(cursors.encode(position)), position);
  });

  it('rejects forged, truncated and tampered cursors', () => {
    const unsigned = Buffer.from(JSON.stringify([position.occurredAt, position.eventId])).toString('base64url');
    invalid(() => cursors.decode(unsigned));
    invalid(() => cursors.decode('bm90LWEtY3Vyc29y'));
    const cursor = cursors.encode(position);
    const [body, tag] = cursor.split('.') as [string, string];
    invalid(() => cursors.decode(cursor.slice(0, -1)));
    const forged = Buffer.from(JSON.stringify(['2030-01-01T00:00:00.000000Z', position.eventId])).toString('base64url');
    invalid(() => cursors.decode(`${forged}.${tag}`));
    invalid(() => cursors.decode(`${body}.${tag[0] === 'A' ? 'B' : 'A'}${tag.slice(1)}`));
    invalid(() => cursors.decode(sealCursor(keyringFromMasterKey(Buffer.alloc(32, 8)), { tenantId: 'contoso', kind: AUDIT_CURSOR_KIND }, [position.occurredAt, position.eventId])));
  });

  it("rejects another tenant's cursor, and the sign-in report's (and the other way round)", () => {
    invalid(() => auditCursors(keyring, 'fabrikam').decode(cursors.encode(position)));
    const signin = signinCursors(keyring, 'contoso');
    invalid(() => cursors.decode(signin.encode({ occurredAt: position.occurredAt, challengeId: position.eventId })));
    invalid(() => signin.decode(cursors.encode(position)));
    assert.notEqual(AUDIT_CURSOR_KIND, SIGNIN_CURSOR_KIND);
  });

  it('rejects an issued cursor whose content is not a position', () => {
    const issued = (value: unknown) => sealCursor(keyring, { tenantId: 'contoso', kind: AUDIT_CURSOR_KIND }, value);
    invalid(() => cursors.decode(issued([position.occurredAt, 'not-a-uuid'])));
    invalid(() => cursors.decode(issued(['2026-11-30T04:00:00Z', position.eventId])));
    invalid(() => cursors.decode(issued({ ...position })));
  });
});
