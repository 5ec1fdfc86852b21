import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createWriteStream, type WriteStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Headers, Streams, Subjects, type SigninItem } from '@mfa/contracts';
import { base32Decode, totp, totpStep } from '@mfa/crypto';
import { connectClient, requestJson } from '@mfa/messaging';
import {
  FakeTwilio,
  itWith,
  CORE_SERVICE_NAMES,
  startNatsServer,
  startPostgresServer,
  startRedisServer,
  startStack,
  uniqueTenant,
  uniqueUser,
  type NatsServerProcess,
  type PostgresServerProcess,
  type RedisServerProcess,
  type Stack,
} from '@mfa/testing';

/**
 * Fault injection (issue 7, item 8). Two instances of every service against a nats-server, a
 * redis-server and a Postgres cluster of the test's own, SMS through a fake Twilio speaking
 * Twilio's REST API. An IdP signs users in at a steady rate, by SMS and by authenticator app,
 * each request with the 5 s an IdP gives it, while the test kills -9 one instance of each service
 * in turn (restarting it before the next), then kills and restarts NATS (same port and store
 * directory: JetStream keeps its data), Redis (empty) and Postgres.
 *
 * It asserts that every sign-in the IdP saw approved is in the report exactly once and as a
 * success, that every challenge started is in the report, that no SMS is sent twice for one
 * challenge, that at least 95 % of sign-ins succeed while one instance is down, and that after
 * each dependency comes back new sign-ins succeed within the recovery bounds below.
 *
 * It prints a table of per-phase figures (for docs/operations.md) and writes them, with the
 * services' logs, under the OS temp directory.
 */

/** Sign-ins per second, alternately SMS and TOTP. */
const RATE = 12;
/** What an IdP gives one request (docs/api.md, "Deadline"). */
const REQUEST_TIMEOUT_MS = 5_000;
/** How long the user waits for the SMS before giving up. */
const SMS_WAIT_MS = 10_000;
/**
 * The tenant's code lifetime. Longer than dispatch-sms's ack wait (60 s), as the default 180 s
 * is: an SMS request redelivered after an ack wait must still find its code valid (and so be at
 * risk of a second SMS), or the test would hide that. Shorter than the default because failed
 * challenges appear in the report only once expired, and the test waits for that at the end.
 */
const CODE_LIFETIME_S = 90;
const BASELINE_MS = 8_000;
/** How long one killed instance stays down before it is started again. */
const INSTANCE_DOWN_MS = 6_000;
const SETTLE_MS = 2_000;
/** After a dependency's recovery, how long sign-ins are observed before the next fault. */
const OBSERVE_AFTER_RECOVERY_MS = 6_000;
/** Success rate required while one instance is down, and once a dependency has recovered. */
const MIN_SUCCESS = 0.95;
/**
 * Recovery bounds: from the moment the restarted dependency answers again until a sign-in started
 * after it succeeds. Measured here (2-core machine running everything): NATS ≈ 1–3 s, Redis empty
 * ≈ 0.1–1 s, Postgres (sign-ins do not need it) ≈ 0. The bounds leave room for a loaded machine;
 * Redis's is the one issue 7 states (15 s).
 */
const RECOVERY_BOUND_MS = { nats: 15_000, redis: 15_000, postgres: 15_000 } as const;
/** From Postgres's restart until a sign-in approved after it is in the report (reporting retries with back-off). */
const REPORT_RECOVERY_BOUND_MS = 30_000;
/** After the load stops and the last challenge has expired: time for the report to catch up. */
const REPORT_CATCH_UP_MS = 60_000;

type Reply = Record<string, unknown> & { status?: string; reason?: string; challengeId?: string; error?: { code: string; message: string } };
type Dependency = keyof typeof RECOVERY_BOUND_MS;

