import assert from 'node:assert/strict';
import { createWriteStream, type WriteStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NatsConnection } from '@nats-io/transport-node';
import { Headers, Subjects, type SigninItem } from '@mfa/contracts';
import { base32Decode, totp, totpStep } from '@mfa/crypto';
import { isNoResponders, requestJson } from '@mfa/messaging';
import { FakeTwilio, uniqueUser } from '@mfa/testing';

/**
 * The IdP of the fault tests (fault-injection, clusters): users signing in at a steady rate,
 * alternately by SMS (through a fake Twilio) and by authenticator app, each request with the 5 s
 * an IdP gives it and its `Mfa-Deadline`; every sign-in is recorded with the phase it started in,
 * so a test can judge each phase and then check the report against what the IdP saw.
 */

export type Reply = Record<string, unknown> & { status?: string; reason?: string; challengeId?: string; error?: { code: string; message: string } };

export interface SignIn {
  n: number;
  method: 'sms' | 'totp';
  userId: string;
  phase: string;
  /** When the start request was sent, and when the sign-in ended (ms since the epoch). */
  at: number;
  end?: number;
  challengeId?: string;
  ok?: boolean;
  /** Where it failed: `start:<error>`, `sms:not_received`, `verify:<error or status/reason>`. */
  failure?: string;
  /** SMS codes presented (the last one approved, when ok). */
  codes: string[];
  /** Whether a verify was ever sent (a challenge never verified cannot be a success). */
  verified: boolean;
}

export interface Phase {
  name: string;
  /** What the test does in it; the test decides which kinds it judges and how. */
  kind: string;
  from: number;
  to?: number;
  /** Anything the test records about the phase (restart times, the killed node…), for its table. */
  notes: Record<string, unknown>;
}

export interface TotpUser {
  userId: string;
  secret: Buffer;
  lastStep: number;
  busy: boolean;
}
export interface SmsUser {
  userId: string;
  phone: string;
  busy: boolean;
  /** Not used again before this time (an SMS of a failed sign-in may still arrive). */
  restUntil: number;
}

export interface LoadOptions {
  nc: () => NatsConnection;
  tenantId: string;
  twilio: FakeTwilio;
  /** Sign-ins per second, alternately TOTP and SMS. */
  rate: number;
  /** What an IdP gives one request (docs/api.md, "Deadline"). */
  requestTimeoutMs: number;
  /** How long the user waits for the SMS before giving up. */
  smsWaitMs: number;
  /** The tenant's code lifetime: an SMS user whose sign-in failed rests that long (its SMS may still come). */
  codeLifetimeS: number;
  application: string;
}

/** A request that got no reply: the IdP's view (timeout, no responders, connection closed, …). */
export function transportError(error: unknown): string {
  const chain: Error[] = [];
  for (let e: unknown = error; e instanceof Error && chain.length < 3; e = e.cause) chain.push(e);
  const named = (name: string) => chain.some((e) => e.name === name || e.constructor.name === name);
  if (isNoResponders(error)) return 'no_responders';
  if (named('TimeoutError')) return 'timeout';
  return chain.length ? `${chain[0]!.name}(${chain.at(-1)!.message.slice(0, 60)})` : 'error';
}

/**
 * Registers the users the load needs at `rate`: a TOTP code is accepted once per time step and
 * token, so a TOTP user signs in at most once a step (rate/2 a second × 30 s, and a margin); SMS
 * users one sign-in at a time. `phonePrefix` keeps the test's phone numbers apart from others'.
 */
