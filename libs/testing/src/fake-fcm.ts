import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { Received } from './received.js';

export interface FakeFcmMessage {
  /** The message's resource name, as messages:send answered it. */
  name: string;
  token: string;
  data: Record<string, string>;
  android: Record<string, unknown> | undefined;
  /** Everything else the message carried (notification, apns, webpush…): the service sends none. */
  extra: string[];
  traceparent: string | undefined;
  receivedAt: Date;
}

/** A scripted answer to the next messages:send, whatever it carries. */
type FakeFcmFailure = { status: 429 | 500 | 503 } | { status: 401 };

const FCM_SCOPE = 'https://www.googleapis.com/auth/firebase.messaging';
const FCM_ERROR = 'type.googleapis.com/google.firebase.fcm.v1.FcmError';
/** The gRPC status and FCM error code of each scripted status, as FCM answers them. */
const STATUS_OF: Record<number, { status: string; errorCode?: string; message: string }> = {
  401: { status: 'UNAUTHENTICATED', message: 'Request had invalid authentication credentials. Expected OAuth 2 access token.' },
  429: { status: 'RESOURCE_EXHAUSTED', errorCode: 'QUOTA_EXCEEDED', message: 'Quota exceeded for quota metric.' },
  500: { status: 'INTERNAL', errorCode: 'INTERNAL', message: 'Internal error encountered.' },
  503: { status: 'UNAVAILABLE', errorCode: 'UNAVAILABLE', message: 'The service is currently unavailable.' },
};

/**
 * A stand-in for Firebase Cloud Messaging's HTTP v1 API and Google's OAuth2 token endpoint,
 * speaking their wire protocol so the real FCM adapter runs unchanged. It owns a service account
 * (an RSA key of its own; `serviceAccountJson()` is the key file the service is configured with,
 * whose token_uri points here). `POST /token` takes the JWT bearer grant (RFC 7523): the
 * assertion must be signed RS256 by that key, iss the account's e-mail, aud the token_uri, scope
 * firebase.messaging, at most an hour long; it answers an access token. `POST
 * /v1/projects/{project}/messages:send` needs a live access token (401 UNAUTHENTICATED otherwise)
 * and a message with a token and string data; a token told unregistered answers 404 UNREGISTERED,
 * one told invalid 400 INVALID_ARGUMENT, with Google's error body. It records what it accepted.
 */
export class FakeFcm {
  readonly projectId = `fake-project-${randomBytes(4).toString('hex')}`;
  readonly clientEmail = `mfa-dispatch@${this.projectId}.iam.gserviceaccount.com`;
  private readonly keyId = randomBytes(20).toString('hex');
  private readonly keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
  private readonly received = new Received<FakeFcmMessage>('fake FCM');
  /** Access tokens handed out, and until when (ms) each is good. */
  private readonly accessTokens = new Map<string, number>();
  private readonly unregisteredTokens = new Set<string>();
  private readonly invalidTokens = new Set<string>();
  private failures: FakeFcmFailure[] = [];
  private server: Server | undefined;
  /** Token exchanges answered with an access token. */
  tokensIssued = 0;
  /** Token exchanges refused (bad assertion, bad grant). */
  tokensRefused = 0;
  /** messages:send requests seen, accepted or not. */
  sendRequests = 0;
  /** expires_in of the access tokens it issues. */
  accessTokenSeconds = 3599;
  /** Artificial latency of every answer, ms. */
  delayMs = 0;

  get messages(): FakeFcmMessage[] {
    return this.received.items;
  }

  get url(): string {
    const address = this.server?.address() as AddressInfo | undefined;
    if (!address) throw new Error('fake FCM is not listening');
    return `http://127.0.0.1:${address.port}`;
  }

  get tokenUri(): string {
    return `${this.url}/token`;
  }

  /** The service-account key file (JSON) of its project, as the Google Cloud console gives it out. */
  serviceAccountJson(): string {
    return JSON.stringify({
      type: 'service_account',
      project_id: this.projectId,
      private_key_id: this.keyId,
      private_key: this.keys.privateKey.export({ type: 'pkcs8', format: 'pem' }),
      client_email: this.clientEmail,
      client_id: '100000000000000000000',
      auth_uri: 'https://accounts.google.com/o/oauth2/auth',
      token_uri: this.tokenUri,
    });
  }

  /** Environment for the dispatch service to push through this fake. */
  env(): Record<string, string> {
    return { FCM_SERVICE_ACCOUNT_JSON: this.serviceAccountJson(), FCM_API_URL: this.url };
  }

  /** The app was uninstalled: pushes to `token` answer 404 UNREGISTERED. */
  unregister(token: string): void {
    this.unregisteredTokens.add(token);
  }

  /** `token` is not an FCM registration token at all: 400 INVALID_ARGUMENT. */
  invalidate(token: string): void {
    this.invalidTokens.add(token);
  }

  /** The next `failures.length` messages:send requests fail as given, in order. */
  failNext(...failures: FakeFcmFailure[]): void {
    this.failures.push(...failures);
  }

  /** Every access token handed out so far stops working (revoked, or expired early): 401 until a new one. */
  revokeAccessTokens(): void {
    this.accessTokens.clear();
  }

  messagesTo(token: string): FakeFcmMessage[] {
    return this.messages.filter((m) => m.token === token);
  }

