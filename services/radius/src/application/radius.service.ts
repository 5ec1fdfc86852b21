import { Application, UserId } from '@mfa/contracts';
import type { Logger } from '@mfa/telemetry';
import type { ApiResult, ChallengeApi } from '../adapters/challenge-api.js';
import type { SeenRequests } from '../adapters/seen-requests.js';
import type { PendingCode, StateStore } from '../adapters/state-store.js';
import { afterError, afterStart, afterVerify, afterWait, promptFor, waitedTooLong, type Decision } from '../domain/answers.js';
import { clientIpOf } from '../domain/calling-station.js';
import { normalizedText, type ClientDirectory, type RadiusClient } from '../domain/clients.js';
import {
  Attr,
  attributeOf,
  attributesOf,
  checkRequestAuthenticator,
  Code,
  decodePacket,
  encodeResponse,
  frameOf,
  PacketError,
  revealPassword,
  textAttributes,
  type Attribute,
  type Framing,
  type Packet,
} from '../domain/packet.js';
import { DuplicateCache } from './duplicate-cache.js';
import { answers, drops, latency, requests, retransmissions, waiting } from './metrics.js';

export interface Datagram {
  bytes: Buffer;
  address: string;
  port: number;
}

export interface RadiusOptions {
  /** RADIUS_WAIT_SECONDS, in ms: how long after the Access-Request's arrival a push or a call is waited for. */
  waitMs: number;
  /** How often a waited-for challenge's status is asked. */
  pollMs: number;
}

/** Microsoft's vendor id: its Vendor-Specific attributes carry MS-CHAP (RFC 2548). */
const MICROSOFT = 311;
const MS_CHAP_TYPES = new Set([1, 11, 25]); // MS-CHAP-Response, MS-CHAP-Challenge, MS-CHAP2-Response
const utf8 = new TextDecoder('utf-8', { fatal: true });
/** Attributes read from an Access-Request that RFC 2865 allows once at most. */
const SINGLE_ATTRIBUTES: ReadonlyArray<readonly [number, string]> = [
  [Attr.UserName, 'User-Name'],
  [Attr.UserPassword, 'User-Password'],
  [Attr.State, 'State'],
  [Attr.CallingStationId, 'Calling-Station-Id'],
  [Attr.NasIdentifier, 'NAS-Identifier'],
];
/** The least time left for a status poll to be begun: auth-challenge drops a request with under 100 ms left when its turn comes. */
const LAST_POLL_MS = 250;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

/** Log lines about dropped datagrams, a minute, across all sources and reasons (the metric counts every drop). */
const DROP_LINES_PER_MINUTE = 20;
/** Sources whose last logged drop is remembered (a minute each); the oldest is forgotten first. */
const DROP_SOURCES_REMEMBERED = 10_000;
/** A minute of drop log lines: how many were written, and how many left out, by reason. */
interface DropMinute {
  endsAt: number;
  lines: number;
  suppressed: Map<string, number>;
}

/** What is answered: Access-Accept, Access-Reject or Access-Challenge (with its State), or nothing. */
type Answer = { code: number; message?: string | undefined; state?: Buffer; sessionTimeout?: number } | undefined;

/**
 * The RADIUS front: a datagram in, an answer (or silence) out. Checks come first and cost no
 * I/O: a source address no RADIUS_CLIENTS entry covers, a malformed packet, or a missing or
 * wrong Message-Authenticator (the BlastRADIUS defence) gets no answer. Then a retransmission
 * is answered from the duplicate cache, and an Access-Request already taken (SeenRequests: a
 * captured one sent again) gets no answer; anything else is a new request, decided through the
 * public challenge API as the client's tenant.
 */
export class RadiusService {
  /** `reason|source` → until when that source's drops for that reason are not logged again; oldest first. */
  private readonly dropLog = new Map<string, number>();
  /** The minute under way of the log lines' global budget. */
  private dropMinute: DropMinute = { endsAt: 0, lines: 0, suppressed: new Map() };

  constructor(
    private readonly clients: ClientDirectory,
    private readonly api: ChallengeApi,
    private readonly states: StateStore,
    private readonly cache: DuplicateCache,
    private readonly options: RadiusOptions,
    private readonly log: Logger,
    private readonly seen: Pick<SeenRequests, 'firstSight' | 'forget'>,
  ) {}