export async function registerLoadUsers(
  ask: (subject: string, body: unknown) => Promise<Reply>,
  tenantId: string,
  rate: number,
  phonePrefix = '+1555',
): Promise<{ totpUsers: TotpUser[]; smsUsers: SmsUser[] }> {
  const totpCount = Math.ceil((rate / 2) * 30 * 1.4);
  const smsCount = Math.ceil((rate / 2) * 25);
  const inBatches = async <T>(count: number, make: (i: number) => Promise<T>): Promise<T[]> => {
    const out: T[] = [];
    for (let i = 0; i < count; i += 16) out.push(...(await Promise.all(Array.from({ length: Math.min(16, count - i) }, (_, j) => make(i + j)))));
    return out;
  };
  const totpUsers = await inBatches(totpCount, async () => {
    const userId = uniqueUser('app');
    const registered = await ask(Subjects.usersRegister, { tenantId, userId });
    assert.equal(registered.error, undefined, JSON.stringify(registered));
    // Read-after-write: the enrolment right after the registration sees it.
    const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId });
    assert.equal(enrolled.error, undefined, `enroll right after register: ${JSON.stringify(enrolled)}`);
    const secret = base32Decode(String(enrolled.secret));
    const now = Date.now();
    const activated = await ask(Subjects.totpActivate, { tenantId, userId, tokenId: enrolled.tokenId, code: totp(secret, now) });
    assert.equal(activated.active, true, JSON.stringify(activated));
    return { userId, secret, lastStep: totpStep(now), busy: false };
  });
  const smsUsers = await inBatches(smsCount, async (i) => {
    const userId = uniqueUser('sms');
    const phone = `${phonePrefix}${String(i).padStart(12 - phonePrefix.length, '0')}`;
    const registered = await ask(Subjects.usersRegister, { tenantId, userId, phoneNumber: phone });
    assert.equal(registered.error, undefined, JSON.stringify(registered));
    return { userId, phone, busy: false, restUntil: 0 };
  });
  return { totpUsers, smsUsers };
}

/**
 * What the services print during a fault test: every line to a file under the OS temp directory,
 * and kept in memory to quote as evidence (warnings and errors of a time span, the lines about one
 * challenge). `figuresPath` is where the test writes its figures, beside the log.
 */
export class ServiceLines {
  readonly logPath: string;
  readonly figuresPath: string;
  private readonly file: WriteStream;
  private readonly all: Array<{ at: number; service: string; line: string }> = [];
  private readonly problems: Array<{ at: number; service: string; line: string }> = [];

  constructor(name: string) {
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    this.logPath = join(tmpdir(), `mfa-${name}-${stamp}.log`);
    this.figuresPath = join(tmpdir(), `mfa-${name}-${stamp}.json`);
    this.file = createWriteStream(this.logPath);
  }

  /** For startStack's `onLine`. */
  readonly onLine = (service: string, line: string): void => {
    const at = Date.now();
    this.file.write(`${new Date(at).toISOString()} [${service}] ${line}\n`);
    this.all.push({ at, service, line });
    if (/"level":"(warn|error)"/.test(line)) this.problems.push({ at, service, line });
  };

  /** The first warnings and errors logged between two instants, one per line. */
  problemsBetween(from: number, to: number): string {
    return this.problems
      .filter((p) => p.at >= from && p.at <= to)
      .slice(0, 8)
      .map((p) => `[${p.service}] ${p.line.slice(0, 400)}`)
      .join('\n    ');
  }

  /** When a line containing `text` was first printed at or after `from`, if one was. */
  firstAt(text: string, from: number): number | undefined {
    return this.all.find((l) => l.at >= from && l.line.includes(text))?.at;
  }

  /** Every line that names the challenge. */
  about(challengeId: string): string[] {
    return this.all.filter((l) => l.line.includes(challengeId)).map((l) => `[${l.service}] ${l.line.slice(0, 300)}`);
  }

