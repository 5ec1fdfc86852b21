import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe } from 'node:test';
import { Redis } from 'ioredis';
import type { JsMsg } from '@nats-io/jetstream';
import { EventSubjects, parseEvent, Streams, Subjects } from '@mfa/contracts';
import { connectNats, EventPublisher, PoisonMessageError, requestJson, type NatsClients } from '@mfa/messaging';
import { PROJECTION_LAYOUT, RedisKeys, UserFields, UserProjectionWriter } from '@mfa/projection';
import { runService, UserDataKeys, type RunningService } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { itWith, testEnv, uniqueTenant, uniqueUser } from '@mfa/testing';
import { EventStore } from './adapters/event-store.js';
import { SnapshotStore } from './adapters/snapshot-store.js';
import { AppModule } from './app.module.js';
import type { OathTokensService } from './application/oath-tokens.service.js';
import { ProjectionRecovery } from './application/projection-recovery.js';
import { UserProjector } from './application/user-projector.js';
import { loadUserSettingsConfig, type UserSettingsConfig } from './config.js';

process.env.LOG_LEVEL ??= 'error';

/**
 * The rebuild of a Redis that lost the projection, run by hand into a database of its own (14),
 * from the shared event log: the users registered here (through a running service, on the shared
 * database) and every other user the log holds. One of them has an event whose data key
 * generation MFA_USER_KEYS does not hold (the key stream restored from an older backup): that
 * user must not keep the others out of Redis for good.
 */
const DB = 14;

interface LogLine {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}

function recordingLogger(lines: LogLine[]): Logger {
  const write = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, fields: { ...fields } });
  const log: Logger = { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error'), child: () => log };
  return log;
}

let service: RunningService;
let config: UserSettingsConfig;
let nats: NatsClients;
let redis: Redis;

before(async () => {
  config = loadUserSettingsConfig({ ...process.env, HTTP_PORT: '0', NATS_URL: testEnv.natsUrl, REDIS_URL: testEnv.redisUrl });
  const log = recordingLogger([]);
  service = await runService({ name: 'user-settings', module: AppModule.forRoot(config, log), config, log });
  nats = await connectNats({ url: testEnv.natsUrl, name: 'projection-rebuild-int-test' });
  redis = new Redis(testEnv.redisUrl, { db: DB });
});

after(async () => {
  await service?.stop();
  await nats?.nc.close();
  redis?.disconnect();
});

describe('rebuilding the Redis projection', () => {
  const tenantId = uniqueTenant('rebuild');
  const good = uniqueUser('good');
  const broken = uniqueUser('broken');
  const request = <T>(subject: string, body: unknown) => requestJson<T>(nats.nc, subject, body, { timeoutMs: 10_000 });
  const lines: LogLine[] = [];
  let writer: UserProjectionWriter;
  let projector: UserProjector;
  let brokenSeq = 0;

  before(async () => {
    await request(Subjects.usersRegister, { tenantId, userId: good, displayName: 'Good User', phoneNumber: '+46701234567' });
    await request(Subjects.usersRegister, { tenantId, userId: broken, displayName: 'Broken User' });
    // A profile change sealed under a generation of the data key that MFA_USER_KEYS does not hold.
    const subject = EventSubjects.user(tenantId, broken);
    const registered = await nats.jsm.streams.getMessage(Streams.userSettings.name, { last_by_subj: subject });
    const pii = (parseEvent(registered!.json()).data as { pii: string }).pii;
    const parts = pii.split('.');
    parts[1] = '9';
    const id = randomUUID();
    const crafted = { id, type: 'UserProfileChanged', version: 2, tenantId, aggregateId: broken, occurredAt: new Date().toISOString(), metadata: {}, data: { pii: parts.join('.') } };
    brokenSeq = (await nats.js.publish(subject, JSON.stringify(crafted), { msgID: id })).seq;

    writer = new UserProjectionWriter(redis, config.keyring);
    const store = new EventStore(nats.jsm, new EventPublisher(nats.js), Streams.userSettings.name, recordingLogger(lines));
    projector = new UserProjector(store, writer, config.keyring, new UserDataKeys(nats, config.keyring), new SnapshotStore(nats.js, nats.jsm));
  });

  // The log is shared: other tests' rebuilds must not meet this user, whatever code they run.
  after(async () => {
    if (brokenSeq) await nats.jsm.streams.deleteMessage(Streams.userSettings.name, brokenSeq, false).catch(() => undefined);
  });

  itWith({ real: ['nats', 'redis'] }, 'the live projector dead-letters a user whose data key is missing at once', async () => {
    const event = parseEvent((await nats.jsm.streams.getMessage(Streams.userSettings.name, { seq: brokenSeq }))!.json());
    const msg = { subject: EventSubjects.user(tenantId, broken), info: { streamSequence: brokenSeq } } as unknown as JsMsg;
    await assert.rejects(projector.handle([{ event, msg }]), (error: unknown) => {
      assert.ok(error instanceof PoisonMessageError, String(error));
      assert.match(error.message, /data key \(generation 9\) of a user event is missing/);
      return true;
    });
  });

  itWith(
    { real: ['nats', 'redis'] },
    'skips (logs and counts) a user whose data key is missing, completes, and rewrites users projected in an older layout',
    async () => {
      await redis.del(RedisKeys.userProjectionMarker);
      // The good user as a layout before v6 left them: same sequence, no layout, no phone country.
      await projector.rebuild(tenantId, good);
      const goodKey = RedisKeys.user(writer.tagOf(tenantId, good));
      await redis.hdel(goodKey, UserFields.layout, UserFields.phoneCountry);
      const seq = await redis.hget(goodKey, UserFields.seq);

      const recovery = new ProjectionRecovery(nats, redis, writer, projector, { reindex: async () => undefined } as unknown as OathTokensService, recordingLogger(lines));
      await recovery.check();

      assert.deepEqual(lines.filter((l) => l.msg === 'rebuilding the user projection failed; retrying'), [], 'the rebuild did not fail');
      assert.equal(await redis.exists(RedisKeys.userProjectionMarker), 1, 'the projection is marked complete');
      assert.deepEqual(await redis.hmget(goodKey, UserFields.seq, UserFields.phoneCountry, UserFields.layout), [seq, 'SE', String(PROJECTION_LAYOUT)]);
      assert.equal(await redis.exists(RedisKeys.user(writer.tagOf(tenantId, broken))), 0);
      const skipped = lines.filter((l) => l.msg === 'a user cannot be projected: skipped by the rebuild' && l.fields.subject === EventSubjects.user(tenantId, broken));
      assert.equal(skipped.length, 1);
      assert.equal(skipped[0]!.level, 'error');
      assert.match(String((skipped[0]!.fields.error as { message: string }).message), /generation 9/);
      const done = lines.find((l) => l.msg === 'user projection rebuilt');
      assert.ok(done && Number(done.fields.skippedUsers) >= 1, JSON.stringify(done?.fields));
      // The slots' steps markers were written before the users.
      assert.equal(await redis.exists(RedisKeys.slotStepsMarker(writer.tagOf(tenantId, good))), 1);
    },
    { timeout: 120_000 },
  );
});
