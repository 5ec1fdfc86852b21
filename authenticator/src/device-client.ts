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
export const DENIAL_REASONS = ['denied_by_user', 'fraud_reported', 'wrong_number', 'too_many_attempts', 'locked_out', 'user_blocked', 'method_not_registered'] as const;
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
  /** The reply's Retry-After in seconds: how long to wait before sending the request again (429, 503). */
  readonly retryAfterSeconds?: number;

  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
    options?: ErrorOptions & { retryAfterSeconds?: number | undefined },
  ) {
    super(message, options);
    this.name = 'DeviceApiError';
    if (options?.retryAfterSeconds !== undefined) this.retryAfterSeconds = options.retryAfterSeconds;
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
    // Not quoted: what was pasted may be the activation code itself, which is not for logs.
    throw new DeviceApiError('invalid_request', 'not a URL: the activation URL starts with https://');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new DeviceApiError('invalid_request', `not an http(s) URL (${url.protocol})`);
  // Every later request goes to this base: over plain HTTP across a network, anyone on the way reads
  // the sign-ins and the push token and can rewrite the sign-in the user is shown before approving.
  if (url.protocol === 'http:' && !options.insecure && !isLoopbackHost(url.hostname)) {
    throw new DeviceApiError('invalid_request', `plain http:// to ${url.host} would send the sign-ins shown, the push token and the answers unprotected over the network (anyone on the way could change what you are asked to approve); use the https:// URL, or --insecure (ActivateOptions.insecure) to accept that`);
  }
  const code = url.searchParams.get('code')?.trim();
  if (!code) throw new DeviceApiError('invalid_request', 'the activation URL has no code (…/v1/activate?code=…)');
  const suffix = '/v1/activate';
  const path = url.pathname.replace(/\/+$/, '');
  if (!path.endsWith(suffix)) throw new DeviceApiError('invalid_request', `not an activation URL (its path must end with ${suffix}): ${url.origin}${url.pathname}`);
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
  /** Waits between polls and before a retry (tests record the waits instead of taking them). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** The longest timer Node keeps (2^31 - 1 ms): AbortSignal.timeout fires at once beyond it. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;
/**
 * The shortest wait between two polls, whatever pollSeconds the server sent: a server's mistake
 * (or a hostile one) must not turn every poll-only device into a flood of requests.
 */
export const MIN_POLL_MS = 1_000;
/**
 * A saturated server answers 503 with Retry-After a request it did not handle (nothing checked,
 * no nonce nor activation code spent): sent again this many times at most, each after the wait it
 * asks for, and only when that wait is at most MAX_RETRY_AFTER_SECONDS (a longer one is the user's
 * to wait out, told by the error).
 */
export const SATURATED_RETRIES = 2;
export const MAX_RETRY_AFTER_SECONDS = 10;
/** The largest reply read: every reply of the device API is small; a larger one is not read to its end. */
export const MAX_REPLY_BYTES = 64 * 1024;
/** The server's clock may be this far from the device's (docs/device-api.md, Mfa-Timestamp). */
const CLOCK_SKEW_MS = 60_000;

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
  private readonly sleep: (ms: number, signal?: AbortSignal) => Promise<void>;

  constructor(identity: DeviceIdentity, options: ClientOptions = {}) {
    this.identity = identity;
    this.privateKey = createPrivateKey(identity.privateKeyPem);
    this.fetch = options.fetch ?? globalThis.fetch;
    this.now = options.now ?? Date.now;
    this.nonce = options.nonce ?? randomNonce;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.sleep = options.sleep ?? sleep;
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
    const now = options.now ?? Date.now;
    const reply = await withSaturationRetries(
      () => send(options.fetch ?? globalThis.fetch, `${baseUrl}/v1/activate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: text }, options.timeoutMs ?? 10_000, now),
      options.sleep ?? sleep,
    );
    const activated = parseReply(DeviceActivateReply, reply, 201, now, 'activate');
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
      activatedAt: new Date(now()).toISOString(),
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
    return parseReply(DevicePendingReply, reply, 200, this.now).challenge;
  }

  /**
   * Polls every pollSeconds (at least MIN_POLL_MS) until a sign-in waits or `timeoutMs` has passed
   * (a poll-only device). The first poll is at once. A server that cannot answer for now (503) is
   * asked again at the next poll, or later when its Retry-After says so; still unable by the end,
   * its error is thrown, since null would say that nothing waits.
   */
  async waitForPending(timeoutMs: number, signal?: AbortSignal): Promise<PendingChallenge | null> {
    const deadline = this.now() + timeoutMs;
    for (;;) {
      let wait = Math.max(this.identity.pollSeconds * 1000, MIN_POLL_MS);
      let failure: DeviceApiError | undefined;
      try {
        const challenge = await this.pending();
        if (challenge) return challenge;
      } catch (error) {
        if (!(error instanceof DeviceApiError) || error.status !== 503) throw error;
        failure = error;
        wait = Math.max(wait, (error.retryAfterSeconds ?? 0) * 1000);
      }
      const left = deadline - this.now();
      if (left <= 0 || signal?.aborted || (failure && wait > left)) {
        if (failure) throw failure;
        return null;
      }
      await this.sleep(Math.min(wait, left, MAX_TIMEOUT_MS), signal);
    }
  }

  /** Answers a sign-in; the number (the two digits the user typed) goes with approve only. */
  async answer(challengeId: string, decision: DeviceDecision, number?: string): Promise<DeviceAnswerReply> {
    // A URL resolves `.` and `..` segments: the answer would go, signed, to another path.
    if (challengeId === '' || challengeId === '.' || challengeId === '..') throw new DeviceApiError('invalid_request', `not a challenge id: "${challengeId}"`);
    // The server takes anything else as a wrong number, which denies the sign-in: refused here
    // instead. ASCII digits only (not \p{Nd}: "٤٢" is no number the sign-in page shows).
    if (number !== undefined && decision !== 'approve') throw new DeviceApiError('invalid_request', `a number goes with approve only, not with ${decision}`);
    if (number !== undefined && !/^[0-9]{2}$/.test(number)) throw new DeviceApiError('invalid_request', 'the number is the two digits (0-9) the sign-in page shows, e.g. 42');
    const body: DeviceAnswerBody = {
      decision,
      ...(number !== undefined ? { number } : {}),
      signature: signDeviceData(this.identity.algorithm, this.privateKey, DeviceSigned.answer(challengeId, decision, number)),
    };
    const reply = await this.signed('POST', `/v1/challenges/${encodeURIComponent(challengeId)}/answer`, JSON.stringify(body));
    return parseReply(DeviceAnswerReply, reply, 200, this.now, 'answer');
  }

  /**
   * One signed request to a path under the base URL; the path signed is the one the URL sends.
   * Signed anew (timestamp and nonce) for each retry of a saturated server (withSaturationRetries).
   */
  async signed(method: 'GET' | 'POST', path: string, body?: string): Promise<RawReply> {
    const url = new URL(`${this.identity.baseUrl}${path}`);
    return withSaturationRetries(() => {
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
      return send(this.fetch, url.href, { method, headers, ...(body !== undefined ? { body } : {}) }, this.timeoutMs, this.now);
    }, this.sleep);
  }
}

// ---- HTTP ------------------------------------------------------------------------------------------

export interface RawReply {
  status: number;
  /** The parsed JSON body, or undefined when it was not JSON (or larger than MAX_REPLY_BYTES). */
  json: unknown;
  /** Retry-After in whole seconds (its delta-seconds or HTTP-date form), when the reply has one. */
  retryAfterSeconds?: number;
  /** The device's clock minus the server's (its Date header), in milliseconds, when the reply has one. */
  clockAheadMs?: number;
}

async function send(fetcher: typeof fetch, url: string, init: RequestInit, timeoutMs: number, now: () => number = Date.now): Promise<RawReply> {
  // Outside the try: a timeout AbortSignal.timeout cannot keep is the caller's mistake, not the network's.
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS) throw new RangeError(`timeoutMs must be a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS}: ${timeoutMs}`);
  const signal = AbortSignal.timeout(timeoutMs);
  let response: Response;
  let text: string | undefined;
  try {
    response = await fetcher(url, { ...init, redirect: 'error', signal });
    // The body is read under the same timeout: a server that sends its headers and then trickles
    // (or never ends) its body is no answer either.
    text = await readText(response, MAX_REPLY_BYTES);
  } catch (error) {
    const reason = error instanceof Error && error.name === 'TimeoutError' ? `no answer in ${timeoutMs} ms` : describeCause(error);
    throw new DeviceApiError('network', `cannot reach ${new URL(url).origin}: ${reason}`, undefined, { cause: error });
  }
  let json: unknown;
  try {
    json = text === undefined || text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  const retryAfterSeconds = parseRetryAfter(response.headers.get('retry-after'), now());
  const date = Date.parse(response.headers.get('date') ?? '');
  return {
    status: response.status,
    json,
    ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}),
    ...(Number.isFinite(date) ? { clockAheadMs: now() - date } : {}),
  };
}

/** The body as text, or undefined (and the rest left unread) once it is longer than `limit` bytes. */
async function readText(response: Response, limit: number): Promise<string | undefined> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      return undefined;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Retry-After (RFC 9110): delta-seconds, or an HTTP-date; anything else is no Retry-After. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d{1,10}$/.test(text)) return Number(text);
  const date = Date.parse(text);
  return Number.isFinite(date) && /[a-z]/i.test(text) ? Math.max(0, Math.ceil((date - now) / 1000)) : undefined;
}

/**
 * Sends again, after the wait it asks for, a request a saturated server did not handle: 503 with
 * Retry-After (docs/device-api.md, "Errors": nothing was checked or changed). A 503 without it
 * (the server's store or bus unreachable) may have changed something, and is the caller's.
 */
async function withSaturationRetries(attempt: () => Promise<RawReply>, wait: (ms: number) => Promise<void>): Promise<RawReply> {
  for (let retries = 0; ; retries++) {
    const reply = await attempt();
    const after = reply.retryAfterSeconds;
    if (reply.status !== 503 || after === undefined || after > MAX_RETRY_AFTER_SECONDS || retries >= SATURATED_RETRIES) return reply;
    // At least a second, whatever it says: Retry-After: 0 is no reason to ask again at once.
    await wait(Math.max(after, 1) * 1000);
  }
}

/**
 * The reply's body when the status is the expected one; otherwise the server's error as a
 * DeviceApiError, its message completed with what the app can tell the user that the server's
 * own message cannot (the device's clock, whether the activation code was spent, the lockout).
 */
function parseReply<T extends z.ZodType>(schema: T, reply: RawReply, expectedStatus: number, now: () => number, route?: 'activate' | 'answer'): z.infer<T> {
  if (reply.status !== expectedStatus) {
    const error = DeviceErrorBody.safeParse(reply.json);
    const options = { retryAfterSeconds: reply.retryAfterSeconds };
    if (!error.success) throw new DeviceApiError('bad_response', `HTTP ${reply.status} without the device API's error body`, reply.status, options);
    const { code, message } = error.data.error;
    throw new DeviceApiError(code, `${message}${hint(reply, message, route, now)}`, reply.status, options);
  }
  const parsed = schema.safeParse(reply.json);
  if (!parsed.success) throw new DeviceApiError('bad_response', `HTTP ${reply.status} with a body the device API does not describe`, reply.status, { cause: parsed.error });
  return parsed.data;
}

function hint(reply: RawReply, message: string, route: 'activate' | 'answer' | undefined, now: () => number): string {
  const { status, retryAfterSeconds: after, clockAheadMs: ahead } = reply;
  // The Date header has whole seconds: a second more than the window is surely outside it.
  if (status === 401 && ahead !== undefined && Math.abs(ahead) > CLOCK_SKEW_MS + 1_000) {
    const by = Math.round(Math.abs(ahead) / 1000);
    return `; this device's clock is ${by} s ${ahead > 0 ? 'ahead of' : 'behind'} the server's (${new Date(now() - ahead).toISOString()}), and the server refuses more than 60 s: set the clock right (automatic time)`;
  }
  if (status === 429 && after !== undefined) return `${message.includes(`${after} s`) ? '' : `; try again in ${after} s`}${route === 'activate' ? ' (the activation code was not spent)' : ''}`;
  if (status === 429 && route === 'answer') return '; the user is locked out (too many wrong codes): no approval or denial counts until the lockout ends (a fraud report still does)';
  if (status === 503 && after !== undefined) return `; try again in ${after} s`;
  if (status === 503 && route === 'activate') return '; the activation code may have been spent: try again, and ask for a new code if it is refused';
  return '';
}

function describeCause(error: unknown): string {
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  const code = (cause as { code?: unknown } | null | undefined)?.code;
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