  /** Prints the figures table and the summary, and writes them with every sign-in beside the log. */
  async printFigures(figures: FigureRow[], summary: Record<string, unknown>, signIns: SignIn[]): Promise<void> {
    await writeFile(this.figuresPath, JSON.stringify({ summary: { ...summary, logFile: this.logPath }, phases: figures, signIns }, null, 1));
    process.stdout.write(`${figuresTable(figures).map((l) => `# ${l}`).join('\n')}\n# ${JSON.stringify(summary)}\n# figures: ${this.figuresPath}, services' log: ${this.logPath}\n`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.file.end(() => resolve()));
  }
}

/** One row of a fault test's figures table. */
export interface FigureRow {
  phase: string;
  signIns: number;
  ok: number;
  failed: number;
  okPercent: number | null;
  failures: Record<string, number>;
  /** Milliseconds until sign-ins succeeded again, where the phase measures it. */
  recoveryMs?: number | null;
  notes: string[];
}

/** The figures as a markdown table (printed by the tests, copied into docs/operations.md). */
export function figuresTable(rows: FigureRow[]): string[] {
  return [
    '| phase | sign-ins | ok | failed | ok % | recovery ms | notes |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((f) => {
      const notes = [Object.keys(f.failures).length ? `failures ${JSON.stringify(f.failures)}` : '', ...f.notes].filter(Boolean);
      return `| ${f.phase} | ${f.signIns} | ${f.ok} | ${f.failed} | ${String(f.okPercent)} | ${f.recoveryMs === undefined ? '' : String(f.recoveryMs)} | ${notes.join('; ')} |`;
    }),
  ];
}

export class SignInLoad {
  readonly signIns: SignIn[] = [];
  readonly phases: Phase[] = [];
  /** Arrivals with no free user (should stay 0). */
  skipped = 0;
  private loading = false;
  private paused = false;
  private driver: Promise<void> | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private totpCursor = 0;
  private smsCursor = 0;

  constructor(
    private readonly options: LoadOptions,
    readonly totpUsers: TotpUser[],
    readonly smsUsers: SmsUser[],
  ) {}

  /** Ends the current phase and starts the next one; sign-ins are counted in the phase they start in. */
  enter(name: string, kind: string, notes: Record<string, unknown> = {}): Phase {
    const now = Date.now();
    const previous = this.phases.at(-1);
    if (previous && previous.to === undefined) previous.to = now;
    const phase: Phase = { name, kind, from: now, notes };
    this.phases.push(phase);
    process.stdout.write(`# ${new Date(now).toISOString()} phase: ${name}\n`);
    return phase;
  }

  /** One request as the IdP sends it: the 5 s it waits, and the deadline header. */
  async call(subject: string, body: unknown): Promise<{ reply?: Reply; error?: string }> {
    try {
      const reply = await requestJson<Reply>(this.options.nc(), subject, body, {
        timeoutMs: this.options.requestTimeoutMs,
        headers: { [Headers.deadline]: String(Date.now() + this.options.requestTimeoutMs) },
      });
      return reply.error ? { reply, error: reply.error.code } : { reply };
    } catch (error) {
      return { error: transportError(error) };
    }
  }

  /** Starts the arrivals (open loop: one every 1/rate s whatever the replies). */
  start(): void {
    this.loading = true;
    this.driver = (async () => {
      const t0 = Date.now();
      for (let n = 0; this.loading; n++) {
        const due = t0 + (n * 1000) / this.options.rate;
        if (due > Date.now()) await sleep(due - Date.now());
        if (!this.loading) break;
        if (this.paused) continue;
        const p = this.launch(n);
        if (p) {
          this.inFlight.add(p);
          void p.finally(() => this.inFlight.delete(p));
        }
      }
    })();
  }

  /** No new sign-in until resume(); those running finish. Resolves once none is running. */
  async pause(): Promise<void> {
    this.paused = true;
    await Promise.allSettled([...this.inFlight]);
  }

  resume(): void {
    this.paused = false;
  }

  /** Stops the arrivals and waits for every sign-in running to end. */
  async stop(): Promise<void> {
    this.loading = false;
    await this.driver;
    await Promise.allSettled([...this.inFlight]);
    const last = this.phases.at(-1);
    if (last && last.to === undefined) last.to = Date.now();
  }

  /** The first sign-in started after `since` (and matching `where`) to succeed. */
  firstOkAfter(since: number, where: (s: SignIn) => boolean = () => true): SignIn | undefined {
    return this.signIns.filter((s) => s.at >= since && s.ok && where(s)).sort((a, b) => a.end! - b.end!)[0];
  }