  waitFor(predicate: (m: FakeFcmMessage) => boolean, timeoutMs = 10_000): Promise<FakeFcmMessage> {
    return this.received.waitFor(predicate, timeoutMs);
  }

  async start(port = 0): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', resolve));
    return this;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    const path = new URL(req.url ?? '/', 'http://fake').pathname;
    if (req.method === 'POST' && path === '/token') return this.token(body, res);
    if (req.method === 'POST' && path === `/v1/projects/${this.projectId}/messages:send`) return this.send(req, body, res);
    if (req.method === 'POST' && /^\/v1\/projects\/[^/]+\/messages:send$/.test(path)) {
      // Another project: the service account has no right to it.
      return json(res, 403, googleError(403, 'PERMISSION_DENIED', 'Permission denied on resource project.'));
    }
    json(res, 404, googleError(404, 'NOT_FOUND', 'Requested entity was not found.'));
  }

  private async token(body: string, res: ServerResponse): Promise<void> {
    const form = new URLSearchParams(body);
    const refuse = (error: string, description: string) => {
      this.tokensRefused++;
      json(res, 400, { error, error_description: description });
    };
    if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') return refuse('unsupported_grant_type', 'Invalid grant_type.');
    const assertion = form.get('assertion') ?? '';
    let payload: Record<string, unknown>;
    try {
      if (decodeProtectedHeader(assertion).kid !== this.keyId) return refuse('invalid_grant', 'Invalid JWT Signature.');
      ({ payload } = await jwtVerify(assertion, this.keys.publicKey, { algorithms: ['RS256'], issuer: this.clientEmail, audience: this.tokenUri, requiredClaims: ['iat', 'exp'] }));
    } catch (error) {
      return refuse('invalid_grant', `Invalid JWT: ${(error as Error).message}`);
    }
    if (typeof payload.scope !== 'string' || !payload.scope.split(' ').includes(FCM_SCOPE)) return refuse('invalid_scope', 'The firebase.messaging scope is missing.');
    if ((payload.exp as number) - (payload.iat as number) > 3600) return refuse('invalid_grant', 'Invalid JWT: Token must be a short-lived token (60 minutes).');
    const accessToken = `ya29.fake-${randomBytes(24).toString('base64url')}`;
    this.accessTokens.set(accessToken, Date.now() + this.accessTokenSeconds * 1000);
    this.tokensIssued++;
    json(res, 200, { access_token: accessToken, expires_in: this.accessTokenSeconds, token_type: 'Bearer' });
  }

  private send(req: IncomingMessage, body: string, res: ServerResponse): void {
    this.sendRequests++;
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const until = bearer ? this.accessTokens.get(bearer) : undefined;
    if (until === undefined || until < Date.now()) return json(res, 401, googleError(401, 'UNAUTHENTICATED', STATUS_OF[401]!.message));
    const failure = this.failures.shift();
    if (failure) {
      const { status, errorCode, message } = STATUS_OF[failure.status]!;
      return json(res, failure.status, googleError(failure.status, status, message, errorCode));
    }
    let message: Record<string, unknown>;
    try {
      const parsed = JSON.parse(body) as { message?: unknown };
      if (typeof parsed.message !== 'object' || parsed.message === null) throw new Error('no message');
      message = parsed.message as Record<string, unknown>;
    } catch {
      return json(res, 400, googleError(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.'));
    }
    const { token, data, android, ...extra } = message;
    if (typeof token !== 'string' || token === '') return json(res, 400, googleError(400, 'INVALID_ARGUMENT', 'Recipient of the message is not set.', 'INVALID_ARGUMENT'));
    const values = Object.entries((data ?? {}) as Record<string, unknown>);
    const notString = values.find(([, value]) => typeof value !== 'string');
    if (notString) {
      return json(res, 400, {
        error: {
          code: 400,
          message: `Invalid value at 'message.data[0].value' (TYPE_STRING), ${String(notString[1])}`,
          status: 'INVALID_ARGUMENT',
          details: [{ '@type': 'type.googleapis.com/google.rpc.BadRequest', fieldViolations: [{ field: 'message.data[0].value', description: 'Invalid value' }] }],
        },
      });
    }
    if (this.unregisteredTokens.has(token)) return json(res, 404, googleError(404, 'NOT_FOUND', 'Requested entity was not found.', 'UNREGISTERED'));
    if (this.invalidTokens.has(token)) return json(res, 400, googleError(400, 'INVALID_ARGUMENT', 'The registration token is not a valid FCM registration token', 'INVALID_ARGUMENT'));
    const name = `projects/${this.projectId}/messages/0:${Date.now()}%${randomBytes(8).toString('hex')}`;
    this.received.record({
      name,
      token,
      data: Object.fromEntries(values) as Record<string, string>,
      android: typeof android === 'object' && android !== null ? (android as Record<string, unknown>) : undefined,
      extra: Object.keys(extra),
      traceparent: typeof req.headers.traceparent === 'string' ? req.headers.traceparent : undefined,
      receivedAt: new Date(),
    });
    json(res, 200, { name });
  }
}

function googleError(code: number, status: string, message: string, errorCode?: string): object {
  return { error: { code, message, status, ...(errorCode ? { details: [{ '@type': FCM_ERROR, errorCode }] } : {}) } };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
