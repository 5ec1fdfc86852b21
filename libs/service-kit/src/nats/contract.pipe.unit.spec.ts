import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ChallengeStartRequest, ContractError, UsersAppPasswordsDeleteRequest, UsersRegisterRequest, UsersRememberedRevokeRequest } from '@mfa/contracts';
import { ContractPipe, withoutNulls } from './contract.pipe.js';

describe('ContractPipe: optional fields sent as null', () => {
  it('takes a top-level null as absent: an optional field so sent is accepted, a required one is missing', () => {
    const start = new ContractPipe(ChallengeStartRequest);
    const parsed = start.transform({ tenantId: 'contoso', userId: 'helga@contoso.com', method: null, clientIp: null, application: null, requestId: null, context: null });
    assert.equal(parsed.method, undefined);
    assert.equal(parsed.clientIp, undefined);
    const register = new ContractPipe(UsersRegisterRequest);
    assert.throws(
      () => register.transform({ tenantId: 'contoso', userId: null }),
      (error: unknown) => error instanceof ContractError && error.code === 'invalid_request' && /^userId: /.test(error.message),
    );
    // A wrongly typed value is still an error.
    assert.throws(() => start.transform({ tenantId: 'contoso', userId: 'helga@contoso.com', method: 42 }), (error: unknown) => error instanceof ContractError && /^method: /.test(error.message));
  });

  it('keeps a null where absence would keep or widen what the request does: a profile field, an app password or remembered browser to delete', () => {
    const register = new ContractPipe(UsersRegisterRequest);
    for (const field of ['displayName', 'email', 'phoneNumber', 'language']) {
      assert.throws(
        () => register.transform({ tenantId: 'contoso', userId: 'helga@contoso.com', [field]: null }),
        (error: unknown) => error instanceof ContractError && error.code === 'invalid_request' && error.message.startsWith(`${field}: `),
        field,
      );
    }
    for (const [schema, field] of [[UsersAppPasswordsDeleteRequest, 'appPasswordId'], [UsersRememberedRevokeRequest, 'rememberId']] as const) {
      assert.throws(
        () => new ContractPipe(schema).transform({ tenantId: 'contoso', userId: 'helga@contoso.com', [field]: null }),
        (error: unknown) => error instanceof ContractError && error.message.startsWith(`${field}: `),
        `${field}: null would delete them all`,
      );
    }
  });

  it('leaves a body without null as it is, and nested values alone', () => {
    const body = { tenantId: 'contoso', context: { insideCorporateNetwork: null } };
    assert.equal(withoutNulls(body), body);
    assert.deepEqual(withoutNulls({ a: 1, b: null }), { a: 1 });
    for (const other of [null, 'text', 42, [null]]) assert.equal(withoutNulls(other), other);
  });
});