  /**
   * The longest an answer can take, the short Redis calls for States aside: otp mode's start then
   * verify, or a push or call waited for up to RADIUS_WAIT_SECONDS after the request's arrival
   * (its last status poll's reply within the grace). A shutdown waits this long for the answers
   * under way.
   */
  get longestAnswerMs(): number {
    return Math.max(2 * this.api.longestCallMs, this.options.waitMs + this.api.replyGraceMs);
  }

  /** The bytes to send back to the datagram's source, or undefined for none. Never throws. */
  receive(d: Datagram): Promise<Buffer | undefined> | undefined {
    const client = this.clients.match(d.address);
    if (!client) return this.drop('unknown_client', d);
    // The raw octets are judged first: framing and Message-Authenticator are checked by walking
    // the attribute headers, copying nothing. Only a packet signed with the client's secret is
    // decoded, so a forged one (any address of a client's range can be spoofed) costs little.
    let framing: Framing;
    try {
      framing = frameOf(d.bytes);
    } catch (error) {
      if (error instanceof PacketError) return this.drop('malformed', d, { problem: error.problem, client: client.name });
      throw error;
    }
    if (framing.code !== Code.AccessRequest && framing.code !== Code.StatusServer) return this.drop('unsupported_code', d, { code: framing.code, client: client.name });
    const check = checkRequestAuthenticator(d.bytes, client.secret, framing);
    if (check === 'missing') return this.drop('no_message_authenticator', d, { client: client.name });
    if (check === 'invalid') return this.drop('bad_message_authenticator', d, { client: client.name });
    const packet = decodePacket(d.bytes);
    const key = DuplicateCache.keyOf(d.address, packet.identifier, packet.authenticator);
    const previous = this.cache.get(key);
    if (previous) {
      retransmissions.inc({ client: client.name });
      return previous;
    }
    if (!this.cache.hasRoomFor(client.cidr)) return this.drop('overloaded', d, { client: client.name });
    const type = packet.code === Code.StatusServer ? 'status' : 'access';
    const began = performance.now();
    // An answer that cannot be encoded (over 4096 octets: a request full of Proxy-State, each
    // echoed) is dropped like a failure, counted and logged, never left as a rejected promise.
    // A Redis that fails or does not answer within its command timeout fails the request the
    // same way: no answer, so the NAS tries its next server.
    // A request taken here and left unanswered is forgotten again: the NAS's next server may get
    // the very same packet (RFC 2865 §2.5), and must not take it for a replay.
    let taken = false;
    const answer = this.firstSight(client, packet, d)
      .then(async (first) => {
        if (!first) return undefined;
        taken = packet.code === Code.AccessRequest;
        requests.inc({ client: client.name, type });
        const decided = await this.decide(client, packet, d);
        // A decision that cannot be encoded (an answer over 4096 octets) fails the same way at
        // every server, after its challenge started: the request stays taken, so that neither a
        // replay nor the NAS's next server starts another one.
        if (decided) taken = false;
        return this.encode(client, packet, decided, began);
      })
      .catch((error: unknown) => {
        this.log.error('radius request failed', { client: client.name, error });
        drops.inc({ reason: 'internal' });
        return undefined;
      })
      .then(async (bytes) => {
        if (!bytes && taken) await this.seen.forget({ tenantId: client.tenantId, client: client.cidr }, packet.authenticator).catch(() => undefined);
        return bytes;
      });
    this.cache.put(key, answer, client.cidr);
    return answer;
  }

  /**
   * Whether an Access-Request is new, or one already taken for this client by some instance
   * (SeenRequests): a captured request sent again from another address of the client's range, or
   * after the duplicate cache forgot it, or to another instance. That gets no answer (a
   * retransmission of the NAS's own, from the same address, is answered from the cache before
   * this), and starts no second challenge. Status-Server changes nothing and is not recorded.
   */
  private async firstSight(client: RadiusClient, packet: Packet, d: Datagram): Promise<boolean> {
    if (packet.code !== Code.AccessRequest) return true;
    if (await this.seen.firstSight({ tenantId: client.tenantId, client: client.cidr }, packet.authenticator)) return true;
    this.drop('replay', d, { client: client.name });
    return false;
  }

