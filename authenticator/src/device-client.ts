import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { DeviceActivateReply, DeviceKeyAlgorithm, DevicePlatform, DeviceSigned, type DeviceActivateBody, type DeviceAnswerBody } from '@mfa/contracts';

/**
 * The device API (docs/device-api.md) from the app's side: activation with a fresh key, signed
 * requests, the pending sign-in and the signed answer. This module is the reference
 * implementation; the command line (main.ts), the tests, the demo and the benchmark all use it.
 */

// ---- what the server answers ----------------------------------------------------------------------
// libs/contracts has the request bodies and the activation reply; these are the other replies as
// docs/device-api.md describes them. Fields the app does not know are kept (--json shows them) and
// never make a reply invalid, so a newer server does not break an older app.

const Nullable = z.string().nullable();
/**
 * The client IP's country as the server's offline GeoIP database knows it (ISO 3166-1 alpha-2 and its
 * name); a country-level database knows no region or city. The whole location is null when unknown.
 */
export const PendingLocation = z.looseObject({ country: z.string(), countryName: z.string() });
export const PendingChallenge = z.looseObject({
  challengeId: z.string().min(1),
  application: Nullable,
  clientIp: Nullable,
  location: PendingLocation.nullable(),
  startedAt: z.string(),
  expiresAt: z.string(),
  /** false: the sign-in has no page showing a number (a VPN over RADIUS); approve without one. Absent from older servers: true. */
  numberMatch: z.boolean().optional(),
});
export type PendingChallenge = z.infer<typeof PendingChallenge>;
export const DevicePendingReply = z.object({ challenge: PendingChallenge.nullable() });
export type DevicePendingReply = z.infer<typeof DevicePendingReply>;

export const DEVICE_ANSWER_DECISIONS = ['approve', 'deny', 'fraud'] as const;
export type DeviceDecision = (typeof DEVICE_ANSWER_DECISIONS)[number];
export const DENIAL_REASONS = ['denied_by_user', 'fraud_reported', 'wrong_number', 'too_many_attempts', 'locked_out', 'user_blocked'] as const;
export const DeviceAnswerReply = z.discriminatedUnion('status', [
  z.object({ status: z.literal('approved') }),
  z.object({ status: z.literal('denied'), reason: z.string() }),
]);
export type DeviceAnswerReply = z.infer<typeof DeviceAnswerReply>;

/** The error codes of the device API ("Errors"). */
export const DEVICE_ERROR_CODES = ['invalid_request', 'unauthenticated', 'not_activated', 'forbidden', 'not_found', 'conflict', 'rate_limited', 'internal', 'unavailable'] as const;
export const DeviceErrorBody = z.object({ error: z.object({ code: z.string(), message: z.string() }) });

/**
 * A request the server refused (`code` and `message` are the server's), or one that never got a
 * usable answer: `network` (unreachable, timed out) or `bad_response` (not what the protocol says).
 */
export class DeviceApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'DeviceApiError';
  }
}

// ---- keys and signatures ------------------------------------------------------------------------

export interface DeviceKeyPair {
  algorithm: DeviceKeyAlgorithm;
  /** PKCS#8, PEM: stays on the device. */
  privateKeyPem: string;
  /** DER SubjectPublicKeyInfo, base64url: what the server keeps. */
  publicKey: string;
}

/** A new key pair: ECDSA P-256 for ES256, or Ed25519. */
export function generateDeviceKey(algorithm: DeviceKeyAlgorithm = 'ES256'): DeviceKeyPair {
  const pair = algorithm === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  return {
    algorithm,
    privateKeyPem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKey: pair.publicKey.export({ type: 'spki', format: 'der' }).toString('base64url'),
  };
}

/** The device key's signature over a UTF-8 string, base64url: IEEE P1363 (r ‖ s) for ES256, as the API requires. */
export function signDeviceData(algorithm: DeviceKeyAlgorithm, privateKey: KeyObject | string, data: string): string {
  const key = typeof privateKey === 'string' ? createPrivateKey(privateKey) : privateKey;
  const bytes = Buffer.from(data, 'utf8');
  const signature = algorithm === 'ES256' ? sign('sha256', bytes, { key, dsaEncoding: 'ieee-p1363' }) : sign(null, bytes, key);
  return signature.toString('base64url');
}

