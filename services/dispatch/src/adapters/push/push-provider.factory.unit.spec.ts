import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { ConfigError } from '@mfa/service-kit';
import { loadDispatchConfig } from '../../config.js';
import { createPushProviders } from './push-provider.factory.js';

const pem = (type: 'rsa' | 'ec') =>
  (type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-256' })).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
const serviceAccount = JSON.stringify({ type: 'service_account', project_id: 'contoso-mfa', private_key: pem('rsa'), client_email: 'dispatch@contoso-mfa.iam.gserviceaccount.com' });
const apnsKey = pem('ec');
const apns = { APNS_KEY_ID: 'ABC123DEFG', APNS_TEAM_ID: 'TEAM123456', APNS_TOPIC: 'com.example.authenticator' };
const files: Record<string, string> = { '/keys/AuthKey.p8': apnsKey, '/keys/fcm.json': serviceAccount };
const readFile = (path: string) => {
  if (!(path in files)) throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
  return files[path]!;
};
const providers = (env: Record<string, string>) => createPushProviders(loadDispatchConfig({ HTTP_PORT: '0', ...env }), readFile);
const names = (env: Record<string, string>) => providers(env).map((p) => `${p.name}:${p.platform}`);

describe('push providers from the configuration', () => {
  it('none configured: every platform is poll-only, in production too', () => {
    assert.deepEqual(names({}), []);
    assert.deepEqual(names({ NODE_ENV: 'production', MFA_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'), MFA_PLATFORM_API_KEY: 'k'.repeat(40) }), []);
  });

  it('FCM for Android from the key file or its content; APNs for iOS from the .p8 file or its PEM', () => {
    assert.deepEqual(names({ FCM_SERVICE_ACCOUNT_JSON: serviceAccount }), ['fcm:android']);
    assert.deepEqual(names({ FCM_SERVICE_ACCOUNT_FILE: '/keys/fcm.json', APNS_KEY_FILE: '/keys/AuthKey.p8', ...apns }), ['fcm:android', 'apns:ios']);
    assert.deepEqual(names({ APNS_KEY: apnsKey.replace(/\n/g, '\\n'), ...apns }), ['apns:ios'], 'a PEM with its line breaks escaped, as environments carry it');
  });

  it('refuses at boot what could only fail later, naming the setting and never the key', () => {
    const refused = (env: Record<string, string>, message: RegExp) => assert.throws(() => providers(env), (e: unknown) => e instanceof ConfigError && message.test(e.message) && !e.message.includes('PRIVATE KEY'));
    refused({ FCM_SERVICE_ACCOUNT_JSON: serviceAccount, FCM_SERVICE_ACCOUNT_FILE: '/keys/fcm.json' }, /not both/);
    refused({ FCM_SERVICE_ACCOUNT_FILE: '/keys/missing.json' }, /FCM_SERVICE_ACCOUNT_FILE: cannot read \/keys\/missing.json: ENOENT/);
    refused({ FCM_SERVICE_ACCOUNT_JSON: '{"type":"service_account"}' }, /FCM_SERVICE_ACCOUNT_JSON: project_id/);
    refused({ APNS_KEY_FILE: '/keys/AuthKey.p8', APNS_KEY_ID: 'ABC123DEFG' }, /APNs needs APNS_TEAM_ID, APNS_TOPIC as well/);
    refused({ ...apns }, /APNs needs APNS_KEY_FILE \(or APNS_KEY\) as well/);
    refused({ APNS_KEY: pem('rsa'), ...apns }, /APNS_KEY: an APNs key is ECDSA P-256/);
    refused({ APNS_KEY: 'nonsense', ...apns }, /APNS_KEY: not a PEM private key/);
    assert.throws(() => providers({ APNS_KEY: apnsKey, ...apns, APNS_TEAM_ID: 'team' }), /APNS_TEAM_ID: must be the 10-character team id/);
    assert.throws(() => providers({ APNS_KEY: apnsKey, ...apns, APNS_URL: 'http://api.push.apple.com' }), /APNS_URL/);
  });
});
