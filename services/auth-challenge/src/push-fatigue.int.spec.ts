import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { defaultTenantSettings, EventSubjects, Subjects } from '@mfa/contracts';
import { loadKeyring, userTag } from '@mfa/crypto';
import { EventPublisher, requestJson } from '@mfa/messaging';
import { RedisKeys, UserProjectionWriter } from '@mfa/projection';
import { registry } from '@mfa/telemetry';
import { eventually, itWith, tenantCreated, testEnv, testTenant, uniqueTenant, uniqueUser } from '@mfa/testing';
import { boot } from './boot.js';
import { loadAuthChallengeConfig } from './config.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

/** PUSH_* at their defaults: 3 refusals in 900 s suspend push for 3,600 s. */
describe('auth-challenge: push suspended by MFA fatigue, for a start without a method (docs/api.md, Throttling)', () => {
  const { keyring } = loadKeyring({});
  const tenant = uniqueTenant('push-fatigue');
  let service: Awaited<ReturnType<typeof boot>>;
  let nc: NatsConnection;
  let redis: Redis;
  let writer: UserProjectionWriter;
  let seq = 1;
  const ask = (subject: string, body: unknown) => requestJson<Reply>(nc, subject, body, { timeoutMs: 5000 });

  before(async () => {
    service = await boot(loadAuthChallengeConfig({ ...process.env, HTTP_PORT: '0', LOG_LEVEL: 'error', NODE_ENV: 'test' }));
    nc = await connect({ servers: testEnv.natsUrl });
    redis = new Redis(testEnv.redisUrl);
    writer = new UserProjectionWriter(redis, keyring);
    // Users are seeded straight into Redis here: declare the projection complete.
    await writer.markComplete();
    const settings = { ...defaultTenantSettings(), enabledMethods: ['push' as const, 'totp' as const] };
    await new EventPublisher(jetstream(nc)).publish(EventSubjects.tenant(tenant), tenantCreated(testTenant({ tenantId: tenant, settings })));
  });

  after(async () => {
    await service.stop();
    await nc.drain();
    await redis.quit();
  });

  /** A user whose default is push; with a TOTP token too unless `pushOnly`. Returns the user's tag. */
  async function projectUser(userId: string, pushOnly = false) {
    await writer.apply({
      tenantId: tenant,
      userId,
      seq: seq++,
      methods: pushOnly ? ['push'] : ['push', 'totp'],
      defaultMethod: 'push',
      totpTokens: pushOnly ? [] : [{ tokenId: 'app', secret: randomBytes(20), digits: 6, period: 30, activatedStep: 0 }],
    });
    return userTag(keyring, tenant, userId);
  }

  const fatigue = async () => {
    const values = (await registry.getSingleMetric('mfa_push_fatigue_total')?.get())?.values ?? [];
    return Object.fromEntries(values.map((v) => [v.labels.event, v.value])) as Record<string, number | undefined>;
  };

  itWith({ real: ['nats', 'redis'] }, 'the start that reaches the refusals suspends push and takes the user’s next method; push then stays suspended for PUSH_SUSPEND_SECONDS', async () => {
    const user = uniqueUser('fatigued');
    const tag = await projectUser(user);
    const now = Date.now();
    // Three pushes refused (denied, or answered with a wrong number) in the window, none waiting.
    for (let n = 0; n < 3; n++) await redis.zadd(RedisKeys.pushRefusals(tag), now - 60_000 + n, `refused-${n}`);
    const before = await fatigue();
    const byDefault = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user });
      return reply.status === undefined ? undefined : reply;
    }, 5000, 'the tenant known');
    assert.deepEqual([byDefault.status, byDefault.method, byDefault.reason], ['pending', 'totp', undefined], 'a start without a method takes the next method, not push_suspended');
    const after = await fatigue();
    assert.equal((after.suspended ?? 0) - (before.suspended ?? 0), 1, 'the user whose push was suspended now is counted once');
    const left = await redis.pttl(RedisKeys.pushSuspended(tag));
    assert.ok(left > 3_500_000 && left <= 3_600_000, `push suspended for PUSH_SUSPEND_SECONDS from this start (${left} ms left)`);
    // In force now: a start naming push is denied, one without a method still takes TOTP.
    const named = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'push' });
    assert.deepEqual([named.status, named.reason], ['denied', 'push_suspended']);
    const again = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user });
    assert.deepEqual([again.status, again.method], ['pending', 'totp']);
    assert.equal((await fatigue()).suspended, after.suspended, 'a suspension in force is not counted again');
  });

  itWith({ real: ['nats', 'redis'] }, 'a push that expired unanswered counts as ignored at a start without a method too', async () => {
    const user = uniqueUser('ignoring');
    const tag = await projectUser(user);
    const now = Date.now();
    for (let n = 0; n < 2; n++) await redis.zadd(RedisKeys.pushRefusals(tag), now - 60_000 + n, `refused-${n}`);
    // The third: a push that waited for the user and ended unanswered a moment ago.
    await redis.set(RedisKeys.pendingPush(tag), `ignored-push|${now - 1000}`, 'PX', 60_000);
    const byDefault = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user });
      return reply.status === undefined ? undefined : reply;
    }, 5000, 'the tenant known');
    assert.deepEqual([byDefault.status, byDefault.method], ['pending', 'totp']);
    assert.ok(Number(await redis.get(RedisKeys.pushSuspended(tag))) > now, 'push suspended');
    assert.equal(await redis.exists(RedisKeys.pendingPush(tag)), 0, 'the ignored push no longer waits');
  });

  itWith({ real: ['nats', 'redis'] }, 'push the only method: the start that reaches the refusals is denied push_suspended, counted as suspended now', async () => {
    const user = uniqueUser('push-only');
    const tag = await projectUser(user, true);
    for (let n = 0; n < 3; n++) await redis.zadd(RedisKeys.pushRefusals(tag), Date.now() - 60_000 + n, `refused-${n}`);
    const before = await fatigue();
    const only = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user });
      return reply.status === undefined ? undefined : reply;
    }, 5000, 'the tenant known');
    assert.deepEqual([only.status, only.reason], ['denied', 'push_suspended']);
    const after = await fatigue();
    assert.deepEqual([(after.suspended ?? 0) - (before.suspended ?? 0), (after.refused_suspended ?? 0) - (before.refused_suspended ?? 0)], [1, 0]);
  });

  itWith({ real: ['nats', 'redis'] }, 'the start that reaches the refusals on its way to SMS, which a throttle refuses: rate_limited, push suspended all the same, and counted', async () => {
    // A tenant with push and SMS: the user's fallback after push is SMS, whose own window is full.
    const smsTenant = uniqueTenant('push-fatigue-sms');
    const settings = { ...defaultTenantSettings(), enabledMethods: ['push' as const, 'sms' as const] };
    await new EventPublisher(jetstream(nc)).publish(EventSubjects.tenant(smsTenant), tenantCreated(testTenant({ tenantId: smsTenant, settings })));
    const user = uniqueUser('throttled');
    await writer.apply({ tenantId: smsTenant, userId: user, seq: seq++, methods: ['push', 'sms'], defaultMethod: 'push', phoneNumber: '+46701234567', phoneCountry: 'SE', totpTokens: [] });
    const tag = userTag(keyring, smsTenant, user);
    const now = Date.now();
    for (let n = 0; n < 3; n++) await redis.zadd(RedisKeys.pushRefusals(tag), now - 60_000 + n, `refused-${n}`);
    for (let n = 0; n < 100; n++) await redis.zadd(RedisKeys.smsSends(tag), now - 1_000 + n, `sent-${n}`);
    await redis.pexpire(RedisKeys.smsSends(tag), 3_600_000);
    const before = await fatigue();
    const throttled = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: smsTenant, userId: user });
      return reply.error?.code === 'not_found' && /tenant/i.test(reply.error.message) ? undefined : reply;
    }, 5000, 'the tenant known');
    assert.equal(throttled.error?.code, 'rate_limited', JSON.stringify(throttled));
    assert.ok(Number(await redis.get(RedisKeys.pushSuspended(tag))) > now, 'push suspended: the refusals were there');
    const after = await fatigue();
    assert.equal((after.suspended ?? 0) - (before.suspended ?? 0), 1, 'the suspension is counted (PushFatigueCampaign sees it)');
  });

  itWith({ real: ['nats', 'redis'] }, 'a push pending when its user is reset, or erased, no longer holds the next push back', async () => {
    const user = uniqueUser('reset-pending');
    const snapshot = { tenantId: tenant, userId: user, methods: ['push', 'totp'], defaultMethod: 'push', validFrom: 1_000, totpTokens: [] };
    await writer.apply({ ...snapshot, seq: seq++ });
    const tag = userTag(keyring, tenant, user);
    const first = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'push' });
      return reply.status === undefined ? undefined : reply;
    }, 5000, 'the tenant known');
    assert.equal(first.status, 'pending');
    assert.equal((await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'push' })).error?.code, 'rate_limited', 'one push waits at a time');
    // The same user projected again without a reset keeps the push waiting.
    await writer.apply({ ...snapshot, seq: seq++ });
    assert.equal(await redis.exists(RedisKeys.pendingPush(tag)), 1, 'no reset: the push still waits');
    // users.reset: the user's methods begin anew, the pending push is void.
    await writer.apply({ ...snapshot, seq: seq++, validFrom: 2_000 });
    assert.equal(await redis.exists(RedisKeys.pendingPush(tag)), 0, 'the reset push no longer waits');
    const again = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'push' });
    assert.equal(again.status, 'pending', JSON.stringify(again));
    // users.delete: the same.
    assert.equal(await writer.erase(tenant, user, seq++), true);
    assert.equal(await redis.exists(RedisKeys.pendingPush(tag)), 0, 'erased: no push waits');
  });

  itWith({ real: ['nats', 'redis'] }, 'fewer refusals than the limit: a start without a method still pushes, with a number to show', async () => {
    const user = uniqueUser('pushed');
    const tag = await projectUser(user);
    for (let n = 0; n < 2; n++) await redis.zadd(RedisKeys.pushRefusals(tag), Date.now() - 60_000 + n, `refused-${n}`);
    const pushed = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user });
      return reply.status === undefined ? undefined : reply;
    }, 5000, 'the tenant known');
    assert.deepEqual([pushed.status, pushed.method], ['pending', 'push']);
    assert.match(String(pushed.numberMatch), /^[1-9]\d$/);
    assert.equal(await redis.exists(RedisKeys.pushSuspended(tag)), 0);
    // One push waits at a time, whatever the start names.
    const second = await ask(Subjects.challengeStart, { tenantId: tenant, userId: user, method: 'push' });
    assert.equal(second.error?.code, 'rate_limited');
  });
});
