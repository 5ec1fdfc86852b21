import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { hostUrls, locatePrimary, shown } from './primary-pool.js';

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

describe('DATABASE_URL in a log line or an error', () => {
  it('shows hosts, ports and the database only: no user, no password, no query parameter', () => {
    assert.equal(shown('postgres://mfa@h1,h2/mfa?password=S3cret&sslmode=require'), 'postgres://h1,h2/mfa');
    assert.equal(shown('postgres://u:p@h/db'), 'postgres://h/db');
    assert.equal(shown('postgresql://mfa:s3cret@pg1:5432/mfa?sslpassword=k3y#x'), 'postgresql://pg1:5432/mfa');
    assert.equal(shown('postgres://u:p@ss@[::1]:5432/db'), 'postgres://[::1]:5432/db', "an unescaped '@' in the password goes with it");
    assert.equal(shown('postgres://h'), 'postgres://h');
    for (const odd of ['host=h password=S3cret', 'postgres://h/db name;password=S3cret']) {
      assert.doesNotMatch(shown(odd), /S3cret/);
    }
  });

  it('names no password in the error when no host can be reached, though the query string holds one', async () => {
    const url = 'postgres://mfa@127.0.0.1:1,127.0.0.1:2/mfa?password=S3cret&sslmode=disable';
    const error = await locatePrimary(url).then(
      () => assert.fail('no host listens'),
      (e: unknown) => e as Error,
    );
    assert.match(error.message, /127\.0\.0\.1:1\/mfa: .*127\.0\.0\.1:2\/mfa: /);
    assert.doesNotMatch(JSON.stringify({ message: error.message, cause: String(error.cause ?? '') }), /S3cret|password|mfa@/);
  });
});
