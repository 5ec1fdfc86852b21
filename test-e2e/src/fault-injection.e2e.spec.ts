import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Streams, Subjects, type SigninItem } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import {
  FakeTwilio,
  itWith,
  CORE_SERVICE_NAMES,
  eventually,
  startNatsServer,
  startPostgresServer,
  startRedisServer,
  startStack,
  uniqueTenant,
  type NatsServerProcess,
  type PostgresServerProcess,
  type RedisServerProcess,
  type Stack,
} from '@mfa/testing';
import { registerLoadUsers, ServiceLines, SignInLoad, type FigureRow, type Phase, type Reply, type SmsUser, type TotpUser } from './load/sign-ins.js';

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

type Dependency = keyof typeof RECOVERY_BOUND_MS;
/** What the test records about a phase (Phase.notes). */
interface Notes {
  dependency?: Dependency;
  /** dependency-up: when the restarted server answered again. */
  restartedAt?: number;
  /** instance: how long the instance took to be ready again. */
  restartMs?: number;
  /** dependency-up: how long the dependency was away. */
  outageMs?: number;
  reportRecoveryMs?: number | null;
  /**
   * dependency-up, Redis: when user-settings logged the user projection rebuilt. Until then a
   * user not projected yet is answered `unavailable` (by design), for as long as the rebuild
   * takes on the machine's load.
   */
  projectionRebuiltAt?: number;
}

