import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe } from 'node:test';
import { Redis } from 'ioredis';
import {
  Consumers,
  EventSubjects,
  Headers,
  Streams,
  Subjects,
  type TenantsConfigureReply,
  type TotpActivateReply,
  type TotpEnrollReply,
} from '@mfa/contracts';
import { base32Decode, totp, userTag } from '@mfa/crypto';
import { connectNats, requestJson, type NatsClients } from '@mfa/messaging';
import { RedisKeys } from '@mfa/projection';
import { runService, type RunningService } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { eventually, itWith, testEnv, uniqueTenant, uniqueUser } from '@mfa/testing';
import { AppModule } from './app.module.js';
import { loadUserSettingsConfig, type UserSettingsConfig } from './config.js';

// Events this code cannot read, appended to real aggregates by someone else (a newer release, a
// tool, an attacker with publish rights on mfa.evt.>): a type named after an Object prototype
// property and a type this release does not know. Neither may make the user or tenant unusable.

interface LogLine {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}

/** A logger that keeps what the service logs, so the test can read its error lines. */
function recordingLogger(lines: LogLine[], base: Record<string, unknown> = {}): Logger {
  const write = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, fields: { ...base, ...fields } });
  return {
    debug: write('debug'),
    info: write('info'),
    warn: write('warn'),
    error: write('error'),
    child: (fields) => recordingLogger(lines, { ...base, ...fields }),
  };
}

