import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ContractError } from '@mfa/contracts';
import { isTransientDependencyError } from './transient.js';

describe('transient dependency errors', () => {
  it('recognises outages of the database, cache, broker and network, also behind a cause', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    for (const error of [
      refused,
      new Error('projection failed', { cause: refused }),
      Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
      Object.assign(new Error('the database system is starting up'), { code: '57P03' }),
      Object.assign(new Error('could not serialize access'), { code: '40001' }),
      Object.assign(new Error('Reached the max retries per request limit'), { name: 'MaxRetriesPerRequestError' }),
      new Error('Connection is closed.'),
      new Error('Connection terminated unexpectedly'),
      new ContractError('unavailable', 'challenge store unavailable'),
    ]) {
      assert.equal(isTransientDependencyError(error), true, String(error));
    }
  });

  it('does not excuse errors that retrying cannot fix', () => {
    for (const error of [
      new Error('Cannot read properties of undefined'),
      Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505' }),
      Object.assign(new Error('invalid input syntax for type timestamp'), { code: '22007' }),
      new ContractError('invalid_request', 'bad'),
      'a string',
      undefined,
    ]) {
      assert.equal(isTransientDependencyError(error), false, String(error));
    }
  });
});
