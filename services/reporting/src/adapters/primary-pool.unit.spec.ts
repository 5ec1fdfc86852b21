import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { hostUrls } from './primary-pool.js';

describe('DATABASE_URL with several hosts (libpq style)', () => {
  it('gives one URL per host, credentials, database and parameters kept', () => {
    assert.deepEqual(hostUrls('postgres://mfa:s3cret@pg1:5432,pg2:5433/mfa?sslmode=require'), [
      'postgres://mfa:s3cret@pg1:5432/mfa?sslmode=require',
      'postgres://mfa:s3cret@pg2:5433/mfa?sslmode=require',
    ]);
    assert.deepEqual(hostUrls('postgresql://pg1, pg2:6432/reports'), ['postgresql://pg1/reports', 'postgresql://pg2:6432/reports']);
  });

  it('leaves a URL with one host as it is', () => {
    assert.deepEqual(hostUrls('postgres://postgres@127.0.0.1:5432/mfa'), ['postgres://postgres@127.0.0.1:5432/mfa']);
  });
});