/** Lines the logger of the event store writes straight to stderr while `fn` runs. */
async function stderrDuring(fn: () => Promise<void>): Promise<string[]> {
  const captured: string[] = [];
  const original = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    captured.push(String(chunk));
    return (original as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  try {
    await fn();
  } finally {
    process.stderr.write = original;
  }
  return captured.join('').split('\n').filter(Boolean);
}

let service: RunningService;
let config: UserSettingsConfig;
let nats: NatsClients;
let redis: Redis;
const serviceLog: LogLine[] = [];

const request = <T>(subject: string, body: unknown) => requestJson<T>(nats.nc, subject, body, { timeoutMs: 10_000 });

/** A well-formed envelope whose only fault is its type. */
const rawEvent = (type: string, tenantId: string, aggregateId: string) => ({
  id: randomUUID(),
  type,
  version: 1,
  tenantId,
  aggregateId,
  occurredAt: new Date().toISOString(),
  metadata: {},
  data: { userId: aggregateId, displayName: 'not a real event' },
});

async function appendRaw(subject: string, event: ReturnType<typeof rawEvent>): Promise<number> {
  const ack = await nats.js.publish(subject, JSON.stringify(event), { msgID: event.id });
  return ack.seq;
}

/** Dead letters of the projector that came from `subject`: their original sequence and reason. */
async function projectorDeadLetters(subject: string): Promise<Array<{ seq: number; reason: string }>> {
  const out: Array<{ seq: number; reason: string }> = [];
  for (let seq = 1; ; ) {
    const msg = await nats.jsm.direct.getMessage(Streams.deadLetters.name, {
      seq,
      next_by_subj: EventSubjects.deadLetter(Consumers.userProjector.durable),
    });
    if (!msg) return out;
    if (msg.header?.get(Headers.deadLetterSubject) === subject) {
      out.push({ seq: Number(msg.header.get(Headers.deadLetterSequence)), reason: msg.header.get(Headers.deadLetterReason) });
    }
    seq = msg.seq + 1;
  }
}

before(async () => {
  config = loadUserSettingsConfig({ ...process.env, HTTP_PORT: '0', NATS_URL: testEnv.natsUrl, REDIS_URL: testEnv.redisUrl });
  const log = recordingLogger(serviceLog);
  service = await runService({ name: 'user-settings', module: AppModule.forRoot(config, log), config, log });
  nats = await connectNats({ url: testEnv.natsUrl, name: 'unreadable-events-int-test' });
  redis = new Redis(testEnv.redisUrl);
  // A spec before this one may have left the shared Redis without the projection's marker: the
  // service then rebuilds the whole projection from the shared log, beside the projector. These
  // tests count what the projector alone does with one user's events, so they start once the
  // projection is complete. (A CI run in which they did not, the rebuild running, counted 6 dead
  // letters of the user's subject instead of its 2 unreadable events; which the other 4 were, the
  // rebuild reading the same events, is not established.)
  await eventually(async () => ((await redis.exists(RedisKeys.userProjectionMarker)) === 1 ? true : undefined), 180_000, 'the user projection complete');
});

after(async () => {
  await service?.stop();
  await nats?.nc.close();
  redis?.disconnect();
});

describe('events user-settings cannot read, in real aggregates', () => {
  itWith({ real: ['nats', 'redis'] }, 'leave the user usable: register and TOTP enrol/activate work, the projector dead-letters only them', async () => {
    const tenantId = uniqueTenant('unread');
    const userId = uniqueUser('helga');
    const subject = EventSubjects.user(tenantId, userId);
    assert.deepEqual(await request(Subjects.usersRegister, { tenantId, userId, phoneNumber: '+46701234567' }), { userId, methods: ['sms', 'voice'] });

    const constructorSeq = await appendRaw(subject, rawEvent('constructor', tenantId, userId));
    const unknownSeq = await appendRaw(subject, rawEvent('UserRenamed', tenantId, userId));

    let enrollment: TotpEnrollReply | undefined;
    const stderr = await stderrDuring(async () => {
      // The unreadable events are the aggregate's last: the append after them must expect them.
      assert.deepEqual(await request(Subjects.usersRegister, { tenantId, userId, displayName: 'Helga Nordin' }), { userId, methods: ['sms', 'voice'] });
      enrollment = await request<TotpEnrollReply>(Subjects.totpEnroll, { tenantId, userId });
      assert.match(enrollment.secret ?? '', /^[A-Z2-7]{32}$/, JSON.stringify(enrollment));
      const code = totp(base32Decode(enrollment.secret), Date.now());
      assert.deepEqual(await request<TotpActivateReply>(Subjects.totpActivate, { tenantId, userId, tokenId: enrollment.tokenId, code }), {
        tokenId: enrollment.tokenId,
        active: true,
      });
    });

    // Logged by the service's own logger (with its instance field), at error level.
    const skipped = [...serviceLog, ...stderr.map((line) => {
      const parsed = JSON.parse(line) as { level: string; msg: string } & Record<string, unknown>;
      return { level: parsed.level, msg: parsed.msg, fields: parsed };
    })]
      .filter((line) => line.msg === 'unreadable event skipped while loading an aggregate' && line.fields?.subject === subject)
      .map((line) => ({ level: line.level, seq: line.fields?.seq, error: line.fields?.error as { message?: string } | undefined }));
    assert.ok(skipped.length > 0 && skipped.every((line) => line.level === 'error'));
    assert.ok(skipped.some((line) => line.seq === constructorSeq && /unknown event type "constructor"/.test(line.error?.message ?? '')));
    assert.ok(skipped.some((line) => line.seq === unknownSeq && /unknown event type "UserRenamed"/.test(line.error?.message ?? '')));

    // The durable projector dead-letters the two unreadable events, and only them: the user's
    // later events are still projected (it reloads the aggregate for each of them).
    const dead = await eventually(
      async () => {
        const letters = await projectorDeadLetters(subject);
        return letters.length >= 2 ? letters : undefined;
      },
      20_000,
      'the projector to dead-letter the unreadable events',
    );
    assert.deepEqual(
      dead.map((d) => [d.seq, d.reason]).sort(),
      [
        [constructorSeq, 'unparseable event: unknown event type "constructor"'],
        [unknownSeq, 'unparseable event: unknown event type "UserRenamed"'],
      ].sort(),
    );
    const logged = serviceLog.filter((l) => l.level === 'error' && l.msg === 'message dead-lettered' && l.fields.subject === subject);
    assert.deepEqual(logged.map((l) => l.fields.sequence).sort(), [constructorSeq, unknownSeq].sort());
    await eventually(async () => {
      const info = await nats.jsm.consumers.info(Consumers.userProjector.stream, Consumers.userProjector.durable);
      return info.num_pending === 0 && info.num_ack_pending === 0 ? true : undefined;
    }, 20_000);
    const letters = await projectorDeadLetters(subject);
    assert.equal(letters.length, 2, `no readable event of the user was dead-lettered: ${JSON.stringify(letters)}`);
    const user = await redis.hgetall(RedisKeys.user(userTag(config.keyring, tenantId, userId)));
    assert.equal(user.displayName, 'Helga Nordin');
    assert.equal(user.methods, 'totp,sms,voice');
  });

  itWith({ real: ['nats', 'redis'] }, 'leave the tenant usable: tenants.configure and registering its users work', async () => {
    const tenantId = uniqueTenant('unread');
    await request(Subjects.tenantsConfigure, { tenantId, settings: {} });
    await appendRaw(EventSubjects.tenant(tenantId), rawEvent('__proto__', tenantId, tenantId));
    await appendRaw(EventSubjects.tenant(tenantId), rawEvent('hasOwnProperty', tenantId, tenantId));
    const reply = await request<TenantsConfigureReply>(Subjects.tenantsConfigure, { tenantId, settings: { maxAttempts: 3 } });
    assert.equal(reply.settings?.maxAttempts, 3, JSON.stringify(reply));
    const userId = uniqueUser('sven');
    assert.deepEqual(await request(Subjects.usersRegister, { tenantId, userId }), { userId, methods: [] });
  });
});
