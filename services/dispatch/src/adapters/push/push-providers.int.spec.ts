import { after, before, describe } from 'node:test';
import http2 from 'node:http2';
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { FakeApns, FakeFcm, itWith } from '@mfa/testing';
import { CIRCUIT_OPEN, ProviderBreakers } from '../circuit-breakers.js';
import { loadDispatchConfig } from '../../config.js';
import { ApnsPushProvider } from './apns/apns.provider.js';
import { PushProviderError, type PushNotification, type PushProvider } from './push-provider.js';
import { createPushProviders } from './push-provider.factory.js';

// The real FCM and APNs adapters against local fakes that speak each vendor's wire protocol: FCM's
// OAuth2 token exchange and messages:send over HTTP, APNs over HTTP/2 and TLS.

const providerOf = (env: Record<string, string>): PushProvider => {
  const [provider] = createPushProviders(loadDispatchConfig({ HTTP_PORT: '0', PUSH_TIMEOUT_MS: '2000', ...env }));
  assert.ok(provider);
  return provider;
};
const notification = (token: string): PushNotification => ({ token, challengeId: `tag.${randomBytes(8).toString('hex')}`, expiresAt: new Date(Date.now() + 180_000) });
const rejectsWith = (promise: Promise<unknown>, check: (e: PushProviderError) => boolean) =>
  assert.rejects(promise, (e: unknown) => e instanceof PushProviderError && check(e));
const breakerPolicy = { errorThresholdPercentage: 50, volumeThreshold: 3, resetSeconds: 60, windowSeconds: 60 };
const pushBreakers = (provider: PushProvider, policy = breakerPolicy) =>
  new ProviderBreakers<PushNotification>([provider], policy, { check: 'push_providers', circuitOpen: (name) => new PushProviderError(CIRCUIT_OPEN, { provider: name, transient: false }) });