interface SignIn {
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

interface Phase {
  name: string;
  kind: 'baseline' | 'instance' | 'dependency-down' | 'dependency-up' | 'settle' | 'after';
  from: number;
  to?: number;
  dependency?: Dependency;
  /** dependency-up: when the restarted server answered again. */
  restartedAt?: number;
  /** instance: how long the instance took to be ready again. */
  restartMs?: number;
  /** dependency-up: how long the dependency was away. */
  outageMs?: number;
  reportRecoveryMs?: number | null;
}

interface TotpUser {
  userId: string;
  secret: Buffer;
  lastStep: number;
  busy: boolean;
}
interface SmsUser {
  userId: string;
  phone: string;
  busy: boolean;
  /** Not used again before this time (an SMS of a failed sign-in may still arrive). */
  restUntil: number;
}

describe('fault injection: sign-ins while instances, NATS, Redis and Postgres are killed', () => {
  const twilio = new FakeTwilio();
  let nats: NatsServerProcess | undefined;
  let redis: RedisServerProcess | undefined;
  let pg: PostgresServerProcess | undefined;
  let stack: Stack | undefined;
  let nc: NatsConnection | undefined;
  const tenantId = uniqueTenant('fault');
  const runStamp = new Date().toISOString().replace(/[:.]/g, '-');
  const logPath = join(tmpdir(), `mfa-fault-injection-${runStamp}.log`);
  const figuresPath = join(tmpdir(), `mfa-fault-injection-${runStamp}.json`);
  let log: WriteStream | undefined;
  /** Warnings and errors of the services, for the evidence of a failed check. */
  const problemsLogged: Array<{ at: number; service: string; line: string }> = [];
  /** Every line the services printed (a few thousand), to quote those of one challenge. */
  const allLines: Array<{ at: number; service: string; line: string }> = [];
  const totpUsers: TotpUser[] = [];
  const smsUsers: SmsUser[] = [];

  const ask = (subject: string, body: unknown, timeoutMs = 10_000) => requestJson<Reply>(nc!, subject, body, { timeoutMs });

  before(
    async () => {
      log = createWriteStream(logPath);
      await twilio.start();
      nats = await startNatsServer();
      redis = await startRedisServer();
      pg = await startPostgresServer();
      stack = await startStack({
        instances: 2,
        env: {
          NODE_ENV: 'test',
          MFA_AUTH: 'off',
          LOG_LEVEL: 'info',
          NATS_URL: nats.url,
          REDIS_URL: redis.url,
          DATABASE_URL: pg.url('mfa'),
          // One user signs in many times during the run: neither throttling nor lockout is under test.
          SMS_MAX_SENDS_PER_WINDOW: '1000',
          ...twilio.env(),
        },
        onLine: (service, line) => {
          const at = Date.now();
          log?.write(`${new Date(at).toISOString()} [${service}] ${line}\n`);
          allLines.push({ at, service, line });
          if (/"level":"(warn|error)"/.test(line)) problemsLogged.push({ at, service, line });
        },
        readyTimeoutMs: 120_000,
      });
      nc = await connectClient({ servers: nats.url, name: 'e2e-fault-idp', maxReconnectAttempts: -1, reconnectTimeWait: 250 });
      const configured = await ask(Subjects.tenantsConfigure, {
        tenantId,
        settings: { codeLifetimeSeconds: CODE_LIFETIME_S, lockout: { threshold: 100 } },
      });
      assert.equal(configured.error, undefined, JSON.stringify(configured));

      // Users: a TOTP code is accepted once per time step and token, so a TOTP user signs in at
      // most once a step: RATE/2 a second × 30 s, and a margin. SMS users one sign-in at a time.
      const totpCount = Math.ceil((RATE / 2) * 30 * 1.4);
      const smsCount = Math.ceil((RATE / 2) * 25);
      const inBatches = async <T>(count: number, make: (i: number) => Promise<T>): Promise<T[]> => {
        const out: T[] = [];
        for (let i = 0; i < count; i += 16) out.push(...(await Promise.all(Array.from({ length: Math.min(16, count - i) }, (_, j) => make(i + j)))));
        return out;
      };
      totpUsers.push(
        ...(await inBatches(totpCount, async () => {
          const userId = uniqueUser('app');
          const registered = await ask(Subjects.usersRegister, { tenantId, userId });
          assert.equal(registered.error, undefined, JSON.stringify(registered));
          const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId });
          const secret = base32Decode(String(enrolled.secret));
          const now = Date.now();
          const activated = await ask(Subjects.totpActivate, { tenantId, userId, tokenId: enrolled.tokenId, code: totp(secret, now) });
          assert.equal(activated.active, true, JSON.stringify(activated));
          return { userId, secret, lastStep: totpStep(now), busy: false };
        })),
      );
      smsUsers.push(
        ...(await inBatches(smsCount, async (i) => {
          const userId = uniqueUser('sms');
          const phone = `+1555${String(i).padStart(7, '0')}`;
          const registered = await ask(Subjects.usersRegister, { tenantId, userId, phoneNumber: phone });
          assert.equal(registered.error, undefined, JSON.stringify(registered));
          return { userId, phone, busy: false, restUntil: 0 };
        })),
      );
    },
    { timeout: 240_000 },
  );