  private encode(client: RadiusClient, request: Packet, answer: Answer, began: number): Buffer | undefined {
    if (!answer) {
      latency.observe({ answer: 'none' }, (performance.now() - began) / 1000);
      return undefined;
    }
    const attributes: Attribute[] = [];
    if (answer.message) attributes.push(...textAttributes(Attr.ReplyMessage, answer.message));
    if (answer.state) attributes.push({ type: Attr.State, value: answer.state });
    if (answer.sessionTimeout) {
      const value = Buffer.alloc(4);
      value.writeUInt32BE(answer.sessionTimeout);
      attributes.push({ type: Attr.SessionTimeout, value });
    }
    // RFC 2865 §5.33: every Proxy-State of the request, in order, unmodified.
    for (const value of attributesOf(request, Attr.ProxyState)) attributes.push({ type: Attr.ProxyState, value });
    const bytes = encodeResponse({ code: answer.code, identifier: request.identifier, requestAuthenticator: request.authenticator, attributes, secret: client.secret });
    const kind = answer.code === Code.AccessAccept ? 'accept' : answer.code === Code.AccessReject ? 'reject' : 'challenge';
    answers.inc({ client: client.name, answer: kind });
    latency.observe({ answer: kind }, (performance.now() - began) / 1000);
    return bytes;
  }

  private async decide(client: RadiusClient, packet: Packet, d: Datagram): Promise<Answer> {
    const arrivedAt = Date.now();
    // RFC 5997: Status-Server sent to the authentication port is answered with Access-Accept.
    if (packet.code === Code.StatusServer) return { code: Code.AccessAccept };
    if (attributeOf(packet, Attr.ChapPassword) || attributeOf(packet, Attr.EapMessage) || hasMsChap(packet)) {
      return reject('Only PAP is supported: CHAP, MS-CHAP and EAP requests are refused. Configure the VPN to send PAP.');
    }
    // RFC 2865 §5.44: at most one of each in an Access-Request. Two would leave the choice to each
    // reader: a proxy in front checking the password of one User-Name while this front takes the
    // other, or a trusted Calling-Station-Id ahead of the address the NAS logs.
    const repeated = SINGLE_ATTRIBUTES.find(([type]) => attributesOf(packet, type).length > 1);
    if (repeated) return reject(`The request is malformed: it has more than one ${repeated[1]}.`);
    const rawName = attributeOf(packet, Attr.UserName);
    if (!rawName) return reject('The request has no User-Name.');
    let userId: string;
    try {
      userId = utf8.decode(rawName).trim();
    } catch {
      this.log.warn('radius request refused: User-Name is not UTF-8', { client: client.name, source: d.address });
      return reject('The user name is not valid UTF-8.');
    }
    if (!UserId.safeParse(userId).success) return reject('The user name is not valid.');
    const state = attributeOf(packet, Attr.State);
    // The password is read only where it is a code: answering a State, or otp mode's first
    // request. Challenge mode's first request carries the directory password, which the NAS has
    // checked: it is ignored, never decrypted.
    let password: string | undefined;
    const hidden = state || client.passwordMode === 'otp' ? attributeOf(packet, Attr.UserPassword) : undefined;
    if (hidden) {
      try {
        // A code is digits; anything else (or invalid UTF-8) is simply not a code.
        password = revealPassword(hidden, client.secret, packet.authenticator).toString('latin1');
      } catch {
        return reject('The User-Password attribute is malformed.');
      }
    }
    const decision = state ? await this.answerCode(client, state, userId, password) : await this.begin(client, userId, password, packet, d, arrivedAt);
    return this.toAnswer(client, userId, decision);
  }