describe('FCM provider against a fake FCM', () => {
  const fake = new FakeFcm();
  let fcm: PushProvider;

  before(async () => {
    await fake.start();
    fcm = providerOf(fake.env());
  });
  after(() => fake.stop());

  itWith({ real: [], fake: ['fcm'] }, 'exchanges the service account assertion for an access token once, and sends data messages with it', async () => {
    const first = notification('fcm-token-1');
    const { providerMessageId } = await fcm.send(first);
    const message = fake.messagesTo('fcm-token-1')[0]!;
    assert.equal(providerMessageId, message.name);
    assert.deepEqual(message.data, { type: 'mfa.challenge', challengeId: first.challengeId });
    assert.equal(message.android?.priority, 'HIGH');
    assert.match(String(message.android?.ttl), /^1[78]\ds$/);
    assert.deepEqual(message.extra, [], 'no notification block: the app words its own');
    await fcm.send(notification('fcm-token-2'));
    assert.equal(fake.tokensIssued, 1, 'the access token is cached');
  });

  itWith({ real: [], fake: ['fcm'] }, 'gets a new access token once when FCM refuses the current one (401)', async () => {
    const issued = fake.tokensIssued;
    fake.revokeAccessTokens();
    await fcm.send(notification('fcm-token-3'));
    assert.equal(fake.tokensIssued, issued + 1);
    assert.equal(fake.messagesTo('fcm-token-3').length, 1);
  });

  itWith({ real: [], fake: ['fcm'] }, 'reports an unregistered or invalid token as invalid, an outage as transient', async () => {
    fake.unregister('fcm-gone');
    await rejectsWith(fcm.send(notification('fcm-gone')), (e) => e.invalidToken && !e.transient && e.code === 'UNREGISTERED' && e.status === 404);
    fake.invalidate('fcm-garbage');
    await rejectsWith(fcm.send(notification('fcm-garbage')), (e) => e.invalidToken && e.code === 'INVALID_ARGUMENT');
    fake.failNext({ status: 503 }, { status: 429 });
    await rejectsWith(fcm.send(notification('fcm-token-4')), (e) => e.transient && !e.invalidToken && e.code === 'UNAVAILABLE');
    await rejectsWith(fcm.send(notification('fcm-token-4')), (e) => e.transient && e.code === 'QUOTA_EXCEEDED');
    await fcm.send(notification('fcm-token-4'));
  });

  itWith({ real: [], fake: ['fcm'] }, 'opens its circuit after transient failures and then skips FCM without calling it', async () => {
    const breakers = pushBreakers(fcm);
    try {
      fake.failNext({ status: 503 }, { status: 503 }, { status: 503 });
      for (let n = 0; n < 3; n++) await rejectsWith(breakers.send(fcm, notification('fcm-token-5')), (e) => e.transient);
      const requests = fake.sendRequests;
      await rejectsWith(breakers.send(fcm, notification('fcm-token-5')), (e) => e.message === CIRCUIT_OPEN && !e.transient);
      assert.equal(fake.sendRequests, requests, 'not called while open');
      assert.deepEqual(breakers.states(), { fcm: 'open' });
      await assert.rejects(breakers.healthCheck().check(), /fcm open/);
    } finally {
      breakers.shutdown();
    }
  });

  itWith({ real: [], fake: ['fcm'] }, 'ends a send within PUSH_TIMEOUT_MS in all, the token exchange included', async () => {
    const slow = providerOf({ ...fake.env(), PUSH_TIMEOUT_MS: '300' });
    fake.delayMs = 200;
    try {
      const started = Date.now();
      await rejectsWith(slow.send(notification('fcm-token-7')), (e) => e.transient && /FCM did not answer within 300 ms/.test(e.message));
      assert.ok(Date.now() - started < 450, `took ${Date.now() - started} ms`);
    } finally {
      fake.delayMs = 0;
    }
  });

  itWith({ real: [], fake: ['fcm'] }, 'a service account the token endpoint does not know is a permanent failure', async () => {
    const stranger = JSON.parse(fake.serviceAccountJson()) as Record<string, string>;
    stranger.private_key = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const refused = fake.tokensRefused;
    const impostor = providerOf({ FCM_SERVICE_ACCOUNT_JSON: JSON.stringify(stranger), FCM_API_URL: fake.url });
    await rejectsWith(impostor.send(notification('fcm-token-6')), (e) => !e.transient && !e.invalidToken && e.code === 'invalid_grant');
    assert.equal(fake.tokensRefused, refused + 1);
    assert.equal(fake.messagesTo('fcm-token-6').length, 0);
  });

  itWith({ real: [], fake: ['fcm'] }, "a half-open circuit is not closed by the OAuth2 token endpoint's answer: it says nothing of FCM", async () => {
    const stranger = JSON.parse(fake.serviceAccountJson()) as Record<string, string>;
    stranger.private_key = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const impostor = providerOf({ FCM_SERVICE_ACCOUNT_JSON: JSON.stringify(stranger), FCM_API_URL: fake.url, PUSH_TIMEOUT_MS: '300' });
    const breakers = pushBreakers(impostor, { ...breakerPolicy, resetSeconds: 1 });
    try {
      fake.delayMs = 500;
      for (let n = 0; n < 3; n++) await rejectsWith(breakers.send(impostor, notification('fcm-token-8')), (e) => e.transient);
      fake.delayMs = 0;
      assert.deepEqual(breakers.states(), { fcm: 'open' });
      await new Promise((r) => setTimeout(r, 1_100));
      assert.deepEqual(breakers.states(), { fcm: 'half_open' });
      const sends = fake.sendRequests;
      await rejectsWith(breakers.send(impostor, notification('fcm-token-8')), (e) => e.code === 'invalid_grant' && e.status === 400);
      assert.equal(fake.sendRequests, sends, 'FCM itself was not reached');
      assert.deepEqual(breakers.states(), { fcm: 'open' }, 'a failed probe');
    } finally {
      fake.delayMs = 0;
      breakers.shutdown();
    }
  });
});

/**
 * A NAT between the provider and the fake: it forwards each connection, until `drop()` silently
 * drops the paths of those open (nothing more is forwarded either way, no FIN, no RST: as a NAT
 * that forgot them does). Connections opened after are forwarded again.
 */
class Nat {
  private readonly server: Server;
  private readonly live = new Set<{ dropped: boolean; sockets: Socket[] }>();
  connections = 0;

