import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in for Twilio's Programmable Messaging REST API, speaking its wire protocol so the real
 * adapter runs unchanged: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded
 * To/From/Body, HTTP Basic auth AccountSid:AuthToken, 201 with a Message resource (sid "SM…"),
 * errors as Twilio's JSON error body {code, message, more_info, status}. It records what it
 * accepted and can be told to fail, so retries and failover can be tested.
 */
interface FakeTwilioMessage {
  sid: string;
  accountSid: string;
  to: string;
  from: string;
  body: string;
  traceparent: string | undefined;
  receivedAt: Date;
}

type FakeTwilioFailure =
  | { status: 500 | 502 | 503; code?: number }
  | { status: 429; code?: number }
  | { status: 400; code: number; message?: string };

export class FakeTwilio {
  readonly messages: FakeTwilioMessage[] = [];
  /** Requests seen, accepted or not. */
  requests = 0;
  private failures: FakeTwilioFailure[] = [];
  private server: Server | undefined;
  private waiters: Array<{ predicate: (m: FakeTwilioMessage) => boolean; resolve: (m: FakeTwilioMessage) => void }> = [];
  /** Artificial latency per request, ms. */
  delayMs = 0;
  /** Called for every accepted message (the benchmark routes codes to waiting sign-ins with it). */
  onMessage: ((message: FakeTwilioMessage) => void) | undefined;
  /** Keep accepted messages in `messages` (turn off for long benchmark runs). */
  record = true;

  constructor(
    readonly accountSid = `AC${randomBytes(16).toString('hex')}`,
    readonly authToken = randomBytes(16).toString('hex'),
  ) {}

  get url(): string {
    const address = this.server?.address() as AddressInfo | undefined;
    if (!address) throw new Error('fake Twilio is not listening');
    return `http://127.0.0.1:${address.port}`;
  }

  /** Environment for the dispatch service to use this fake. */
  env(from = '+15005550006'): Record<string, string> {
    return {
      SMS_PROVIDERS: 'twilio',
      TWILIO_API_URL: this.url,
      TWILIO_ACCOUNT_SID: this.accountSid,
      TWILIO_AUTH_TOKEN: this.authToken,
      TWILIO_FROM_NUMBER: from,
    };
  }

  /** The next `failures.length` requests fail as given, in order. */
  failNext(...failures: FakeTwilioFailure[]): void {
    this.failures.push(...failures);
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

  messagesTo(to: string): FakeTwilioMessage[] {
    return this.messages.filter((m) => m.to === to);
  }

  /** Resolves with the first message (already received or future) that matches. */
  waitFor(predicate: (m: FakeTwilioMessage) => boolean, timeoutMs = 10_000): Promise<FakeTwilioMessage> {
    const found = this.messages.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = { predicate, resolve };
      this.waiters.push(waiter);
      setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`fake Twilio: no matching message within ${timeoutMs} ms`));
      }, timeoutMs).unref();
    });
  }

  /** The six-digit code in a message body. */
  static codeOf(message: FakeTwilioMessage): string {
    const match = /\b(\d{6})\b/.exec(message.body);
    if (!match) throw new Error('no six-digit code in SMS body');
    return match[1]!;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requests++;
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const match = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/.exec(req.url ?? '');
    if (req.method !== 'POST' || !match) return this.error(res, 404, 20404, 'The requested resource was not found');
    const accountSid = decodeURIComponent(match[1]!);
    const auth = req.headers.authorization ?? '';
    const expected = `Basic ${Buffer.from(`${this.accountSid}:${this.authToken}`).toString('base64')}`;
    if (auth !== expected || accountSid !== this.accountSid) return this.error(res, 401, 20003, 'Authenticate');
    if (!String(req.headers['content-type']).startsWith('application/x-www-form-urlencoded')) {
      return this.error(res, 400, 20001, 'Content-Type must be application/x-www-form-urlencoded');
    }
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    const to = form.get('To') ?? '';
    const from = form.get('From') ?? '';
    const body = form.get('Body') ?? '';
    if (!to) return this.error(res, 400, 21604, "A 'To' phone number is required.");
    if (!from) return this.error(res, 400, 21603, "A 'From' phone number is required.");
    if (!body) return this.error(res, 400, 21602, 'Message body is required.');
    if (!/^\+[1-9]\d{7,14}$/.test(to)) return this.error(res, 400, 21211, `The 'To' number ${to} is not a valid phone number.`);
    const failure = this.failures.shift();
    if (failure) {
      const code = failure.code ?? (failure.status === 429 ? 20429 : 20500);
      const message = 'message' in failure && failure.message ? failure.message : `Simulated failure ${failure.status}`;
      return this.error(res, failure.status, code, message);
    }
    const message: FakeTwilioMessage = {
      sid: `SM${randomBytes(16).toString('hex')}`,
      accountSid,
      to,
      from,
      body,
      traceparent: typeof req.headers.traceparent === 'string' ? req.headers.traceparent : undefined,
      receivedAt: new Date(),
    };
    if (this.record) this.messages.push(message);
    this.onMessage?.(message);
    for (const waiter of [...this.waiters]) {
      if (waiter.predicate(message)) {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        waiter.resolve(message);
      }
    }
    const now = new Date().toUTCString();
    res.writeHead(201, { 'Content-Type': 'application/json' });
    res.end(
      JSON.stringify({
        account_sid: accountSid,
        api_version: '2010-04-01',
        body,
        date_created: now,
        date_sent: null,
        date_updated: now,
        direction: 'outbound-api',
        error_code: null,
        error_message: null,
        from,
        messaging_service_sid: null,
        num_media: '0',
        num_segments: '1',
        price: null,
        price_unit: 'USD',
        sid: message.sid,
        status: 'queued',
        subresource_uris: { media: `/2010-04-01/Accounts/${accountSid}/Messages/${message.sid}/Media.json` },
        to,
        uri: `/2010-04-01/Accounts/${accountSid}/Messages/${message.sid}.json`,
      }),
    );
  }

  private error(res: ServerResponse, status: number, code: number, message: string): void {
    res.writeHead(status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status }));
  }
}