/** SHA-256 of a request body, base64url; of zero bytes when there is none. */
export function bodySha256(body: string | Uint8Array | undefined): string {
  return createHash('sha256').update(body ?? '').digest('base64url');
}

/** 16 random bytes: 22 base64url characters (the API takes 16 to 64). */
export const randomNonce = (): string => randomBytes(16).toString('base64url');

export interface SignRequestInput {
  algorithm: DeviceKeyAlgorithm;
  privateKey: KeyObject | string;
  deviceId: string;
  method: string;
  /** The path as sent, with its query: `/device/v1/challenges/pending`. */
  pathWithQuery: string;
  body?: string | Uint8Array;
  /** Milliseconds since the Unix epoch. */
  now: number;
  nonce: string;
}

/** The four headers of a signed request ("Signed requests"). */
export function signRequest(input: SignRequestInput): Record<'Mfa-Device' | 'Mfa-Timestamp' | 'Mfa-Nonce' | 'Mfa-Signature', string> {
  const timestamp = String(Math.trunc(input.now));
  const toSign = DeviceSigned.request(input.method, input.pathWithQuery, timestamp, input.nonce, bodySha256(input.body));
  return {
    'Mfa-Device': input.deviceId,
    'Mfa-Timestamp': timestamp,
    'Mfa-Nonce': input.nonce,
    'Mfa-Signature': signDeviceData(input.algorithm, input.privateKey, toSign),
  };
}

// ---- activation URLs ------------------------------------------------------------------------------

/**
 * The code and the device API's base URL from an activation URL: `https://mfa.example.com/device/v1/activate?code=…`
 * → `https://mfa.example.com/device`. The code is kept exactly as written (the proof signs it as sent).
 */