  /** Waits until a sign-in started after `since` has succeeded (at most `boundMs` and a margin). */
  async waitRecovered(since: number, boundMs: number, where?: (s: SignIn) => boolean): Promise<void> {
    const deadline = since + boundMs + 10_000;
    while (!this.firstOkAfter(since, where) && Date.now() < deadline) await sleep(100);
  }

  /** The sign-ins of one phase, and how they ended. */
  summarize(phase: Phase): Omit<FigureRow, 'notes'> {
    const mine = this.signIns.filter((s) => s.phase === phase.name);
    const ok = mine.filter((s) => s.ok).length;
    const failures: Record<string, number> = {};
    for (const s of mine.filter((x) => !x.ok)) failures[s.failure!] = (failures[s.failure!] ?? 0) + 1;
    return { phase: phase.name, signIns: mine.length, ok, failed: mine.length - ok, okPercent: mine.length ? Math.round((1000 * ok) / mine.length) / 10 : null, failures };
  }

  /**
   * How long after `since` a sign-in approved after it shows in the report (null: not within
   * `boundMs` and a margin).
   */
  async reportRecovery(since: number, boundMs: number): Promise<number | null> {
    const deadline = since + boundMs + 15_000;
    while (Date.now() < deadline) {
      const approved = new Set(this.signIns.filter((s) => s.at >= since && s.ok).map((s) => s.challengeId));
      if (approved.size > 0) {
        try {
          const page = await requestJson<Reply>(this.options.nc(), Subjects.reportsSigninsQuery, { tenantId: this.options.tenantId, from: new Date(since).toISOString(), limit: 500 }, { timeoutMs: this.options.requestTimeoutMs });
          if ((page.items as SigninItem[] | undefined)?.some((item) => approved.has(item.challengeId))) return Date.now() - since;
        } catch {
          // reporting not answering yet
        }
      }
      await sleep(250);
    }
    return null;
  }

  /** The run in figures: what was offered, what succeeded, what the fake Twilio was sent. */
  summary(since: number): { rate: number; runtimeSeconds: number; signIns: number; ok: number; skippedNoFreeUser: number; smsStarts: number; smsSent: number; twilioRequests: number } {
    return {
      rate: this.options.rate,
      runtimeSeconds: Math.round((Date.now() - since) / 1000),
      signIns: this.signIns.length,
      ok: this.signIns.filter((s) => s.ok).length,
      skippedNoFreeUser: this.skipped,
      smsStarts: this.signIns.filter((s) => s.method === 'sms').length,
      smsSent: this.options.twilio.messages.length,
      twilioRequests: this.options.twilio.requests,
    };
  }

  /** Every row of the tenant's report since `from`, page by page. */
  async readReport(from: string): Promise<SigninItem[]> {
    const out: SigninItem[] = [];
    let cursor: string | undefined;
    do {
      const page = await requestJson<Reply>(this.options.nc(), Subjects.reportsSigninsQuery, { tenantId: this.options.tenantId, from, limit: 500, ...(cursor ? { cursor } : {}) }, { timeoutMs: 10_000 });
      if (page.error) throw new Error(`report: ${JSON.stringify(page.error)}`);
      out.push(...(page.items as SigninItem[]));
      cursor = page.nextCursor as string | undefined;
    } while (cursor);
    return out;
  }