  constructor(private readonly target: URL) {
    this.server = createServer((client) => {
      this.connections++;
      const path = { dropped: false, sockets: [client] };
      const upstream = connect(Number(target.port), target.hostname);
      path.sockets.push(upstream);
      this.live.add(path);
      const forward = (from: Socket, to: Socket) => from.on('data', (chunk) => void (path.dropped || to.write(chunk)));
      forward(client, upstream);
      forward(upstream, client);
      for (const socket of path.sockets) {
        socket.on('error', () => undefined);
        socket.on('close', () => {
          if (path.dropped) return;
          for (const other of path.sockets) other.destroy();
          this.live.delete(path);
        });
      }
    });
  }

  get url(): string {
    return `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return this;
  }

  drop(): void {
    for (const path of this.live) path.dropped = true;
    this.live.clear();
  }

  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const path of this.live) for (const socket of path.sockets) socket.destroy();
    await closed;
  }
}

describe('APNs provider against a fake APNs', () => {
  const fake = new FakeApns();
  let apns: PushProvider;
  const deviceToken = () => randomBytes(32).toString('hex');

  before(async () => {
    await fake.start();
    apns = providerOf(fake.env());
  });
  after(async () => {
    await apns?.close?.();
    await fake.stop();
  });

  itWith({ real: [], fake: ['apns'] }, 'sends an alert over HTTP/2 with the provider token, the topic, priority 10 and the challenge expiry', async () => {
    const token = deviceToken();
    const sent = notification(token);
    const { providerMessageId } = await apns.send(sent);
    const received = fake.notificationsTo(token)[0]!;
    assert.equal(providerMessageId, received.apnsId);
    assert.equal(received.topic, fake.topic);
    assert.equal(received.pushType, 'alert');
    assert.equal(received.priority, '10');
    assert.equal(received.expiration, String(Math.floor(sent.expiresAt.getTime() / 1000)));
    assert.deepEqual(received.payload, { aps: { alert: { title: 'Sign-in request', body: 'Open the app to approve or deny it.' }, 'content-available': 1 }, type: 'mfa.challenge', challengeId: sent.challengeId });
    await apns.send(notification(deviceToken()));
    assert.equal(fake.providerTokens.size, 1, 'one provider token for both');
  });

  itWith({ real: [], fake: ['apns'] }, 'connects again after APNs closed the connection', async () => {
    fake.dropConnections();
    const token = deviceToken();
    await apns.send(notification(token));
    assert.equal(fake.notificationsTo(token).length, 1);
  });

  /** The real provider, reaching the fake through a NAT that can drop its paths. */
  async function behindNat(options: { pingIntervalMs?: number } = {}) {
    const env = fake.env();
    const nat = await new Nat(new URL(env.APNS_URL!)).start();
    const provider = new ApnsPushProvider({
      url: nat.url,
      key: createPrivateKey(readFileSync(env.APNS_KEY_FILE!)),
      keyId: fake.keyId,
      teamId: fake.teamId,
      topic: fake.topic,
      ca: readFileSync(env.APNS_CA_FILE!, 'utf8'),
      timeoutMs: 1_000,
      ...options,
    });
    return { nat, provider };
  }

  itWith({ real: [], fake: ['apns'] }, 'a connection whose path was dropped silently is replaced after a send on it times out: the next send goes on a new one', async () => {
    const { nat, provider } = await behindNat();
    try {
      await provider.send(notification(deviceToken()));
      assert.equal(nat.connections, 1);
      nat.drop();
      const lost = deviceToken();
      await rejectsWith(provider.send(notification(lost)), (e) => e.transient && /did not answer within 1000 ms/.test(e.message));
      assert.equal(fake.notificationsTo(lost).length, 0);
      const token = deviceToken();
      const started = Date.now();
      await provider.send(notification(token));
      assert.equal(fake.notificationsTo(token).length, 1, 'delivered');
      assert.equal(nat.connections, 2, 'on a new connection');
      assert.ok(Date.now() - started < 900, 'without waiting on the dead one');
    } finally {
      await provider.close();
      await nat.stop();
    }
  });

  itWith({ real: [], fake: ['apns'] }, 'a quiet connection is checked with a PING: one whose path was dropped is replaced before a send has to time out on it', async () => {
    const { nat, provider } = await behindNat({ pingIntervalMs: 200 });
    try {
      await provider.send(notification(deviceToken()));
      // Answered PINGs keep a quiet connection: no new one.
      await new Promise((r) => setTimeout(r, 700));
      await provider.send(notification(deviceToken()));
      assert.equal(nat.connections, 1, 'the connection kept while it answers');
      nat.drop();
      // A PING within 200 ms of quiet, unanswered for the send timeout (1 s): retired.
      await new Promise((r) => setTimeout(r, 2_000));
      const token = deviceToken();
      await provider.send(notification(token));
      assert.equal(fake.notificationsTo(token).length, 1);
      assert.equal(nat.connections, 2, 'on a new connection, the first send after the drop');
    } finally {
      await provider.close();
      await nat.stop();
    }
  });

  itWith({ real: [], fake: ['apns'] }, 'reports an unregistered token as invalid, rate limits and outages as transient', async () => {
    const gone = deviceToken();
    fake.unregister(gone);
    await rejectsWith(apns.send(notification(gone)), (e) => e.invalidToken && !e.transient && e.code === 'Unregistered' && e.status === 410);
    fake.failNext({ status: 503 }, { status: 429 });
    await rejectsWith(apns.send(notification(deviceToken())), (e) => e.transient && e.code === 'ServiceUnavailable');
    await rejectsWith(apns.send(notification(deviceToken())), (e) => e.transient && e.code === 'TooManyRequests');
  });

  itWith({ real: [], fake: ['apns'] }, 'a half-open circuit is closed by an answer of APNs, not by a device token refused here without asking it', async () => {
    const breakers = pushBreakers(apns, { ...breakerPolicy, resetSeconds: 1 });
    try {
      fake.failNext({ status: 503 }, { status: 503 }, { status: 503 });
      for (let n = 0; n < 3; n++) await rejectsWith(breakers.send(apns, notification(deviceToken())), (e) => e.transient);
      await new Promise((r) => setTimeout(r, 1_100));
      assert.deepEqual(breakers.states(), { apns: 'half_open' });
      const requests = fake.requests;
      await rejectsWith(breakers.send(apns, notification('not-a-hex-device-token')), (e) => e.invalidToken && !e.transient && e.code === 'BadDeviceToken' && !e.vendorAnswered);
      assert.equal(fake.requests, requests, 'APNs was not asked');
      assert.deepEqual(breakers.states(), { apns: 'half_open' }, 'neither closed nor opened again: the next send probes');
      const token = deviceToken();
      await breakers.send(apns, notification(token));
      assert.equal(fake.notificationsTo(token).length, 1);
      assert.deepEqual(breakers.states(), { apns: 'closed' });
    } finally {
      breakers.shutdown();
    }
  });

  itWith({ real: [], fake: ['apns'] }, 'replaces a provider token APNs calls expired, once it is 20 minutes old, and sends again', async () => {
    let now = Date.now();
    const env = fake.env();
    const provider = new ApnsPushProvider({
      url: env.APNS_URL!,
      key: createPrivateKey(readFileSync(env.APNS_KEY_FILE!)),
      keyId: fake.keyId,
      teamId: fake.teamId,
      topic: fake.topic,
      ca: readFileSync(env.APNS_CA_FILE!, 'utf8'),
      timeoutMs: 2000,
      clock: () => now,
    });
    try {
      await provider.send(notification(deviceToken()));
      const issuedAt = Math.floor(now / 1000);
      fake.expireProviderTokensIssuedBefore(issuedAt + 1);
      now += 5 * 60_000;
      await rejectsWith(provider.send(notification(deviceToken())), (e) => !e.transient && e.code === 'ExpiredProviderToken' && /5 min old: is this host's clock right/.test(e.message));
      now += 20 * 60_000;
      const token = deviceToken();
      await provider.send(notification(token));
      assert.ok(fake.notificationsTo(token)[0]!.providerTokenIssuedAt > issuedAt, 'sent with a new provider token');
    } finally {
      fake.expireProviderTokensIssuedBefore(0);
      await provider.close();
    }
  });

  itWith({ real: [], fake: ['apns'] }, "DeviceTokenNotForTopic (APNS_TOPIC not the app's bundle id) is a configuration error: permanent, no device marked, whichever device", async () => {
    const misconfigured = providerOf({ ...fake.env(), APNS_TOPIC: 'com.example.another-app' });
    try {
      for (let n = 0; n < 2; n++) {
        await rejectsWith(
          misconfigured.send(notification(deviceToken())),
          (e) => e.configuration && !e.invalidToken && !e.transient && e.vendorAnswered && e.code === 'DeviceTokenNotForTopic' && /APNS_TOPIC \(com\.example\.another-app\)/.test(e.message),
        );
      }
    } finally {
      await misconfigured.close?.();
    }
  });

  itWith({ real: [], fake: ['apns'] }, 'does not trust a server whose certificate it was not told to trust', async () => {
    const { APNS_CA_FILE: _ca, ...untrusted } = fake.env();
    const stranger = providerOf(untrusted);
    try {
      const requests = fake.requests;
      await rejectsWith(stranger.send(notification(deviceToken())), (e) => e.transient && /certificate/i.test(e.message));
      assert.equal(fake.requests, requests);
    } finally {
      await stranger.close?.();
    }
  });
});

describe('APNs provider: BadDeviceToken, the device or APNS_URL', () => {
  /**
   * An APNs endpoint of one environment (HTTP/2, cleartext here): it takes the tokens of its own
   * environment and answers 400 BadDeviceToken to the others', as Apple's do.
   */
  const ours = new Set<string>();
  let requests = 0;
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    requests++;
    const token = String(headers[':path']).split('/').at(-1)!;
    stream.on('data', () => undefined);
    stream.on('end', () => {
      const known = ours.has(token);
      stream.respond({ ':status': known ? 200 : 400, 'apns-id': randomBytes(16).toString('hex').replace(/(.{8})(.{4})(.{4})(.{4})(.{12})/, '$1-$2-$3-$4-$5'), ...(known ? {} : { 'content-type': 'application/json' }) });
      stream.end(known ? undefined : JSON.stringify({ reason: 'BadDeviceToken' }));
    });
  });
  let url: string;
  const token = () => randomBytes(32).toString('hex');
  const apnsAt = () =>
    new ApnsPushProvider({ url, key: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, keyId: 'ABC123DEFG', teamId: 'DEF123GHIJ', topic: 'com.example.authenticator', timeoutMs: 2_000 });

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  itWith({ real: [], fake: ['apns'] }, "decides by the share of BadDeviceToken in the instance's latest answers: a few percent is the devices' (marked, however many), most of them from 5 devices is APNS_URL (no device marked), fewer devices is not told yet", async () => {
    const setting = (e: PushProviderError) => e.configuration && !e.invalidToken && !e.transient && e.code === 'BadDeviceToken' && /is APNS_URL the environment/.test(e.message);
    const device = (e: PushProviderError) => e.invalidToken && !e.configuration && !e.transient && e.code === 'BadDeviceToken';
    const undecided = (e: PushProviderError) => !e.invalidToken && !e.configuration && !e.transient && e.code === 'BadDeviceToken' && /not told yet/.test(e.message);
    const good = () => {
      const t = token();
      ours.add(t);
      return t;
    };
    const start = requests;
    const apns = apnsAt();
    const wrongUrl = apnsAt();
    try {
      // Just restarted, quiet: three stale devices before APNs took anything are no page (no
      // configuration error) and are not marked yet.
      const stale = [token(), token(), token()];
      for (const t of stale) await rejectsWith(apns.send(notification(t)), undecided);
      // Taken since: among ten accepted pushes, six refusals from six devices (development builds
      // against production) are each the device's, the first stale one again included.
      for (let i = 0; i < 10; i++) await apns.send(notification(good()));
      for (const t of [token(), token(), token(), token(), token(), stale[0]!]) await rejectsWith(apns.send(notification(t)), device);

      // A sandbox APNS_URL in production: a developer's device is taken, every App Store one
      // refused. Until 5 devices it is not told (none marked), from then on it is the setting.
      await wrongUrl.send(notification(good()));
      for (let i = 0; i < 4; i++) await rejectsWith(wrongUrl.send(notification(token())), undecided);
      await rejectsWith(wrongUrl.send(notification(token())), setting);
      await rejectsWith(wrongUrl.send(notification(token())), setting);
      assert.equal(requests - start, 3 + 10 + 6 + 1 + 4 + 2, 'each answered by APNs');
    } finally {
      await Promise.all([apns.close(), wrongUrl.close()]);
    }
  });
});