  /** A first request: a challenge starts with the user's default method. */
  private async begin(client: RadiusClient, userId: string, password: string | undefined, packet: Packet, d: Datagram, arrivedAt: number): Promise<Decision> {
    const otp = client.passwordMode === 'otp';
    const callingStation = attributeOf(packet, Attr.CallingStationId);
    const clientIp = clientIpOf(callingStation ? callingStation.toString('latin1') : undefined);
    const nasIdentifier = attributeOf(packet, Attr.NasIdentifier);
    const application = nasIdentifier ? textOf(nasIdentifier) : undefined;
    const started = await this.api.start(client, {
      tenantId: client.tenantId,
      userId,
      ...(clientIp ? { clientIp } : {}),
      ...(application && Application.safeParse(application).success ? { application } : {}),
      context: {
        radius: { serverName: client.name, serverIp: normalizedText(d.address) ?? d.address, ...(otp ? { passwordMode: 'otp' as const } : {}) },
      },
    });
    const decision = this.decided(client, started, (reply) => afterStart(reply, otp));
    if (decision.kind === 'verify') {
      const code = codeOf(password);
      if (!code) return { kind: 'reject', message: 'Type the code from your authenticator app or hardware token as the password.' };
      const verified = await this.api.verify(client, decision.challengeId, code);
      return this.decided(client, verified, (reply) => afterVerify(reply, { challengeId: decision.challengeId, method: 'totp', expiresAt: '' }, true));
    }
    if (decision.kind === 'wait') return this.waitFor(client, decision.challengeId, decision.method, arrivedAt + this.options.waitMs);
    return decision;
  }

  /** An answer to an Access-Challenge: the State names the challenge, User-Password holds the code. */
  private async answerCode(client: RadiusClient, state: Buffer, userId: string, password: string | undefined): Promise<Decision> {
    // Found only for the tenant, client and user it was given to: presented by anyone else, it is
    // refused and stays good for its own user.
    const pending = await this.states.take(state, { tenantId: client.tenantId, client: client.cidr, userId });
    if (!pending) return { kind: 'reject', message: 'This sign-in expired or was already answered. Sign in again.' };
    const code = codeOf(password);
    if (!code) return { kind: 'challenge', challengeId: pending.challengeId, method: pending.method, expiresAt: pending.expiresAt, message: `The code is digits only. ${promptFor(pending.method, undefined)}` };
    const verified = await this.api.verify(client, pending.challengeId, code);
    const decision = this.decided(client, verified, (reply) => afterVerify(reply, pending, false));
    // Undecided (the API did not answer): the State stays good for the user's next try.
    if (decision.kind === 'silent') await this.states.restore(state, pending, Date.now());
    return decision;
  }

  /**
   * Push and calls: the status is asked until the user answers or `until` (RADIUS_WAIT_SECONDS after
   * the request's arrival) passes. No poll's deadline goes beyond it, so the answer leaves by then
   * (a slow last reply within its grace), unless the start's own reply came later still. A poll is
   * not begun with less than LAST_POLL_MS left: auth-challenge drops a request that reaches it
   * too close to its deadline, and that silence would read as the API being down.
   */
  private async waitFor(client: RadiusClient, challengeId: string, method: 'push' | 'voice' | 'sms' | 'totp', until: number): Promise<Decision> {
    let last: Decision | undefined;
    let answered = false;
    waiting.inc();
    try {
      while (Date.now() + this.options.pollMs + LAST_POLL_MS <= until) {
        await sleep(this.options.pollMs);
        const status = await this.api.status(client, challengeId, until);
        last = this.decided(client, status, (reply) => afterWait(reply) ?? { kind: 'wait', challengeId, method });
        if (last.kind !== 'wait' && last.kind !== 'silent') return last;
        answered ||= last.kind === 'wait';
      }
    } finally {
      waiting.dec();
    }
    // Still pending when the time ran out. Silent (so the NAS tries its next server) only when the
    // API answered none of the polls; a last one unanswered is more likely just late.
    return last?.kind === 'silent' && !answered ? last : waitedTooLong(method);
  }

  private decided<T>(client: RadiusClient, result: ApiResult<T>, then: (reply: T) => Decision): Decision {
    if ('ok' in result) return then(result.ok);
    if ('error' in result) {
      // The client's API key is wrong, revoked or lacks the challenges scope: the operator's to mend.
      if (result.error === 'forbidden') this.log.warn('radius client refused by the challenge API: check its apiKey and its scopes', { client: client.name, reason: result.message.slice(0, 200) });
      return afterError(result.error, result.retryAfterSeconds);
    }
    return { kind: 'silent', why: result.unreachable };
  }

