import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { XMLParser } from 'fast-xml-parser';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in for Twilio's Programmable Messaging and Voice REST APIs, speaking their wire protocol so
 * the real adapters run unchanged. Voice: `POST …/Calls.json` answers a Call resource ("CA…"), then
 * the call happens as Twilio's would: the TwiML is fetched from `Url` with a valid
 * X-Twilio-Signature, `<Say>` is heard, `<Play>` fetches its URL (GET) and plays what came back, `<Gather>` collects the keys the test scripted for that
 * phone (finishOnKey, numDigits, actionOnEmptyResult as Twilio applies them) and posts them to its
 * action, `<Redirect>` is followed, and the final status goes to `StatusCallback`. Messaging: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded
 * To/From/Body (and ValidityPeriod, 1 to 36,000 s, else 400 error 21624), HTTP Basic auth AccountSid:AuthToken, 201 with a Message resource (sid "SM…"),
 * errors as Twilio's JSON error body {code, message, more_info, status}. It records what it
 * accepted and can be told to fail, so retries and failover can be tested.
 */
interface FakeTwilioMessage {
  sid: string;
  accountSid: string;
  to: string;
  from: string;
  body: string;
  /** ValidityPeriod (seconds Twilio may queue it), when the request set one. */
  validityPeriod: number | undefined;
  traceparent: string | undefined;
  receivedAt: Date;
}

type FakeTwilioFailure =
  | { status: 500 | 502 | 503; code?: number; retryAfter?: number }
  | { status: 429; code?: number; retryAfter?: number }
  | { status: 400; code: number; message?: string };

/** `hold`: the call is accepted and nothing more happens: the test plays Twilio's webhooks itself. */
export type CallBehaviour = { answer: 'busy' | 'no-answer' | 'failed' | 'hold' } | { answer: 'answer'; presses?: string[] };

export interface FakeTwilioCall {
  sid: string;
  to: string;
  from: string;
  url: string;
  /** SendDigits of the request: keys sent once the call connects (an extension). */
  sendDigits?: string | undefined;
  status: string;
  /**
   * Everything the callee heard, in order: each `<Say>`'s text, and for each `<Play>`
   * `play:<sha256 hex of the audio>` (or `play-failed:<HTTP status>` when its URL did not answer 200).
   */
  heard: string[];
  /** Each `<Play>`: its URL, the answer's status and content type. */
  played: Array<{ url: string; status: number; contentType: string | null }>;
  /** The keys pressed at each prompt. */
  pressed: string[];
  /** The HTTP status of each TwiML request. */
  webhookStatuses: number[];
  /** The status callback's HTTP status. */
  statusAnswer?: number;
  ended: boolean;
}

interface TwimlVerb {
  name: string;
  text: string;
  attributes: Record<string, string>;
  children: TwimlVerb[];
}

type XmlNode = Record<string, unknown> & { ':@'?: Record<string, string> };

function toVerb(node: XmlNode): TwimlVerb | undefined {
  const name = Object.keys(node).find((k) => k !== ':@');
  if (!name || name === '#text') return undefined;
  const content = (node[name] as XmlNode[]) ?? [];
  const text = content.map((c) => (typeof c['#text'] === 'string' || typeof c['#text'] === 'number' ? String(c['#text']) : '')).join('').trim();
  return { name, text, attributes: node[':@'] ?? {}, children: content.map(toVerb).filter((v): v is TwimlVerb => v !== undefined) };
}

/** The verbs of a TwiML document, in order (XML parsed with entities decoded). */
function twimlVerbs(xml: string): TwimlVerb[] {
  const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', preserveOrder: true, processEntities: true, parseTagValue: false }).parse(xml) as XmlNode[];
  const response = doc.map(toVerb).find((v) => v?.name === 'Response');
  return response?.children ?? [];
}