export function parseActivationUrl(activationUrl: string, options: { insecure?: boolean } = {}): { baseUrl: string; code: string } {
  let url: URL;
  try {
    url = new URL(activationUrl);
  } catch {
    throw new DeviceApiError('invalid_request', `not a URL: ${activationUrl}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new DeviceApiError('invalid_request', `not an http(s) URL: ${activationUrl}`);
  // Every later request goes to this base: over plain HTTP across a network, anyone on the way reads
  // the sign-ins and the push token and can rewrite the sign-in the user is shown before approving.
  if (url.protocol === 'http:' && !options.insecure && !isLoopbackHost(url.hostname)) {
    throw new DeviceApiError('invalid_request', `plain http:// to ${url.host} would send the sign-ins shown, the push token and the answers unprotected over the network (anyone on the way could change what you are asked to approve); use the https:// URL, or --insecure (ActivateOptions.insecure) to accept that`);
  }
  const code = url.searchParams.get('code')?.trim();
  if (!code) throw new DeviceApiError('invalid_request', 'the activation URL has no code (…/v1/activate?code=…)');
  const suffix = '/v1/activate';
  const path = url.pathname.replace(/\/+$/, '');
  if (!path.endsWith(suffix)) throw new DeviceApiError('invalid_request', `not an activation URL (its path must end with ${suffix}): ${activationUrl}`);
  return { baseUrl: `${url.origin}${path.slice(0, -suffix.length)}`, code };
}

/** This machine (localhost, 127.0.0.0/8, ::1): plain http:// there never crosses a network, as with `npm start`. */
export function isLoopbackHost(hostname: string): boolean {
  // URL has already made an IPv4 address dotted-decimal (127.1 → 127.0.0.1) and put IPv6 in brackets.
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

// ---- the client ------------------------------------------------------------------------------------

/** What the app keeps after activation: with the private key, everything a signed request needs. */
export const DeviceIdentity = z.object({
  deviceId: z.string().min(1),
  tenantId: z.string(),
  userId: z.string(),
  /** The device API's base URL (DEVICE_API_PUBLIC_URL), without a trailing slash. */
  baseUrl: z.url(),
  algorithm: DeviceKeyAlgorithm,
  privateKeyPem: z.string().min(1),
  publicKey: z.string().min(1),
  pollSeconds: z.number().positive(),
  platform: DevicePlatform,
  name: z.string().optional(),
  activatedAt: z.string(),
});
export type DeviceIdentity = z.infer<typeof DeviceIdentity>;

export interface ClientOptions {
  fetch?: typeof fetch;
  /** Milliseconds since the Unix epoch (tests move the clock). */
  now?: () => number;
  nonce?: () => string;
  /** Per request, whole milliseconds from 1 to MAX_TIMEOUT_MS; default 10 s. */
  timeoutMs?: number;
}

/** The longest timer Node keeps (2^31 - 1 ms): AbortSignal.timeout fires at once beyond it. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export interface ActivateOptions extends ClientOptions {
  algorithm?: DeviceKeyAlgorithm;
  platform?: DevicePlatform;
  pushToken?: string;
  name?: string;
  /** Accept a plain http:// activation URL to another host than this machine (parseActivationUrl). */
  insecure?: boolean;
}

export class DeviceClient {
  readonly identity: DeviceIdentity;
  private readonly privateKey: KeyObject;
  private readonly fetch: typeof fetch;
  private readonly now: () => number;
  private readonly nonce: () => string;
  private readonly timeoutMs: number;

  constructor(identity: DeviceIdentity, options: ClientOptions = {}) {
    this.identity = identity;
    this.privateKey = createPrivateKey(identity.privateKeyPem);
    this.fetch = options.fetch ?? globalThis.fetch;
    this.now = options.now ?? Date.now;
    this.nonce = options.nonce ?? randomNonce;
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Generates a key, proves it and activates with the code of the URL ("Activation"). */
  static async activate(activationUrl: string, options: ActivateOptions = {}): Promise<DeviceClient> {
    const { baseUrl, code } = parseActivationUrl(activationUrl, { insecure: options.insecure ?? false });
    const platform = options.platform ?? 'none';
    const key = generateDeviceKey(options.algorithm ?? 'ES256');
    const body: DeviceActivateBody = {
      code,
      algorithm: key.algorithm,
      publicKey: key.publicKey,
      proof: signDeviceData(key.algorithm, key.privateKeyPem, DeviceSigned.activation(code, key.publicKey)),
      platform,
      ...(options.pushToken !== undefined ? { pushToken: options.pushToken } : {}),
      ...(options.name !== undefined ? { name: options.name } : {}),
    };
    const text = JSON.stringify(body);
    const reply = await send(options.fetch ?? globalThis.fetch, `${baseUrl}/v1/activate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: text }, options.timeoutMs ?? 10_000);
    const activated = parseReply(DeviceActivateReply, reply, 201);
    const identity: DeviceIdentity = {
      deviceId: activated.deviceId,
      tenantId: activated.tenantId,
      userId: activated.userId,
      baseUrl,
      algorithm: key.algorithm,
      privateKeyPem: key.privateKeyPem,
      publicKey: key.publicKey,
      pollSeconds: activated.pollSeconds,
      platform,
      ...(options.name !== undefined ? { name: options.name } : {}),
      activatedAt: new Date((options.now ?? Date.now)()).toISOString(),
    };
    // The contracts' reply takes any pollSeconds and deviceId; checked as the state file is read, so
    // an activation no later command could load is refused now instead of being kept.
    const keepable = DeviceIdentity.safeParse(identity);
    if (!keepable.success) {
      throw new DeviceApiError('bad_response', `HTTP 201 with an activation the app cannot keep (${keepable.error.issues.map((i) => i.path.join('.')).join(', ')})`, 201, { cause: keepable.error });
    }
    return new DeviceClient(keepable.data, options);
  }

  /** The sign-in waiting for this device, or null. */
  async pending(): Promise<PendingChallenge | null> {
    const reply = await this.signed('GET', '/v1/challenges/pending');
    return parseReply(DevicePendingReply, reply, 200).challenge;
  }

  /**
   * Polls every pollSeconds until a sign-in waits or `timeoutMs` has passed (a poll-only device).
   * The first poll is at once.
   */
  async waitForPending(timeoutMs: number, signal?: AbortSignal): Promise<PendingChallenge | null> {
    const deadline = this.now() + timeoutMs;
    for (;;) {
      const challenge = await this.pending();
      if (challenge) return challenge;
      const left = deadline - this.now();
      if (left <= 0 || signal?.aborted) return null;
      await sleep(Math.min(this.identity.pollSeconds * 1000, left), signal);
    }
  }

  /** Answers a sign-in; the number (the two digits the user typed) goes with approve only. */
  async answer(challengeId: string, decision: DeviceDecision, number?: string): Promise<DeviceAnswerReply> {
    // A URL resolves `.` and `..` segments: the answer would go, signed, to another path.
    if (challengeId === '' || challengeId === '.' || challengeId === '..') throw new DeviceApiError('invalid_request', `not a challenge id: "${challengeId}"`);
    const body: DeviceAnswerBody = {
      decision,
      ...(number !== undefined ? { number } : {}),
      signature: signDeviceData(this.identity.algorithm, this.privateKey, DeviceSigned.answer(challengeId, decision, number)),
    };
    const reply = await this.signed('POST', `/v1/challenges/${encodeURIComponent(challengeId)}/answer`, JSON.stringify(body));
    return parseReply(DeviceAnswerReply, reply, 200);
  }

  /** One signed request to a path under the base URL; the path signed is the one the URL sends. */
  async signed(method: 'GET' | 'POST', path: string, body?: string): Promise<RawReply> {
    const url = new URL(`${this.identity.baseUrl}${path}`);
    const headers: Record<string, string> = signRequest({
      algorithm: this.identity.algorithm,
      privateKey: this.privateKey,
      deviceId: this.identity.deviceId,
      method,
      pathWithQuery: `${url.pathname}${url.search}`,
      ...(body !== undefined ? { body } : {}),
      now: this.now(),
      nonce: this.nonce(),
    });
    if (body !== undefined) headers['content-type'] = 'application/json';
    return send(this.fetch, url.href, { method, headers, ...(body !== undefined ? { body } : {}) }, this.timeoutMs);
  }
}

// ---- HTTP ------------------------------------------------------------------------------------------

export interface RawReply {
  status: number;
  /** The parsed JSON body, or undefined when it was not JSON. */
  json: unknown;
}

async function send(fetcher: typeof fetch, url: string, init: RequestInit, timeoutMs: number): Promise<RawReply> {
  // Outside the try: a timeout AbortSignal.timeout cannot keep is the caller's mistake, not the network's.
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS) throw new RangeError(`timeoutMs must be a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS}: ${timeoutMs}`);
  const signal = AbortSignal.timeout(timeoutMs);
  let response: Response;
  try {
    response = await fetcher(url, { ...init, redirect: 'error', signal });
  } catch (error) {
    const reason = error instanceof Error && error.name === 'TimeoutError' ? `no answer in ${timeoutMs} ms` : describeCause(error);
    throw new DeviceApiError('network', `cannot reach ${new URL(url).origin}: ${reason}`, undefined, { cause: error });
  }
  const text = await response.text();
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, json };
}

/** The reply's body when the status is the expected one; otherwise the server's error as a DeviceApiError. */
function parseReply<T extends z.ZodType>(schema: T, reply: RawReply, expectedStatus: number): z.infer<T> {
  if (reply.status !== expectedStatus) {
    const error = DeviceErrorBody.safeParse(reply.json);
    if (error.success) throw new DeviceApiError(error.data.error.code, error.data.error.message, reply.status);
    throw new DeviceApiError('bad_response', `HTTP ${reply.status} without the device API's error body`, reply.status);
  }
  const parsed = schema.safeParse(reply.json);
  if (!parsed.success) throw new DeviceApiError('bad_response', `HTTP ${reply.status} with a body the device API does not describe`, reply.status, { cause: parsed.error });
  return parsed.data;
}

function describeCause(error: unknown): string {
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  const code = (cause as { code?: unknown }).code;
  const message = cause instanceof Error ? cause.message : String(cause);
  return typeof code === 'string' && !message.includes(code) ? `${code} ${message}` : message;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
