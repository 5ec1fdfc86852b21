import http2, { type Http2SecureServer, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomInt, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { Received } from './received.js';

export interface FakeApnsNotification {
  apnsId: string;
  token: string;
  topic: string;
  pushType: string | undefined;
  priority: string | undefined;
  /** apns-expiration: Unix seconds. */
  expiration: string | undefined;
  payload: Record<string, unknown>;
  /** iat of the provider token it came with (seconds). */
  providerTokenIssuedAt: number;
  traceparent: string | undefined;
  receivedAt: Date;
}

/** A scripted answer to the next request with a valid provider token. */
type FakeApnsFailure = { status: 429; reason?: 'TooManyRequests' | 'TooManyProviderTokenUpdates' } | { status: 500 | 503 };

const REASON_OF: Record<number, string> = { 429: 'TooManyRequests', 500: 'InternalServerError', 503: 'ServiceUnavailable' };
const ID_CHARACTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const appleId = () => Array.from({ length: 10 }, () => ID_CHARACTERS[randomInt(ID_CHARACTERS.length)]).join('');

/**
 * A stand-in for the Apple Push Notification service's provider API, over HTTP/2 and TLS (a
 * self-signed certificate for 127.0.0.1, made by openssl at start; `env()` names it as the CA), so
 * the real APNs adapter runs unchanged. It owns a team's signing key (ES256): `POST
 * /3/device/<token>` needs `authorization: bearer <provider token>` signed by it, with its key id
 * and team id (403 InvalidProviderToken otherwise), issued within the hour (403
 * ExpiredProviderToken otherwise, or earlier than `expireProviderTokensIssuedBefore`), for its
 * topic (400 DeviceTokenNotForTopic otherwise); a token that is not hex answers 400
 * BadDeviceToken, one told unregistered 410 Unregistered, with Apple's `{reason, timestamp}`. It
 * records what it accepted and the provider tokens it saw.
 */
export class FakeApns {
  readonly teamId = appleId();
  readonly keyId = appleId();
  readonly topic = 'com.example.authenticator';
  private readonly keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  private readonly received = new Received<FakeApnsNotification>('fake APNs');
  private readonly unregisteredTokens = new Set<string>();
  private failures: FakeApnsFailure[] = [];
  private expiredBefore = 0;
  private server: Http2SecureServer | undefined;
  private dir: string | undefined;
  /** Clients keep their HTTP/2 sessions open: stop ends them. */
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  /** Every distinct provider token that passed the signature check. */
  readonly providerTokens = new Set<string>();
  /** Requests seen, accepted or not. */
  requests = 0;

  get notifications(): FakeApnsNotification[] {
    return this.received.items;
  }

  get url(): string {
    const address = this.server?.address() as AddressInfo | undefined;
    if (!address) throw new Error('fake APNs is not listening');
    return `https://127.0.0.1:${address.port}`;
  }

  /** The team's signing key, as the .p8 file Apple gives out (PKCS #8 PEM). */
  get signingKeyPem(): string {
    return this.keys.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  }

  /** The fake's certificate (PEM): a client that trusts it reaches the fake. */
  get certificatePem(): string {
    if (!this.dir) throw new Error('fake APNs is not started');
    return readFileSync(join(this.dir, 'cert.pem'), 'utf8');
  }

  /** Environment for the dispatch service to push through this fake. */
  env(): Record<string, string> {
    if (!this.dir) throw new Error('fake APNs is not started');
    return {
      APNS_URL: this.url,
      APNS_KEY_FILE: join(this.dir, `AuthKey_${this.keyId}.p8`),
      APNS_KEY_ID: this.keyId,
      APNS_TEAM_ID: this.teamId,
      APNS_TOPIC: this.topic,
      APNS_CA_FILE: join(this.dir, 'cert.pem'),
    };
  }

  /** The app was uninstalled: pushes to `token` answer 410 Unregistered. */
  unregister(token: string): void {
    this.unregisteredTokens.add(token);
  }

  /** The next `failures.length` authenticated requests fail as given, in order. */
  failNext(...failures: FakeApnsFailure[]): void {
    this.failures.push(...failures);
  }

  /** Provider tokens issued before `seconds` (Unix) answer 403 ExpiredProviderToken, as stale ones do. */
  expireProviderTokensIssuedBefore(seconds: number): void {
    this.expiredBefore = seconds;
  }

  /** Ends every client connection, as APNs does after an idle hour or a GOAWAY: clients must connect again. */
  dropConnections(): void {
    for (const session of this.sessions) session.destroy();
  }

  notificationsTo(token: string): FakeApnsNotification[] {
    return this.notifications.filter((n) => n.token === token);
  }

  waitFor(predicate: (n: FakeApnsNotification) => boolean, timeoutMs = 10_000): Promise<FakeApnsNotification> {
    return this.received.waitFor(predicate, timeoutMs);
  }

  async start(port = 0): Promise<this> {
    this.dir = mkdtempSync(join(tmpdir(), 'fake-apns-'));
    const [key, cert] = [join(this.dir, 'key.pem'), join(this.dir, 'cert.pem')];
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=fake-apns', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert],
      { stdio: 'ignore' },
    );
    writeFileSync(join(this.dir, `AuthKey_${this.keyId}.p8`), this.signingKeyPem, { mode: 0o600 });
    this.server = http2.createSecureServer({ key: readFileSync(key), cert: readFileSync(cert) });
    this.server.on('session', (session) => {
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
    });
    this.server.on('stream', (stream, headers) => void this.handle(stream, headers));
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    return this;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const session of this.sessions) session.destroy();
      await closed;
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }

  private async handle(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Promise<void> {
    this.requests++;
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    const apnsId = typeof headers['apns-id'] === 'string' ? headers['apns-id'] : randomUUID();
    const answer = (status: number, reason?: string) => {
      if (stream.destroyed) return;
      stream.respond({ ':status': status, 'apns-id': apnsId, ...(reason ? { 'content-type': 'application/json' } : {}) });
      stream.end(reason ? JSON.stringify({ reason, ...(status === 410 ? { timestamp: Date.now() } : {}) }) : undefined);
    };
    if (headers[':method'] !== 'POST') return answer(405, 'MethodNotAllowed');
    const token = /^\/3\/device\/([^/?]+)$/.exec(String(headers[':path'] ?? ''))?.[1];
    if (token === undefined) return answer(404, 'BadPath');

    const bearer = /^bearer (.+)$/i.exec(String(headers.authorization ?? ''))?.[1];
    if (!bearer) return answer(403, 'MissingProviderToken');
    let issuedAt: number;
    try {
      if (decodeProtectedHeader(bearer).kid !== this.keyId) return answer(403, 'InvalidProviderToken');
      const { payload } = await jwtVerify(bearer, this.keys.publicKey, { algorithms: ['ES256'], issuer: this.teamId, requiredClaims: ['iat'] });
      issuedAt = payload.iat!;
    } catch {
      return answer(403, 'InvalidProviderToken');
    }
    if (issuedAt < Date.now() / 1000 - 3600 || issuedAt < this.expiredBefore) return answer(403, 'ExpiredProviderToken');
    this.providerTokens.add(bearer);

    const failure = this.failures.shift();
    if (failure) return answer(failure.status, ('reason' in failure ? failure.reason : undefined) ?? REASON_OF[failure.status]);
    if (headers['apns-topic'] !== this.topic) return answer(400, headers['apns-topic'] ? 'DeviceTokenNotForTopic' : 'MissingTopic');
    if (!/^[0-9a-f]{64}$/i.test(token)) return answer(400, 'BadDeviceToken');
    if (this.unregisteredTokens.has(token)) return answer(410, 'Unregistered');
    let payload: Record<string, unknown>;
    try {
      payload = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
    } catch {
      return answer(400, 'PayloadEmpty');
    }
    if (Buffer.concat(chunks).length > 4096) return answer(413, 'PayloadTooLarge');
    const header = (name: string) => (typeof headers[name] === 'string' ? (headers[name] as string) : undefined);
    this.received.record({
      apnsId,
      token,
      topic: this.topic,
      pushType: header('apns-push-type'),
      priority: header('apns-priority'),
      expiration: header('apns-expiration'),
      payload,
      providerTokenIssuedAt: issuedAt,
      traceparent: header('traceparent'),
      receivedAt: new Date(),
    });
    answer(200);
  }
}