/**
 * Twilio's `<Gather>` semantics: keys are collected until `finishOnKey` (not part of `Digits`) or
 * `numDigits` keys; a prompt with no key times out. Twilio requests `action` with what was
 * collected, except when nothing was: then only with `actionOnEmptyResult="true"` (Digits empty,
 * and `FinishedOnKey` saying which key ended it, if one did); otherwise the call falls through to
 * the next verb.
 */
function gather(attributes: Record<string, string>, keys: string): { post: boolean; params: Record<string, string>; pressed: string } {
  const finishOnKey = attributes.finishOnKey ?? '#';
  const numDigits = attributes.numDigits ? Number(attributes.numDigits) : Infinity;
  let digits = '';
  let finished = '';
  for (const key of keys) {
    if (finishOnKey !== '' && key === finishOnKey) {
      finished = key;
      break;
    }
    digits += key;
    if (digits.length >= numDigits) break;
  }
  const params: Record<string, string> = { Digits: digits };
  if (finished) params.FinishedOnKey = finished;
  const empty = digits === '';
  return { post: !empty || attributes.actionOnEmptyResult === 'true', params, pressed: keys };
}

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

  /** The next `failures.length` requests fail as given, in order (`retryAfter`: seconds, sent as Retry-After). */
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

  // ---- Programmable Voice -------------------------------------------------------------------------

  /** The delivery receipt a message to `to` gets (status callback), when not `delivered`. */
  private readonly receipts = new Map<string, { status: 'undelivered' | 'failed'; errorCode: string }>();

  /** Messages to `to` are not delivered: their receipt says so, with Twilio's error code (30003 unreachable, 30005 unknown…). */
  undeliverable(to: string, errorCode = '30003'): void {
    this.receipts.set(to, { status: 'undelivered', errorCode });
  }

  /** Status callbacks of messages posted (their HTTP statuses), in order. */
  readonly receiptStatuses: number[] = [];

  /** Every call placed (Calls.json), with what it did. */
  readonly calls: FakeTwilioCall[] = [];
  private readonly behaviours = new Map<string, CallBehaviour>();
  private callWaiters: Array<{ predicate: (c: FakeTwilioCall) => boolean; resolve: (c: FakeTwilioCall) => void }> = [];

  /**
   * How the phone at `to` behaves on the next calls: it does not answer (`busy`, `no-answer`,
   * `failed`), or it answers and, at each `<Gather>`, presses the given keys ('#', '1234#', '0#', or
   * '' for silence: the prompt times out), then hangs up when the TwiML ends or says so.
   */
  phone(to: string, behaviour: CallBehaviour): void {
    this.behaviours.set(to, behaviour);
  }

  /** Resolves once a call to `to` has ended (its status callback answered). */
  waitForCall(to: string, where: (call: FakeTwilioCall) => boolean = () => true, timeoutMs = 20_000): Promise<FakeTwilioCall> {
    const done = (c: FakeTwilioCall) => c.to === to && c.ended && where(c);
    const found = this.calls.find(done);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = { predicate: done, resolve };
      this.callWaiters.push(waiter);
      setTimeout(() => {
        this.callWaiters = this.callWaiters.filter((w) => w !== waiter);
        reject(new Error(`fake Twilio: no call to ${to} ended within ${timeoutMs} ms`));
      }, timeoutMs).unref();
    });
  }

  /** Twilio's request signature, computed independently of the service: HMAC-SHA1 over the URL and the sorted parameters. */
  signature(url: string, params: Record<string, string>): string {
    const data = Object.keys(params)
      .sort()
      .reduce((text, key) => text + key + params[key], url);
    return createHmac('sha1', this.authToken).update(data, 'utf8').digest('base64');
  }

  /** POSTs a signed webhook as Twilio does; answers the status and body. */
  async webhook(url: string, params: Record<string, string>, signature = this.signature(url, params)): Promise<{ status: number; body: string }> {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': signature, 'user-agent': 'TwilioProxy/1.1' },
      body: new URLSearchParams(params).toString(),
    });
    return { status: response.status, body: await response.text() };
  }

  private async runCall(call: FakeTwilioCall, behaviour: CallBehaviour, url: string, statusCallback: string): Promise<void> {
    const base = { CallSid: call.sid, AccountSid: this.accountSid, From: call.from, To: call.to, Direction: 'outbound-api', ApiVersion: '2010-04-01' };
    const end = async (status: string) => {
      call.status = status;
      const answer = await this.webhook(statusCallback, { ...base, CallStatus: status, CallDuration: status === 'completed' ? '12' : '0' }).catch(() => ({ status: 0, body: '' }));
      call.statusAnswer = answer.status;
      call.ended = true;
      for (const waiter of [...this.callWaiters]) {
        if (waiter.predicate(call)) {
          this.callWaiters = this.callWaiters.filter((w) => w !== waiter);
          waiter.resolve(call);
        }
      }
    };
    if (behaviour.answer === 'hold') {
      call.ended = true;
      for (const waiter of [...this.callWaiters]) if (waiter.predicate(call)) waiter.resolve(call);
      return;
    }
    if (behaviour.answer !== 'answer') return end(behaviour.answer);
    const presses = [...(behaviour.presses ?? [])];
    let next: { url: string; params: Record<string, string> } | undefined = { url, params: { ...base, CallStatus: 'in-progress' } };
    for (let requests = 0; next && requests < 20; requests++) {
      const current: string = next.url;
      const answer = await this.webhook(next.url, next.params);
      call.webhookStatuses.push(answer.status);
      next = undefined;
      if (answer.status !== 200) break;
      const verbs = twimlVerbs(answer.body);
      for (const verb of verbs) {
        if (verb.name === 'Say') call.heard.push(verb.text);
        else if (verb.name === 'Play') await this.play(call, verb.text);
        else if (verb.name === 'Hangup') break;
        else if (verb.name === 'Redirect') {
          next = { url: verb.text, params: { ...base, CallStatus: 'in-progress' } };
          break;
        } else if (verb.name === 'Gather') {
          for (const said of verb.children) {
            if (said.name === 'Say') call.heard.push(said.text);
            else if (said.name === 'Play') await this.play(call, said.text);
          }
          const gathered = gather(verb.attributes, presses.shift() ?? '');
          call.pressed.push(gathered.pressed);
          if (gathered.post) {
            // Without an action, Twilio posts to the document's own URL.
            next = { url: verb.attributes.action ?? current, params: { ...base, CallStatus: 'in-progress', ...gathered.params } };
            break;
          }
        }
      }
    }
    await end('completed');
  }

  /** `<Play>`: Twilio fetches the URL with a GET (no signature: the URL is the application's own) and plays it. */
  private async play(call: FakeTwilioCall, url: string): Promise<void> {
    try {
      const response = await fetch(url);
      const audio = Buffer.from(await response.arrayBuffer());
      call.played.push({ url, status: response.status, contentType: response.headers.get('content-type') });
      call.heard.push(response.status === 200 ? `play:${createHash('sha256').update(audio).digest('hex')}` : `play-failed:${response.status}`);
    } catch {
      call.played.push({ url, status: 0, contentType: null });
      call.heard.push('play-failed:0');
    }
  }

  private async handleCall(req: IncomingMessage, res: ServerResponse, accountSid: string, form: URLSearchParams): Promise<void> {
    const to = form.get('To') ?? '';
    const from = form.get('From') ?? '';
    const url = form.get('Url') ?? '';
    const statusCallback = form.get('StatusCallback') ?? '';
    if (!to) return this.error(res, 400, 21201, "No 'To' number is specified");
    if (!from) return this.error(res, 400, 21213, "No 'From' number is specified");
    if (!url) return this.error(res, 400, 21205, 'Url parameter is required.');
    if (!/^\+[1-9]\d{7,14}$/.test(to)) return this.error(res, 400, 21211, `Invalid 'To' Phone Number: ${to}`);
    const failure = this.failures.shift();
    if (failure) {
      const retryAfter = 'retryAfter' in failure ? failure.retryAfter : undefined;
      return this.error(res, failure.status, failure.code ?? (failure.status === 429 ? 20429 : 20500), 'message' in failure && failure.message ? failure.message : `Simulated failure ${failure.status}`, retryAfter);
    }
    const call: FakeTwilioCall = {
      sid: `CA${randomBytes(16).toString('hex')}`,
      to,
      from,
      url,
      sendDigits: form.get('SendDigits') ?? undefined,
      status: 'queued',
      heard: [],
      played: [],
      pressed: [],
      webhookStatuses: [],
      ended: false,
    };
    this.calls.push(call);
    const behaviour = this.behaviours.get(to) ?? { answer: 'no-answer' };
    res.writeHead(201, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ account_sid: accountSid, sid: call.sid, to, from, status: 'queued', direction: 'outbound-api', api_version: '2010-04-01' }));
    // The call goes on after Twilio answered the request, as the real one does.
    setTimeout(() => void this.runCall(call, behaviour, url, statusCallback), 20);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requests++;
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    const callMatch = /^\/2010-04-01\/Accounts\/([^/]+)\/Calls\.json$/.exec(req.url ?? '');
    if (req.method === 'POST' && callMatch) {
      const auth = req.headers.authorization ?? '';
      if (auth !== `Basic ${Buffer.from(`${this.accountSid}:${this.authToken}`).toString('base64')}` || decodeURIComponent(callMatch[1]!) !== this.accountSid) {
        return this.error(res, 401, 20003, 'Authenticate');
      }
      return this.handleCall(req, res, this.accountSid, new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
    }
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
    const validity = form.get('ValidityPeriod');
    if (validity !== null && !(/^\d+$/.test(validity) && Number(validity) >= 1 && Number(validity) <= 36_000)) {
      return this.error(res, 400, 21624, 'Validity period can only be set to integers between 1 and 36,000 seconds (10 hours max).');
    }
    const failure = this.failures.shift();
    if (failure) {
      const code = failure.code ?? (failure.status === 429 ? 20429 : 20500);
      const message = 'message' in failure && failure.message ? failure.message : `Simulated failure ${failure.status}`;
      return this.error(res, failure.status, code, message, 'retryAfter' in failure ? failure.retryAfter : undefined);
    }
    const message: FakeTwilioMessage = {
      sid: `SM${randomBytes(16).toString('hex')}`,
      accountSid,
      to,
      from,
      body,
      validityPeriod: validity === null ? undefined : Number(validity),
      traceparent: typeof req.headers.traceparent === 'string' ? req.headers.traceparent : undefined,
      receivedAt: new Date(),
    };
    if (this.record) this.messages.push(message);
    const statusCallback = form.get('StatusCallback');
    if (statusCallback) {
      // The handset's receipt a moment later, as Twilio reports it: sent, then delivered or undelivered.
      const receipt = this.receipts.get(to);
      const base = { MessageSid: message.sid, SmsSid: message.sid, AccountSid: accountSid, From: from, To: to, ApiVersion: '2010-04-01' };
      setTimeout(() => {
        void (async () => {
          await this.webhook(statusCallback, { ...base, MessageStatus: 'sent', SmsStatus: 'sent' }).catch(() => undefined);
          const final: Record<string, string> = receipt ? { MessageStatus: receipt.status, SmsStatus: receipt.status, ErrorCode: receipt.errorCode } : { MessageStatus: 'delivered', SmsStatus: 'delivered' };
          const answer = await this.webhook(statusCallback, { ...base, ...final }).catch(() => ({ status: 0 }));
          this.receiptStatuses.push(answer.status);
        })();
      }, 20);
    }
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

  /** Twilio's JSON error body; `retryAfter` (seconds) as the Retry-After header of a 429 or 503. */
  private error(res: ServerResponse, status: number, code: number, message: string, retryAfter?: number): void {
    res.writeHead(status, { 'Content-Type': 'application/json', ...(retryAfter !== undefined ? { 'Retry-After': String(retryAfter) } : {}) });
    res.end(JSON.stringify({ code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status }));
  }
}