  after(
    async () => {
      const steps: Array<[string, () => Promise<unknown> | undefined]> = [
        ['client', () => nc?.close()],
        ['services', () => stack?.stop()],
        ['fake Twilio', () => twilio.stop()],
        ['postgres', () => pg?.stop()],
        ['redis', () => redis?.stop()],
        ['nats', () => nats?.stop()],
        ['log', () => new Promise<void>((resolve) => (log ? log.end(() => resolve()) : resolve()))],
      ];
      for (const [what, step] of steps) {
        try {
          await step();
        } catch (error) {
          process.stderr.write(`# cleanup of ${what} failed: ${String(error)}\n`);
        }
      }
    },
    { timeout: 120_000 },
  );

  itWith(
    { real: ['nats', 'redis', 'postgres'], fake: ['twilio'] },
    'keeps signing users in while one instance of each service, then NATS, Redis and Postgres, are killed',
    async () => {
      const testStart = Date.now();
      const signIns: SignIn[] = [];
      const phases: Phase[] = [];
      let skipped = 0;
      const streamChecks: string[] = [];
      const enter = (name: string, kind: Phase['kind'], extra: Partial<Phase> = {}) => {
        const now = Date.now();
        const previous = phases.at(-1);
        if (previous && previous.to === undefined) previous.to = now;
        const phase: Phase = { name, kind, from: now, ...extra };
        phases.push(phase);
        process.stdout.write(`# ${new Date(now).toISOString()} phase: ${name}\n`);
        return phase;
      };

      // ---- the IdP ------------------------------------------------------------------------------
      const call = async (subject: string, body: unknown): Promise<{ reply?: Reply; error?: string }> => {
        try {
          const reply = await requestJson<Reply>(nc!, subject, body, {
            timeoutMs: REQUEST_TIMEOUT_MS,
            headers: { [Headers.deadline]: String(Date.now() + REQUEST_TIMEOUT_MS) },
          });
          return reply.error ? { reply, error: reply.error.code } : { reply };
        } catch (error) {
          return { error: transportError(error) };
        }
      };
      const finish = (s: SignIn, ok: boolean, failure?: string) => {
        s.ok = ok;
        s.end = Date.now();
        if (failure) s.failure = failure;
      };

      let totpCursor = 0;
      const signInTotp = async (s: SignIn, user: TotpUser) => {
        const start = await call(Subjects.challengeStart, { tenantId, userId: user.userId, method: 'totp', application: 'fault-injection' });
        if (start.error || start.reply?.status !== 'pending') return finish(s, false, `start:${start.error ?? start.reply?.status}`);
        s.challengeId = String(start.reply.challengeId);
        const now = totpStep(Date.now());
        const step = Math.max(now, user.lastStep + 1);
        user.lastStep = step;
        s.verified = true;
        const verify = await call(Subjects.challengeVerify, { tenantId, challengeId: s.challengeId, code: totp(user.secret, step * 30_000) });
        if (verify.error) return finish(s, false, `verify:${verify.error}`);
        if (verify.reply?.status !== 'approved') return finish(s, false, `verify:${verify.reply?.status}/${verify.reply?.reason}`);
        finish(s, true);
      };

      const signInSms = async (s: SignIn, user: SmsUser) => {
        const start = await call(Subjects.challengeStart, { tenantId, userId: user.userId, method: 'sms', application: 'fault-injection' });
        if (start.error || start.reply?.status !== 'pending') return finish(s, false, `start:${start.error ?? start.reply?.status}`);
        s.challengeId = String(start.reply.challengeId);
        const waitUntil = s.at + SMS_WAIT_MS;
        for (;;) {
          // The first SMS to this phone since the start that has not been tried: a late SMS of an
          // earlier sign-in of this user is answered invalid_code, and the next one is tried.
          let sms;
          try {
            sms = await twilio.waitFor(
              (m) => m.to === user.phone && m.receivedAt.getTime() >= s.at && !s.codes.includes(FakeTwilio.codeOf(m)),
              Math.max(1, waitUntil - Date.now()),
            );
          } catch {
            return finish(s, false, 'sms:not_received');
          }
          const code = FakeTwilio.codeOf(sms);
          s.codes.push(code);
          s.verified = true;
          const verify = await call(Subjects.challengeVerify, { tenantId, challengeId: s.challengeId, code });
          if (verify.error) return finish(s, false, `verify:${verify.error}`);
          if (verify.reply?.status === 'approved') return finish(s, true);
          if (verify.reply?.status !== 'pending' || verify.reply.reason !== 'invalid_code' || Date.now() >= waitUntil) {
            return finish(s, false, `verify:${verify.reply?.status}/${verify.reply?.reason}`);
          }
        }
      };

      let smsCursor = 0;
      const launch = (n: number): Promise<void> | undefined => {
        const now = Date.now();
        const phase = phases.at(-1)?.name ?? 'setup';
        if (n % 2 === 0) {
          const current = totpStep(now);
          for (let i = 0; i < totpUsers.length; i++) {
            const user = totpUsers[(totpCursor + i) % totpUsers.length]!;
            // A step after the last one accepted, at most one ahead of now (the server takes ±1).
            if (user.busy || Math.max(current, user.lastStep + 1) > current + 1) continue;
            totpCursor = (totpCursor + i + 1) % totpUsers.length;
            const s: SignIn = { n, method: 'totp', userId: user.userId, phase, at: now, codes: [], verified: false };
            signIns.push(s);
            user.busy = true;
            return signInTotp(s, user).finally(() => (user.busy = false));
          }
        } else {
          for (let i = 0; i < smsUsers.length; i++) {
            const user = smsUsers[(smsCursor + i) % smsUsers.length]!;
            if (user.busy || user.restUntil > now) continue;
            smsCursor = (smsCursor + i + 1) % smsUsers.length;
            const s: SignIn = { n, method: 'sms', userId: user.userId, phase, at: now, codes: [], verified: false };
            signIns.push(s);
            user.busy = true;
            return signInSms(s, user).finally(() => {
              user.busy = false;
              // Anything but a clean approval may leave an SMS on its way to this phone.
              if (!s.ok) user.restUntil = Date.now() + (CODE_LIFETIME_S + 10) * 1000;
            });
          }
        }
        skipped++;
        return undefined;
      };

      let loading = true;
      const inFlight = new Set<Promise<void>>();
      const driver = (async () => {
        const t0 = Date.now();
        for (let n = 0; loading; n++) {
          const due = t0 + (n * 1000) / RATE;
          if (due > Date.now()) await sleep(due - Date.now());
          if (!loading) break;
          const p = launch(n);
          if (p) {
            inFlight.add(p);
            void p.finally(() => inFlight.delete(p));
          }
        }
      })();

      const firstOkAfter = (since: number) =>
        signIns.filter((s) => s.at >= since && s.ok).sort((a, b) => a.end! - b.end!)[0];
      /** Waits until a sign-in started after `since` has succeeded (at most `boundMs` and a margin). */
      const waitRecovered = async (since: number, boundMs: number) => {
        const deadline = since + boundMs + 10_000;
        while (!firstOkAfter(since) && Date.now() < deadline) await sleep(100);
      };

      // ---- the faults ---------------------------------------------------------------------------
      try {
        enter('baseline', 'baseline');
        await sleep(BASELINE_MS);

        for (const [i, name] of CORE_SERVICE_NAMES.entries()) {
          const instance = (i % 2) + 1;
          const phase = enter(`kill -9 ${name}#${instance}`, 'instance');
          await stack!.kill(name, instance);
          await sleep(INSTANCE_DOWN_MS);
          const restarting = Date.now();
          await stack!.restart(name, instance);
          phase.restartMs = Date.now() - restarting;
          enter(`${name}#${instance} back`, 'settle');
          await sleep(SETTLE_MS);
        }

        const dependencyFault = async (
          dependency: Dependency,
          label: string,
          server: { kill(): Promise<void>; restart(): Promise<void> },
          downMs: number,
          moment?: () => Promise<unknown>,
        ) => {
          await moment?.();
          const down = enter(`${label} down`, 'dependency-down', { dependency });
          await server.kill();
          await sleep(downMs);
          await server.restart();
          const restartedAt = Date.now();
          const up = enter(`${label} restarted`, 'dependency-up', { dependency, restartedAt, outageMs: restartedAt - down.from });
          // Postgres: sign-ins do not need it, the report does; how soon one approved now is in it.
          const reportProbe = dependency === 'postgres' ? reportRecovery(restartedAt) : undefined;
          await waitRecovered(restartedAt, RECOVERY_BOUND_MS[dependency]);
          await sleep(OBSERVE_AFTER_RECOVERY_MS);
          // A gap before the next fault, so no sign-in of this phase is still running into it.
          if (reportProbe) up.reportRecoveryMs = await reportProbe;
          enter(`${label} settled`, 'settle');
          await sleep(SETTLE_MS);
          return up;
        };

        const streams = [Streams.userSettings.name, Streams.challenges.name, Streams.dispatch.name];
        const streamState = async () => {
          const jsm = await jetstreamManager(nc!, { timeout: 5_000 });
          return Promise.all(streams.map(async (name) => ({ name, ...(await jsm.streams.info(name)).state })));
        };
        // Redis first: dispatch's send claims live in Redis, and an SMS request whose ack NATS lost
        // comes again after the ack wait (60 s) and must find its claim there. Redis emptied within
        // that window loses the claim and the request may send again (docs/operations.md, "Failure
        // modes"): the two faults are not made to overlap.
        await dependencyFault('redis', 'Redis (kill -9, back empty)', redis!, 2_000);
        const beforeKill = await streamState();
        // The worst moment for SMS: NATS dies just after the provider accepted a message, while
        // dispatch records the outcome and acknowledges the request.
        const justSent = () => {
          const since = Date.now();
          return twilio.waitFor((m) => m.receivedAt.getTime() >= since, 5_000).catch(() => undefined);
        };
        await dependencyFault('nats', 'NATS (kill -9 after an SMS, same store)', nats!, 3_000, justSent);
        const afterRestart = await streamState();
        for (const [i, before] of beforeKill.entries()) {
          const now = afterRestart[i]!;
          streamChecks.push(
            now.first_seq === before.first_seq && now.last_seq >= before.last_seq
              ? ''
              : `JetStream: ${before.name} lost data in the NATS restart: before first/last seq ${before.first_seq}/${before.last_seq}, after ${now.first_seq}/${now.last_seq}`,
          );
        }
        await dependencyFault('postgres', 'Postgres (kill -9 postmaster)', pg!, 5_000);
        enter('after', 'after');
        await sleep(4_000);
      } finally {
        loading = false;
        await driver;
        await Promise.allSettled([...inFlight]);
        const last = phases.at(-1);
        if (last && last.to === undefined) last.to = Date.now();
      }

      async function reportRecovery(since: number): Promise<number | null> {
        const deadline = since + REPORT_RECOVERY_BOUND_MS + 15_000;
        while (Date.now() < deadline) {
          const approved = new Set(signIns.filter((s) => s.at >= since && s.ok).map((s) => s.challengeId));
          if (approved.size > 0) {
            try {
              const page = await ask(Subjects.reportsSigninsQuery, { tenantId, from: new Date(since).toISOString(), limit: 500 }, REQUEST_TIMEOUT_MS);
              if ((page.items as SigninItem[] | undefined)?.some((item) => approved.has(item.challengeId))) return Date.now() - since;
            } catch {
              // reporting not answering yet
            }
          }
          await sleep(250);
        }
        return null;
      }

      // ---- the report -------------------------------------------------------------------------
      // Failed challenges appear once expired: wait for the last one, then for the projection.
      const lastStart = Math.max(...signIns.map((s) => s.at));
      await sleep(Math.max(0, lastStart + CODE_LIFETIME_S * 1000 + 2_000 - Date.now()));
      const started = signIns.filter((s) => s.challengeId);
      let rows: SigninItem[] = [];
      const catchUpStart = Date.now();
      for (;;) {
        rows = await readReport(new Date(testStart).toISOString()).catch(() => rows);
        const ids = new Set(rows.map((r) => r.challengeId));
        if (started.every((s) => ids.has(s.challengeId!)) || Date.now() - catchUpStart > REPORT_CATCH_UP_MS) break;
        await sleep(1_000);
      }
      const reportCatchUpMs = Date.now() - catchUpStart;

      async function readReport(from: string): Promise<SigninItem[]> {
        const out: SigninItem[] = [];
        let cursor: string | undefined;
        do {
          const page = await ask(Subjects.reportsSigninsQuery, { tenantId, from, limit: 500, ...(cursor ? { cursor } : {}) });
          if (page.error) throw new Error(`report: ${JSON.stringify(page.error)}`);
          out.push(...(page.items as SigninItem[]));
          cursor = page.nextCursor as string | undefined;
        } while (cursor);
        return out;
      }

      // ---- figures ------------------------------------------------------------------------------
      const figures = phases.map((phase) => {
        const mine = signIns.filter((s) => s.phase === phase.name);
        const ok = mine.filter((s) => s.ok).length;
        const failures: Record<string, number> = {};
        for (const s of mine.filter((x) => !x.ok)) failures[s.failure!] = (failures[s.failure!] ?? 0) + 1;
        const row: Record<string, unknown> = {
          phase: phase.name,
          kind: phase.kind,
          seconds: Math.round(((phase.to ?? Date.now()) - phase.from) / 100) / 10,
          signIns: mine.length,
          ok,
          failed: mine.length - ok,
          okPercent: mine.length ? Math.round((1000 * ok) / mine.length) / 10 : null,
          failures,
        };
        if (phase.restartMs !== undefined) row.instanceRestartMs = phase.restartMs;
        if (phase.kind === 'dependency-up') {
          const first = firstOkAfter(phase.restartedAt!);
          row.outageMs = phase.outageMs;
          row.recoveryMs = first ? first.end! - phase.restartedAt! : null;
          // Sign-ins started once recovered (after the first success ended): the steady state.
          const steady = first ? mine.filter((s) => s.at >= first.end!) : [];
          row.afterRecovery = { signIns: steady.length, ok: steady.filter((s) => s.ok).length };
          if (phase.reportRecoveryMs !== undefined) row.reportRecoveryMs = phase.reportRecoveryMs;
        }
        return row;
      });
      const smsMessages = twilio.messages;
      const perPhoneCode = new Map<string, number>();
      for (const m of smsMessages) perPhoneCode.set(`${m.to} ${FakeTwilio.codeOf(m)}`, (perPhoneCode.get(`${m.to} ${FakeTwilio.codeOf(m)}`) ?? 0) + 1);
      const duplicateSms = [...perPhoneCode].filter(([, count]) => count > 1);
      const summary = {
        rate: RATE,
        runtimeSeconds: Math.round((Date.now() - testStart) / 1000),
        signIns: signIns.length,
        ok: signIns.filter((s) => s.ok).length,
        skippedNoFreeUser: skipped,
        smsStartsAttempted: signIns.filter((s) => s.method === 'sms').length,
        smsSent: smsMessages.length,
        twilioRequests: twilio.requests,
        reportRows: rows.length,
        reportCatchUpMs,
        logFile: logPath,
      };
      const table = [
        '| phase | sign-ins | ok | failed | ok % | recovery ms | notes |',
        '|---|---|---|---|---|---|---|',
        ...figures.map((f) => {
          const notes = [
            Object.keys(f.failures as object).length ? `failures ${JSON.stringify(f.failures)}` : '',
            f.instanceRestartMs !== undefined ? `instance ready again after ${String(f.instanceRestartMs)} ms` : '',
            f.outageMs !== undefined ? `outage ${String(f.outageMs)} ms` : '',
            f.afterRecovery ? `after recovery ${(f.afterRecovery as { ok: number }).ok}/${(f.afterRecovery as { signIns: number }).signIns} ok` : '',
            f.reportRecoveryMs !== undefined ? `report recovered after ${String(f.reportRecoveryMs)} ms` : '',
          ].filter(Boolean);
          return `| ${String(f.phase)} | ${String(f.signIns)} | ${String(f.ok)} | ${String(f.failed)} | ${String(f.okPercent)} | ${f.recoveryMs === undefined ? '' : String(f.recoveryMs)} | ${notes.join('; ')} |`;
        }),
      ];
      await writeFile(figuresPath, JSON.stringify({ summary, phases: figures, signIns }, null, 1));
      process.stdout.write(`${table.map((l) => `# ${l}`).join('\n')}\n# ${JSON.stringify(summary)}\n# figures: ${figuresPath}\n`);

      // ---- checks -------------------------------------------------------------------------------
      // Every failed check is listed, with evidence, before the test fails.
      const failedChecks: string[] = [];
      const check = (ok: boolean, message: () => string) => {
        if (!ok) failedChecks.push(message());
      };
      const logsBetween = (from: number, to: number) =>
        problemsLogged
          .filter((p) => p.at >= from && p.at <= to)
          .slice(0, 8)
          .map((p) => `[${p.service}] ${p.line.slice(0, 400)}`)
          .join('\n    ');

      for (const [i, phase] of phases.entries()) {
        const f = figures[i]!;
        const total = f.signIns as number;
        if (phase.kind === 'baseline' || phase.kind === 'instance' || (phase.kind === 'dependency-down' && phase.dependency === 'postgres')) {
          check(total >= 20, () => `${phase.name}: only ${total} sign-ins, too few to judge`);
          check((f.ok as number) >= MIN_SUCCESS * total, () => `${phase.name}: ${String(f.ok)}/${total} sign-ins ok (< 95 %), failures ${JSON.stringify(f.failures)}\n    ${logsBetween(phase.from, phase.to!)}`);
        }
        if (phase.kind === 'dependency-up') {
          const bound = RECOVERY_BOUND_MS[phase.dependency!];
          check(f.recoveryMs !== null && (f.recoveryMs as number) <= bound, () =>
            `${phase.name}: new sign-ins did not succeed within ${bound} ms of the restart (recovery ${String(f.recoveryMs)} ms), failures ${JSON.stringify(f.failures)}\n    ${logsBetween(phase.restartedAt!, phase.to!)}`,
          );
          const steady = f.afterRecovery as { signIns: number; ok: number };
          check(steady.ok >= MIN_SUCCESS * steady.signIns, () => `${phase.name}: once recovered, only ${steady.ok}/${steady.signIns} sign-ins ok\n    ${logsBetween(phase.restartedAt!, phase.to!)}`);
          if (phase.dependency === 'postgres') {
            check(phase.reportRecoveryMs !== null && phase.reportRecoveryMs! <= REPORT_RECOVERY_BOUND_MS, () => `${phase.name}: a sign-in approved after the restart was not in the report within ${REPORT_RECOVERY_BOUND_MS} ms (${String(phase.reportRecoveryMs)})`);
          }
        }
      }

      check(streamChecks.length === 3, () => 'JetStream: the stream state around the NATS restart was not read');
      for (const problem of streamChecks.filter(Boolean)) check(false, () => problem);

      const byId = new Map<string, SigninItem[]>();
      for (const row of rows) byId.set(row.challengeId, [...(byId.get(row.challengeId) ?? []), row]);
      const duplicates = [...byId].filter(([, list]) => list.length > 1);
      check(duplicates.length === 0, () => `report: ${duplicates.length} challenges have more than one row, e.g. ${JSON.stringify(duplicates.slice(0, 3))}`);
      const describeSignIn = (s: SignIn) => `${s.challengeId} (${s.method}, ${s.phase}, started ${new Date(s.at).toISOString()}, ${s.ok ? 'approved' : s.failure})`;
      const approved = signIns.filter((s) => s.ok);
      const approvedMissing = approved.filter((s) => !byId.has(s.challengeId!));
      check(approvedMissing.length === 0, () => `report: ${approvedMissing.length} sign-ins approved at the IdP are missing, e.g. ${approvedMissing.slice(0, 5).map(describeSignIn).join(', ')}`);
      const approvedNotSuccess = approved.filter((s) => byId.get(s.challengeId!)?.some((r) => r.result !== 'success'));
      check(approvedNotSuccess.length === 0, () =>
        `report: ${approvedNotSuccess.length} sign-ins approved at the IdP are reported as failures, e.g. ${approvedNotSuccess
          .slice(0, 5)
          .map((s) => `${describeSignIn(s)} → ${byId.get(s.challengeId!)![0]!.resultDetail}`)
          .join(', ')}`,
      );
      const startedMissing = started.filter((s) => !byId.has(s.challengeId!));
      check(startedMissing.length === 0, () => `report: ${startedMissing.length} started challenges are missing, e.g. ${startedMissing.slice(0, 5).map(describeSignIn).join(', ')}`);
      const neverVerifiedSuccess = started.filter((s) => !s.verified && byId.get(s.challengeId!)?.some((r) => r.result === 'success'));
      check(neverVerifiedSuccess.length === 0, () => `report: ${neverVerifiedSuccess.length} challenges never verified are reported as successes, e.g. ${neverVerifiedSuccess.slice(0, 5).map(describeSignIn).join(', ')}`);
      check(duplicateSms.length === 0, () => {
        const examples = duplicateSms.slice(0, 5).map(([key]) => {
          const [to, code] = key.split(' ');
          const owner = signIns.find((s) => s.codes.includes(code!) && smsUsers.some((u) => u.phone === to && u.userId === s.userId));
          const times = smsMessages.filter((m) => m.to === to && FakeTwilio.codeOf(m) === code).map((m) => m.receivedAt.toISOString());
          const lines = owner
            ? allLines.filter((l) => l.line.includes(owner.challengeId!)).map((l) => `[${l.service}] ${l.line.slice(0, 300)}`)
            : [];
          const during = phases.filter((p) => times.some((t) => Date.parse(t) >= p.from && Date.parse(t) <= (p.to ?? Infinity))).map((p) => p.name);
          return `${to} received one code ${times.length} times at ${times.join(', ')} (phases: ${during.join(' → ')})${owner ? ` for challenge ${describeSignIn(owner)}` : ''}\n    ${lines.join('\n    ')}`;
        });
        return `SMS: ${duplicateSms.length} codes were sent more than once: ${examples.join('; ')}`;
      });
      check(smsMessages.length <= summary.smsStartsAttempted, () => `SMS: ${smsMessages.length} sent for ${summary.smsStartsAttempted} SMS starts`);

      assert.deepEqual(failedChecks, [], `fault injection found problems (services' log: ${logPath}; figures: ${figuresPath})`);
    },
    { timeout: 600_000 },
  );
});

/** A request that got no reply: the IdP's view (timeout, no responders, connection closed, …). */
function transportError(error: unknown): string {
  const chain: Error[] = [];
  for (let e: unknown = error; e instanceof Error && chain.length < 3; e = e.cause) chain.push(e);
  const named = (name: string) => chain.some((e) => e.name === name || e.constructor.name === name);
  if (chain.some((e) => (e as { isNoResponders?: () => boolean }).isNoResponders?.() === true) || named('NoRespondersError')) return 'no_responders';
  if (named('TimeoutError')) return 'timeout';
  return chain.length ? `${chain[0]!.name}(${chain.at(-1)!.message.slice(0, 60)})` : 'error';
}