describe('fault injection: sign-ins while instances, NATS, Redis and Postgres are killed', () => {
  const twilio = new FakeTwilio();
  let nats: NatsServerProcess | undefined;
  let redis: RedisServerProcess | undefined;
  let pg: PostgresServerProcess | undefined;
  let stack: Stack | undefined;
  let nc: NatsConnection | undefined;
  const tenantId = uniqueTenant('fault');
  const lines = new ServiceLines('fault-injection');
  let totpUsers: TotpUser[] = [];
  let smsUsers: SmsUser[] = [];

  const ask = (subject: string, body: unknown, timeoutMs = 10_000) => requestJson<Reply>(nc!, subject, body, { timeoutMs });

  before(
    async () => {
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
        onLine: lines.onLine,
        readyTimeoutMs: 120_000,
      });
      nc = await connectClient({ servers: nats.url, name: 'e2e-fault-idp', maxReconnectAttempts: -1, reconnectTimeWait: 250 });
      const configured = await ask(Subjects.tenantsConfigure, {
        tenantId,
        settings: { codeLifetimeSeconds: CODE_LIFETIME_S, lockout: { threshold: 100 } },
      });
      assert.equal(configured.error, undefined, JSON.stringify(configured));

      ({ totpUsers, smsUsers } = await registerLoadUsers(ask, tenantId, RATE));
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
        ['log', () => lines.close()],
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
      const load = new SignInLoad(
        { nc: () => nc!, tenantId, twilio, rate: RATE, requestTimeoutMs: REQUEST_TIMEOUT_MS, smsWaitMs: SMS_WAIT_MS, codeLifetimeS: CODE_LIFETIME_S, application: 'fault-injection' },
        totpUsers,
        smsUsers,
      );
      const { signIns, phases } = load;
      const enter = (name: string, kind: string, notes: Notes = {}) => load.enter(name, kind, notes as Record<string, unknown>);
      const notesOf = (phase: Phase) => phase.notes as Notes;
      const streamChecks: string[] = [];
      const reportRecovery = (since: number) => load.reportRecovery(since, REPORT_RECOVERY_BOUND_MS);
      load.start();

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
          notesOf(phase).restartMs = Date.now() - restarting;
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
          await load.waitRecovered(restartedAt, RECOVERY_BOUND_MS[dependency]);
          if (dependency === 'redis') {
            const rebuilt = async () => lines.firstAt('"msg":"user projection rebuilt"', restartedAt);
            const left = Math.max(200, restartedAt + RECOVERY_BOUND_MS.redis - Date.now());
            notesOf(up).projectionRebuiltAt = await eventually(rebuilt, left, 'the user projection rebuilt').catch(() => undefined);
          }
          await sleep(OBSERVE_AFTER_RECOVERY_MS);
          // A gap before the next fault, so no sign-in of this phase is still running into it.
          if (reportProbe) notesOf(up).reportRecoveryMs = await reportProbe;
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
        await load.stop();
      }


      // ---- the report -------------------------------------------------------------------------
      // Failed challenges appear once expired: wait for the last one, then for the projection.
      const lastStart = Math.max(...signIns.map((s) => s.at));
      await sleep(Math.max(0, lastStart + CODE_LIFETIME_S * 1000 + 2_000 - Date.now()));
      const started = signIns.filter((s) => s.challengeId);
      let rows: SigninItem[] = [];
      const catchUpStart = Date.now();
      for (;;) {
        rows = await load.readReport(new Date(testStart).toISOString()).catch(() => rows);
        const ids = new Set(rows.map((r) => r.challengeId));
        if (started.every((s) => ids.has(s.challengeId!)) || Date.now() - catchUpStart > REPORT_CATCH_UP_MS) break;
        await sleep(1_000);
      }
      const reportCatchUpMs = Date.now() - catchUpStart;

      // ---- figures ------------------------------------------------------------------------------
      const figures = phases.map((phase) => {
        const mine = signIns.filter((s) => s.phase === phase.name);
        const notes = notesOf(phase);
        const row: FigureRow & { kind: string; seconds: number; afterRecovery?: { signIns: number; ok: number } } = {
          ...load.summarize(phase),
          kind: phase.kind,
          seconds: Math.round(((phase.to ?? Date.now()) - phase.from) / 100) / 10,
          notes: [],
        };
        if (notes.restartMs !== undefined) row.notes.push(`instance ready again after ${notes.restartMs} ms`);
        if (phase.kind === 'dependency-up') {
          const first = load.firstOkAfter(notes.restartedAt!);
          row.recoveryMs = first ? first.end! - notes.restartedAt! : null;
          // Sign-ins started once recovered (after the first success ended and, Redis back empty,
          // after the user projection was rebuilt): the steady state.
          const recovered = first ? Math.max(first.end!, notes.projectionRebuiltAt ?? 0) : undefined;
          const steady = recovered !== undefined ? mine.filter((s) => s.at >= recovered) : [];
          row.afterRecovery = { signIns: steady.length, ok: steady.filter((s) => s.ok).length };
          row.notes.push(`outage ${notes.outageMs} ms`);
          if (notes.projectionRebuiltAt !== undefined) row.notes.push(`user projection rebuilt ${notes.projectionRebuiltAt - notes.restartedAt!} ms after the restart`);
          row.notes.push(`after recovery ${row.afterRecovery.ok}/${row.afterRecovery.signIns} ok`);
          if (notes.reportRecoveryMs !== undefined) row.notes.push(`report recovered after ${String(notes.reportRecoveryMs)} ms`);
        }
        return row;
      });
      const summary = { ...load.summary(testStart), reportRows: rows.length, reportCatchUpMs };
      await lines.printFigures(figures, summary, signIns);

      // ---- checks -------------------------------------------------------------------------------
      // Every failed check is listed, with evidence, before the test fails.
      const failedChecks: string[] = [];
      const check = (ok: boolean, message: () => string) => {
        if (!ok) failedChecks.push(message());
      };
      const logsBetween = (from: number, to: number) => lines.problemsBetween(from, to);

      for (const [i, phase] of phases.entries()) {
        const f = figures[i]!;
        const total = f.signIns;
        const notes = notesOf(phase);
        if (phase.kind === 'baseline' || phase.kind === 'instance' || (phase.kind === 'dependency-down' && notesOf(phase).dependency === 'postgres')) {
          check(total >= 20, () => `${phase.name}: only ${total} sign-ins, too few to judge`);
          check(f.ok >= MIN_SUCCESS * total, () => `${phase.name}: ${String(f.ok)}/${total} sign-ins ok (< 95 %), failures ${JSON.stringify(f.failures)}\n    ${logsBetween(phase.from, phase.to!)}`);
        }
        if (phase.kind === 'dependency-up') {
          const bound = RECOVERY_BOUND_MS[notes.dependency!];
          check(f.recoveryMs !== null && f.recoveryMs! <= bound, () =>
            `${phase.name}: new sign-ins did not succeed within ${bound} ms of the restart (recovery ${String(f.recoveryMs)} ms), failures ${JSON.stringify(f.failures)}\n    ${logsBetween(notes.restartedAt!, phase.to!)}`,
          );
          if (notes.dependency === 'redis') {
            check(notes.projectionRebuiltAt !== undefined, () => `${phase.name}: the user projection was not rebuilt within ${bound} ms of the restart\n    ${logsBetween(notes.restartedAt!, phase.to!)}`);
          }
          const steady = f.afterRecovery!;
          check(steady.signIns >= 20, () => `${phase.name}: only ${steady.signIns} sign-ins once recovered, too few to judge`);
          check(steady.ok >= MIN_SUCCESS * steady.signIns, () => `${phase.name}: once recovered, only ${steady.ok}/${steady.signIns} sign-ins ok\n    ${logsBetween(notes.restartedAt!, phase.to!)}`);
          if (notes.dependency === 'postgres') {
            check(notes.reportRecoveryMs !== null && notes.reportRecoveryMs! <= REPORT_RECOVERY_BOUND_MS, () => `${phase.name}: a sign-in approved after the restart was not in the report within ${REPORT_RECOVERY_BOUND_MS} ms (${String(notes.reportRecoveryMs)})`);
          }
        }
      }

      check(streamChecks.length === 3, () => 'JetStream: the stream state around the NATS restart was not read');
      for (const problem of streamChecks.filter(Boolean)) check(false, () => problem);

      load.checkReport(rows, (problem) => failedChecks.push(problem), {
        allStarted: true,
        linesOf: (challengeId) => lines.about(challengeId),
      });

      assert.deepEqual(failedChecks, [], `fault injection found problems (services' log: ${lines.logPath}; figures: ${lines.figuresPath})`);
    },
    { timeout: 600_000 },
  );
});