  /**
   * What the report must say about what the IdP saw: no challenge twice, every sign-in approved at
   * the IdP in it as a success, nothing never verified as a success, (with `allStarted`) every
   * challenge started in it, and no SMS code sent twice. Each problem found is passed to `fail`
   * with its evidence; `linesOf` gives the services' log lines about a challenge.
   */
  checkReport(rows: SigninItem[], fail: (problem: string) => void, options: { allStarted: boolean; linesOf: (challengeId: string) => string[] }): void {
    const byId = new Map<string, SigninItem[]>();
    for (const row of rows) byId.set(row.challengeId, [...(byId.get(row.challengeId) ?? []), row]);
    const duplicates = [...byId].filter(([, list]) => list.length > 1);
    if (duplicates.length) fail(`report: ${duplicates.length} challenges have more than one row, e.g. ${JSON.stringify(duplicates.slice(0, 3))}`);
    const describe = (s: SignIn) => `${s.challengeId} (${s.method}, ${s.phase}, started ${new Date(s.at).toISOString()}, ${s.ok ? 'approved' : s.failure})`;
    const started = this.signIns.filter((s) => s.challengeId);
    const approved = this.signIns.filter((s) => s.ok);
    const approvedMissing = approved.filter((s) => !byId.has(s.challengeId!));
    if (approvedMissing.length) fail(`report: ${approvedMissing.length} sign-ins approved at the IdP are missing, e.g. ${approvedMissing.slice(0, 5).map(describe).join(', ')}`);
    const approvedNotSuccess = approved.filter((s) => byId.get(s.challengeId!)?.some((r) => r.result !== 'success'));
    if (approvedNotSuccess.length) {
      fail(
        `report: ${approvedNotSuccess.length} sign-ins approved at the IdP are reported as failures, e.g. ${approvedNotSuccess
          .slice(0, 5)
          .map((s) => `${describe(s)} → ${byId.get(s.challengeId!)![0]!.resultDetail}`)
          .join(', ')}`,
      );
    }
    if (options.allStarted) {
      const startedMissing = started.filter((s) => !byId.has(s.challengeId!));
      if (startedMissing.length) fail(`report: ${startedMissing.length} started challenges are missing, e.g. ${startedMissing.slice(0, 5).map(describe).join(', ')}`);
    }
    const neverVerifiedSuccess = started.filter((s) => !s.verified && byId.get(s.challengeId!)?.some((r) => r.result === 'success'));
    if (neverVerifiedSuccess.length) fail(`report: ${neverVerifiedSuccess.length} challenges never verified are reported as successes, e.g. ${neverVerifiedSuccess.slice(0, 5).map(describe).join(', ')}`);

    const messages = this.options.twilio.messages;
    const perPhoneCode = new Map<string, number>();
    for (const m of messages) perPhoneCode.set(`${m.to} ${FakeTwilio.codeOf(m)}`, (perPhoneCode.get(`${m.to} ${FakeTwilio.codeOf(m)}`) ?? 0) + 1);
    const duplicateSms = [...perPhoneCode].filter(([, count]) => count > 1);
    if (duplicateSms.length) {
      const examples = duplicateSms.slice(0, 5).map(([key]) => {
        const [to, code] = key.split(' ');
        const owner = this.signIns.find((s) => s.codes.includes(code!) && this.smsUsers.some((u) => u.phone === to && u.userId === s.userId));
        const times = messages.filter((m) => m.to === to && FakeTwilio.codeOf(m) === code).map((m) => m.receivedAt.toISOString());
        const during = this.phases.filter((p) => times.some((t) => Date.parse(t) >= p.from && Date.parse(t) <= (p.to ?? Infinity))).map((p) => p.name);
        const lines = owner ? options.linesOf(owner.challengeId!) : [];
        return `${to} received one code ${times.length} times at ${times.join(', ')} (phases: ${during.join(' → ')})${owner ? ` for challenge ${describe(owner)}` : ''}\n    ${lines.join('\n    ')}`;
      });
      fail(`SMS: ${duplicateSms.length} codes were sent more than once: ${examples.join('; ')}`);
    }
    const smsStarts = this.signIns.filter((s) => s.method === 'sms').length;
    if (messages.length > smsStarts) fail(`SMS: ${messages.length} sent for ${smsStarts} SMS starts`);
  }

  private finish(s: SignIn, ok: boolean, failure?: string): void {
    s.ok = ok;
    s.end = Date.now();
    if (failure) s.failure = failure;
  }