  private async toAnswer(client: RadiusClient, userId: string, decision: Decision): Promise<Answer> {
    switch (decision.kind) {
      case 'accept':
        return { code: Code.AccessAccept, message: decision.message };
      case 'reject':
        return reject(decision.message);
      case 'challenge': {
        const now = Date.now();
        const pending: PendingCode = {
          tenantId: client.tenantId,
          client: client.cidr,
          userId,
          challengeId: decision.challengeId,
          method: decision.method,
          expiresAt: decision.expiresAt,
        };
        const state = await this.states.issue(pending, now);
        if (!state) return reject('The code expired. Sign in again.');
        return { code: Code.AccessChallenge, message: decision.message, state, sessionTimeout: Math.max(1, Math.ceil((Date.parse(decision.expiresAt) - now) / 1000)) };
      }
      case 'silent':
        this.log.warn('radius request left unanswered: the challenge API did not answer', { client: client.name, why: decision.why });
        drops.inc({ reason: 'api_unavailable' });
        return undefined;
      case 'wait':
      case 'verify':
        throw new Error(`undecided ${decision.kind}`);
    }
  }

  /**
   * Counts a dropped datagram (every one: mfa_radius_drops_total) and logs it, at most once a
   * minute per reason and source address, and at most DROP_LINES_PER_MINUTE lines a minute in all:
   * a source address costs an attacker nothing (any address of an IPv6 /64, or spoofed), so a
   * limit per source alone lets a flood write a line per datagram. Past the budget the lines left
   * out are counted, and said in one line when the minute ends.
   */
  private drop(reason: string, d: Datagram, fields: Record<string, unknown> = {}): undefined {
    drops.inc({ reason });
    const key = `${reason}|${d.address}`;
    const now = Date.now();
    this.forgetDropSources(now);
    if ((this.dropLog.get(key) ?? 0) > now) return undefined;
    if (now >= this.dropMinute.endsAt) this.dropMinute = { endsAt: now + 60_000, lines: 0, suppressed: new Map() };
    const minute = this.dropMinute;
    if (minute.lines >= DROP_LINES_PER_MINUTE) {
      // Not remembered per source: the map grows no faster than the lines are written.
      if (minute.suppressed.size === 0) setTimeout(() => this.sayDropsSuppressed(minute), minute.endsAt - now).unref();
      minute.suppressed.set(reason, (minute.suppressed.get(reason) ?? 0) + 1);
      return undefined;
    }
    minute.lines++;
    // Deleted first: the map's order stays that of the entries' expiry, oldest first.
    this.dropLog.delete(key);
    this.dropLog.set(key, now + 60_000);
    this.log.warn('radius datagram dropped', { reason, source: d.address, port: d.port, ...fields });
    return undefined;
  }

  /** Forgets the sources whose minute has passed, and the oldest ones beyond DROP_SOURCES_REMEMBERED (never all at once). */
  private forgetDropSources(now: number): void {
    for (const [key, until] of this.dropLog) {
      if (until > now && this.dropLog.size < DROP_SOURCES_REMEMBERED) break;
      this.dropLog.delete(key);
    }
  }

  private sayDropsSuppressed(minute: DropMinute): void {
    const byReason = Object.fromEntries(minute.suppressed);
    const suppressed = Object.values(byReason).reduce((sum, n) => sum + n, 0);
    this.log.warn('radius datagrams dropped: log lines left out', { suppressed, byReason, limit: `${DROP_LINES_PER_MINUTE} lines a minute`, metric: 'mfa_radius_drops_total' });
  }
}

function reject(message: string): Answer {
  return { code: Code.AccessReject, message };
}

/** The code typed as a password: digits, spaces ignored ("123 456"); anything else is no code. */
function codeOf(password: string | undefined): string | undefined {
  const code = password?.replace(/\s+/g, '');
  return code && /^\d{4,10}$/.test(code) ? code : undefined;
}

function textOf(value: Buffer): string | undefined {
  try {
    return utf8.decode(value).trim() || undefined;
  } catch {
    return undefined;
  }
}

function hasMsChap(packet: Packet): boolean {
  return attributesOf(packet, Attr.VendorSpecific).some((v) => v.length >= 6 && v.readUInt32BE(0) === MICROSOFT && MS_CHAP_TYPES.has(v[4]!));
}
