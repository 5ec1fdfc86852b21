import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { PushProviderError } from '../push-provider.js';
import { FCM_SCOPE, GoogleAccessTokens } from './access-tokens.js';
import { classifyFcmResponse, fcmMessage } from './fcm.provider.js';
import { parseServiceAccount } from './service-account.js';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const keyFile = (overrides: Record<string, unknown> = {}) =>
  JSON.stringify({
    type: 'service_account',
    project_id: 'contoso-mfa',
    private_key_id: 'key-1',
    private_key: rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }),
    client_email: 'dispatch@contoso-mfa.iam.gserviceaccount.com',
    token_uri: 'https://oauth2.example/token',
    ...overrides,
  });
const fcmError = (errorCode: string) => ({ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode });
const googleError = (code: number, status: string, ...details: object[]) => ({ error: { code, status, message: `${status} happened`, details } });

describe('FCM message', () => {
  it('is a high-priority data message with nothing but the type and the challenge, held no longer than the challenge lives', () => {
    const now = Date.parse('2026-11-30T12:00:00Z');
    const body = fcmMessage({ token: 'fcm-token-1', challengeId: 'tag.nonce', expiresAt: new Date(now + 180_500) }, now);
    assert.deepEqual(body, {
      message: {
        token: 'fcm-token-1',
        data: { type: 'mfa.challenge', challengeId: 'tag.nonce' },
        android: { priority: 'HIGH', ttl: '180s' },
      },
    });
  });
});