  private async signInTotp(s: SignIn, user: TotpUser): Promise<void> {
    const { tenantId, application } = this.options;
    const start = await this.call(Subjects.challengeStart, { tenantId, userId: user.userId, method: 'totp', application });
    if (start.error || start.reply?.status !== 'pending') return this.finish(s, false, `start:${start.error ?? start.reply?.status}`);
    s.challengeId = String(start.reply.challengeId);
    const step = Math.max(totpStep(Date.now()), user.lastStep + 1);
    user.lastStep = step;
    s.verified = true;
    const verify = await this.call(Subjects.challengeVerify, { tenantId, challengeId: s.challengeId, code: totp(user.secret, step * 30_000) });
    if (verify.error) return this.finish(s, false, `verify:${verify.error}`);
    if (verify.reply?.status !== 'approved') return this.finish(s, false, `verify:${verify.reply?.status}/${verify.reply?.reason}`);
    this.finish(s, true);
  }

  private async signInSms(s: SignIn, user: SmsUser): Promise<void> {
    const { tenantId, application, twilio } = this.options;
    const start = await this.call(Subjects.challengeStart, { tenantId, userId: user.userId, method: 'sms', application });
    if (start.error || start.reply?.status !== 'pending') return this.finish(s, false, `start:${start.error ?? start.reply?.status}`);
    s.challengeId = String(start.reply.challengeId);
    const waitUntil = s.at + this.options.smsWaitMs;
    for (;;) {
      // The first SMS to this phone since the start that has not been tried: a late SMS of an
      // earlier sign-in of this user is answered invalid_code, and the next one is tried.
      let sms;
      try {
        sms = await twilio.waitFor((m) => m.to === user.phone && m.receivedAt.getTime() >= s.at && !s.codes.includes(FakeTwilio.codeOf(m)), Math.max(1, waitUntil - Date.now()));
      } catch {
        return this.finish(s, false, 'sms:not_received');
      }
      const code = FakeTwilio.codeOf(sms);
      s.codes.push(code);
      s.verified = true;
      const verify = await this.call(Subjects.challengeVerify, { tenantId, challengeId: s.challengeId, code });
      if (verify.error) return this.finish(s, false, `verify:${verify.error}`);
      if (verify.reply?.status === 'approved') return this.finish(s, true);
      if (verify.reply?.status !== 'pending' || verify.reply.reason !== 'invalid_code' || Date.now() >= waitUntil) {
        return this.finish(s, false, `verify:${verify.reply?.status}/${verify.reply?.reason}`);
      }
    }
  }

  private launch(n: number): Promise<void> | undefined {
    const now = Date.now();
    const phase = this.phases.at(-1)?.name ?? 'setup';
    if (n % 2 === 0) {
      const current = totpStep(now);
      for (let i = 0; i < this.totpUsers.length; i++) {
        const user = this.totpUsers[(this.totpCursor + i) % this.totpUsers.length]!;
        // A step after the last one accepted, at most one ahead of now (the server takes ±1).
        if (user.busy || Math.max(current, user.lastStep + 1) > current + 1) continue;
        this.totpCursor = (this.totpCursor + i + 1) % this.totpUsers.length;
        const s: SignIn = { n, method: 'totp', userId: user.userId, phase, at: now, codes: [], verified: false };
        this.signIns.push(s);
        user.busy = true;
        return this.signInTotp(s, user).finally(() => (user.busy = false));
      }
    } else {
      for (let i = 0; i < this.smsUsers.length; i++) {
        const user = this.smsUsers[(this.smsCursor + i) % this.smsUsers.length]!;
        if (user.busy || user.restUntil > now) continue;
        this.smsCursor = (this.smsCursor + i + 1) % this.smsUsers.length;
        const s: SignIn = { n, method: 'sms', userId: user.userId, phase, at: now, codes: [], verified: false };
        this.signIns.push(s);
        user.busy = true;
        return this.signInSms(s, user).finally(() => {
          user.busy = false;
          // Anything but a clean approval may leave an SMS on its way to this phone.
          if (!s.ok) user.restUntil = Date.now() + (this.options.codeLifetimeS + 10) * 1000;
        });
      }
    }
    this.skipped++;
    return undefined;
  }
}
