import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { itWith, startNatsServer, type NatsServerProcess } from '@mfa/testing';
import { connectNats } from './connection.js';
import { natsSecurityFromEnv } from './security.js';

/**
 * NATS_TOKEN and NATS_TLS_* against a real nats-server that requires TLS with client
 * certificates (verify) and a token: a CA, a server and a client certificate made with openssl.
 */
describe('connectNats with TLS and a token', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mfa-nats-tls-'));
  const at = (name: string) => join(dir, name);
  const token = `t${randomBytes(16).toString('hex')}`;
  let server: NatsServerProcess;

  function certificate(name: string, issuer: { cert: string; key: string } | undefined, extensions: string): void {
    const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
    openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', at(`${name}-key.pem`), '-out', at(`${name}.csr`), '-subj', `/CN=${name}`);
    writeFileSync(at(`${name}.ext`), extensions);
    const signer = issuer ? ['-CA', issuer.cert, '-CAkey', issuer.key, '-CAcreateserial'] : ['-signkey', at(`${name}-key.pem`)];
    openssl('x509', '-req', '-in', at(`${name}.csr`), ...signer, '-days', '1', '-out', at(`${name}.pem`), '-extfile', at(`${name}.ext`));
  }

  before(async () => {
    certificate('ca', undefined, 'basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign\n');
    const ca = { cert: at('ca.pem'), key: at('ca-key.pem') };
    certificate('server', ca, 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n');
    certificate('client', ca, 'extendedKeyUsage=clientAuth\n');
    writeFileSync(
      at('nats-server.conf'),
      `tls {\n  cert_file: "${at('server.pem')}"\n  key_file: "${at('server-key.pem')}"\n  ca_file: "${at('ca.pem')}"\n  verify: true\n}\nauthorization {\n  token: $MFA_TEST_NATS_TOKEN\n}\n`,
    );
    server = await startNatsServer({ config: at('nats-server.conf'), env: { MFA_TEST_NATS_TOKEN: token } });
  });

  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  // By name: nats.js verifies an IP address URL's certificate against "localhost" (no SNI for IPs).
  const attempt = (env: Record<string, string>) => connectNats({ url: `nats://localhost:${server.port}`, name: 'tls-test', security: natsSecurityFromEnv(env), connectTimeoutMs: 1_500 });

  itWith({ real: ['nats'] }, 'connects with the CA, a client certificate and the token, JetStream included', async () => {
    const nats = await attempt({ NATS_TOKEN: token, NATS_TLS_CA: at('ca.pem'), NATS_TLS_CERT: at('client.pem'), NATS_TLS_KEY: at('client-key.pem') });
    try {
      assert.equal(nats.nc.info?.tls_required, true);
      await nats.jsm.getAccountInfo();
    } finally {
      await nats.nc.close();
    }
  });

  itWith({ real: ['nats'] }, 'is refused without the client certificate, and with a wrong token', async () => {
    await assert.rejects(attempt({ NATS_TOKEN: token, NATS_TLS_CA: at('ca.pem') }), /NATS_URL: cannot connect to any of nats:\/\/localhost:\d+/);
    await assert.rejects(attempt({ NATS_TOKEN: 'wrong', NATS_TLS_CA: at('ca.pem'), NATS_TLS_CERT: at('client.pem'), NATS_TLS_KEY: at('client-key.pem') }), (e: Error) => {
      assert.match(String((e.cause as Error | undefined)?.message), /Authorization Violation/i);
      return true;
    });
  });
});