describe('FCM answers', () => {
  it('accepts a message name', () => {
    assert.deepEqual(classifyFcmResponse(200, { name: 'projects/p/messages/0:1' }), { ok: true, name: 'projects/p/messages/0:1' });
    assert.equal(classifyFcmResponse(200, {}).ok, false);
  });

  it('UNREGISTERED and an invalid registration token mean the device must register again', () => {
    for (const [status, body] of [
      [404, googleError(404, 'NOT_FOUND', fcmError('UNREGISTERED'))],
      [400, googleError(400, 'INVALID_ARGUMENT', fcmError('INVALID_ARGUMENT'))],
      [400, googleError(400, 'INVALID_ARGUMENT')],
    ] as const) {
      const result = classifyFcmResponse(status, body);
      assert.ok(!result.ok && result.invalidToken && !result.transient, JSON.stringify(body));
    }
  });

  it('an INVALID_ARGUMENT about another field of our message is our fault, not the device token', () => {
    const result = classifyFcmResponse(400, googleError(400, 'INVALID_ARGUMENT', { '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ field: 'message.data[0].value' }] }));
    assert.ok(!result.ok && !result.invalidToken && !result.transient);
  });

  it('SENDER_ID_MISMATCH is permanent but not the device: a wrong service account must not send every user back to activation', () => {
    const result = classifyFcmResponse(403, googleError(403, 'PERMISSION_DENIED', fcmError('SENDER_ID_MISMATCH')));
    assert.ok(!result.ok && !result.invalidToken && !result.transient && result.code === 'SENDER_ID_MISMATCH');
    assert.ok(result.configuration, 'counted as a configuration error (config_error), for an alert');
  });

  it('401 asks for a new access token, unless it is about APNs credentials behind FCM', () => {
    const expired = classifyFcmResponse(401, googleError(401, 'UNAUTHENTICATED'));
    assert.ok(!expired.ok && expired.unauthenticated && !expired.transient);
    const thirdParty = classifyFcmResponse(401, googleError(401, 'UNAUTHENTICATED', fcmError('THIRD_PARTY_AUTH_ERROR')));
    assert.ok(!thirdParty.ok && !thirdParty.unauthenticated);
  });

  it('quota, outages and unreadable answers from the edge may succeed later', () => {
    for (const [status, body] of [
      [429, googleError(429, 'RESOURCE_EXHAUSTED', fcmError('QUOTA_EXCEEDED'))],
      [500, googleError(500, 'INTERNAL', fcmError('INTERNAL'))],
      [503, googleError(503, 'UNAVAILABLE', fcmError('UNAVAILABLE'))],
      [502, undefined],
    ] as const) {
      const result = classifyFcmResponse(status, body);
      assert.ok(!result.ok && result.transient && !result.invalidToken, String(status));
    }
  });
});

describe('service-account key file', () => {
  it('reads the project, the e-mail, the key and the token endpoint', () => {
    const account = parseServiceAccount(keyFile());
    assert.equal(account.projectId, 'contoso-mfa');
    assert.equal(account.clientEmail, 'dispatch@contoso-mfa.iam.gserviceaccount.com');
    assert.equal(account.privateKeyId, 'key-1');
    assert.equal(account.tokenUri, 'https://oauth2.example/token');
    assert.equal(parseServiceAccount(keyFile({ token_uri: undefined })).tokenUri, 'https://oauth2.googleapis.com/token');
  });

  it('names what is wrong, and never the key', () => {
    assert.throws(() => parseServiceAccount('{'), /is not JSON/);
    assert.throws(() => parseServiceAccount(keyFile({ type: 'authorized_user' })), /type must be "service_account"/);
    assert.throws(() => parseServiceAccount(keyFile({ client_email: undefined })), /client_email/);
    assert.throws(() => parseServiceAccount(keyFile({ private_key: 'not a key' })), /private_key is not a PEM private key/);
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    assert.throws(() => parseServiceAccount(keyFile({ private_key: ec })), /expected RSA/);
  });
});

describe('Google access tokens', () => {
  type Posted = { url: string; body: URLSearchParams };
  const scripted = (answers: Array<{ status: number; text: string } | Error>) => {
    const posted: Posted[] = [];
    const post = async (url: URL, _headers: Record<string, string>, body: string) => {
      posted.push({ url: url.href, body: new URLSearchParams(body) });
      const answer = answers.shift() ?? { status: 200, text: JSON.stringify({ access_token: `token-${posted.length}`, expires_in: 3600 }) };
      if (answer instanceof Error) throw answer;
      return answer;
    };
    return { posted, post };
  };

  it('exchanges an RS256 assertion of the service account for a token, once, and keeps it until 5 minutes before it expires', async () => {
    let now = Date.parse('2026-11-30T12:00:00Z');
    const { posted, post } = scripted([]);
    const tokens = new GoogleAccessTokens(parseServiceAccount(keyFile()), { timeoutMs: 1000, clock: () => now, post });
    const [a, b] = await Promise.all([tokens.get(), tokens.get()]);
    assert.equal(a, 'token-1');
    assert.equal(b, 'token-1', 'concurrent sends share one exchange');
    assert.equal(posted.length, 1);
    assert.equal(posted[0]!.url, 'https://oauth2.example/token');
    assert.equal(posted[0]!.body.get('grant_type'), 'urn:ietf:params:oauth:grant-type:jwt-bearer');
    const assertion = posted[0]!.body.get('assertion')!;
    assert.deepEqual(decodeProtectedHeader(assertion), { alg: 'RS256', typ: 'JWT', kid: 'key-1' });
    const { payload } = await jwtVerify(assertion, rsa.publicKey, { currentDate: new Date(now), issuer: 'dispatch@contoso-mfa.iam.gserviceaccount.com', audience: 'https://oauth2.example/token' });
    assert.equal(payload.scope, FCM_SCOPE);
    assert.equal(payload.exp! - payload.iat!, 3600);

    now += 54 * 60_000;
    assert.equal(await tokens.get(), 'token-1');
    now += 2 * 60_000;
    assert.equal(await tokens.get(), 'token-2', 'replaced within 5 minutes of its expiry');
    assert.equal(posted.length, 2);
  });

  it('a token FCM refused is replaced; one already replaced is not replaced again', async () => {
    const { posted, post } = scripted([]);
    const tokens = new GoogleAccessTokens(parseServiceAccount(keyFile()), { timeoutMs: 1000, post });
    const first = await tokens.get();
    tokens.invalidate(first);
    const second = await tokens.get();
    assert.notEqual(second, first);
    tokens.invalidate(first);
    assert.equal(await tokens.get(), second);
    assert.equal(posted.length, 2);
  });

  it('a refused grant is permanent, an outage or no answer transient; neither is cached', async () => {
    const { post } = scripted([
      { status: 400, text: JSON.stringify({ error: 'invalid_grant', error_description: 'Invalid JWT Signature.' }) },
      { status: 503, text: 'busy' },
      Object.assign(new Error('ECONNREFUSED'), { code: 'ECONNREFUSED' }),
    ]);
    const tokens = new GoogleAccessTokens(parseServiceAccount(keyFile()), { timeoutMs: 1000, post });
    await assert.rejects(tokens.get(), (e: unknown) => e instanceof PushProviderError && !e.transient && e.code === 'invalid_grant' && /400: invalid_grant: Invalid JWT Signature/.test(e.message));
    await assert.rejects(tokens.get(), (e: unknown) => e instanceof PushProviderError && e.transient && e.status === 503);
    await assert.rejects(tokens.get(), (e: unknown) => e instanceof PushProviderError && e.transient && /ECONNREFUSED/.test(e.message));
    assert.equal(await tokens.get(), 'token-4');
  });

  it('keeps the key and the tokens out of logs of itself', async () => {
    const { post } = scripted([]);
    const tokens = new GoogleAccessTokens(parseServiceAccount(keyFile()), { timeoutMs: 1000, post });
    await tokens.get();
    assert.ok(!JSON.stringify(tokens).includes('token-1'));
    assert.ok(!JSON.stringify(tokens).includes('PRIVATE'));
  });
});
