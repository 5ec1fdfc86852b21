import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { NatsConnection } from '@nats-io/transport-node';
import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, parseEvent, Streams, Subjects, type AnyEvent, type AuditItem, type SigninItem } from '@mfa/contracts';
import {
  dataKeyGeneration,
  loadKeyring,
  openWithDataKey,
  PersonalDataContext,
  unwrapDataKey,
  userTag,
  type DataKey,
  type PersonalDataPurpose,
} from '@mfa/crypto';
import { connectClient, requestJson } from '@mfa/messaging';
import { eventually, FakeTwilio, itWith, startStack, testDatabaseUrl, testEnv, uniqueTenant, type Stack } from '@mfa/testing';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };
const wholeStack = ['nats', 'redis', 'postgres'] as const;

/**
 * users.delete end to end (crypto-shredding): a user with a phone, an e-mail address and a display
 * name signs in by SMS, is deleted, and afterwards none of that personal data is readable anywhere
 * — in the raw bytes of the event log, in the key store, in Redis, in the report — while the log
 * itself is left as it was. The services run as processes (MFA_AUTH=required: users.delete is an
 * admin subject), SMS go through a fake Twilio.
 */
describe('end to end: erasing a user (users.delete, crypto-shredding)', () => {
  const { keyring } = loadKeyring(process.env);
  const platformKey = randomBytes(36).toString('base64url');
  const twilio = new FakeTwilio();
  const tenantId = uniqueTenant('privacy');
  // Ids and values no other test uses, so a scan for them finds only this user's data.
  const run = randomBytes(4).toString('hex');
  const userId = `ingrid.${run}@fabrikam.example`;
  const personal = {
    displayName: `Ingrid Bergstrom ${run}`,
    email: `ingrid.bergstrom.${run}@mail.example`,
    phoneNumber: `+4670${String(randomInt(0, 10_000_000)).padStart(7, '0')}`,
  };
  const tag = userTag(keyring, tenantId, userId);
  const pseudonym = `erased:${tag.slice(0, 16)}`;
  const logLines: string[] = [];
  const startedAt = new Date();
  let stack: Stack;
  let nc: NatsConnection;
  let js: JetStreamClient;
  let jsm: JetStreamManager;
  let redis: Redis;
  let pool: pg.Pool;
  let adminKey = '';
  let idpKey = '';
  /** The key of generation 1, read before the erasure: what the erasure has to make unreachable. */
  let keyBefore: { gen: number; wrapped: string; dataKey: DataKey };
  let challengeId = '';

  const ask = (subject: string, body: unknown, key: string) =>
    requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000, headers: { Authorization: `Bearer ${key}` } });

  /** Whether any personal value appears in `bytes` in clear (as UTF-8 or JSON-escaped). */
  const personalIn = (bytes: Uint8Array | string) => {
    const text = typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8');
    return Object.values(personal).filter((v) => text.includes(v) || text.includes(JSON.stringify(v).slice(1, -1)));
  };

  /** Every message of a stream under `filter` since the test began, raw and parsed. */
  async function messages(stream: string, filter: string): Promise<Array<{ raw: Uint8Array; event: AnyEvent }>> {
    const consumer = await js.consumers.get(stream, { filter_subjects: filter, deliver_policy: DeliverPolicy.StartTime, opt_start_time: startedAt.toISOString() });
    const out: Array<{ raw: Uint8Array; event: AnyEvent }> = [];
    for (let pending = (await consumer.info()).num_pending; pending > 0; ) {
      const batch = await consumer.fetch({ max_messages: Math.min(pending, 500), expires: 5000 });
      const before = out.length;
      for await (const m of batch) {
        pending--;
        out.push({ raw: m.data, event: parseEvent(m.json()) });
      }
      if (out.length === before) break;
    }
    return out;
  }
  const ofTenant = <T extends { event: AnyEvent }>(list: T[]) => list.filter((m) => m.event.tenantId === tenantId);

  /** The one message of the user's data key subject. */
  async function keyRecord(): Promise<Record<string, unknown>> {
    const subject = EventSubjects.userDataKey(tag);
    const state = (await jsm.streams.info(Streams.userKeys.name, { subjects_filter: subject })).state;
    assert.deepEqual(Object.values(state.subjects ?? {}), [1], 'one message on the key subject');
    return (await jsm.streams.getMessage(Streams.userKeys.name, { last_by_subj: subject }))!.json();
  }

  const openPii = (dataKey: DataKey, purpose: PersonalDataPurpose, pii: string) =>
    JSON.parse(openWithDataKey(dataKey, pii, PersonalDataContext(purpose, tenantId, userId)).toString('utf8')) as Record<string, string>;
  const piiOf = (event: AnyEvent) => (event.data as { pii?: string }).pii;
  const purposeOf = (event: AnyEvent): PersonalDataPurpose => (event.type.startsWith('Challenge') ? 'challenge' : 'profile');

  before(async () => {
    await twilio.start();
    stack = await startStack({
      services: ['user-settings', 'auth-challenge', 'dispatch', 'reporting'],
      env: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'debug',
        MFA_AUTH: 'required',
        MFA_PLATFORM_API_KEY: platformKey,
        DATABASE_URL: testDatabaseUrl('mfa_e2e'),
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
        ...twilio.env(),
      },
      onLine: (service, line) => {
        logLines.push(line);
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: testEnv.natsUrl, name: 'e2e-privacy' });
    js = jetstream(nc);
    jsm = await jetstreamManager(nc);
    redis = new Redis(testEnv.redisUrl);
    pool = new pg.Pool({ connectionString: testDatabaseUrl('mfa_e2e'), max: 2 });
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: { codeLifetimeSeconds: 300 } }, platformKey)).error, undefined);
    const client = async (scopes: string[]) => (await ask(Subjects.clientsCreate, { tenantId, name: scopes.join('+'), scopes }, platformKey)) as { apiKey: string };
    adminKey = (await client(['admin'])).apiKey;
    idpKey = (await client(['challenges', 'users', 'reports'])).apiKey;
  });

  after(async () => {
    await nc?.drain();
    await stack?.stop();
    await twilio.stop();
    redis?.disconnect();
    await pool?.end();
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'a user with phone, e-mail and display name registers and signs in by SMS', async () => {
    assert.deepEqual(await ask(Subjects.usersRegister, { tenantId, userId, ...personal, language: 'sv-SE' }, idpKey), { userId, methods: ['sms', 'voice'] });
    const start = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms', clientIp: '198.51.100.7', application: 'VPN' }, idpKey);
    assert.equal(start.status, 'pending', JSON.stringify(start));
    challengeId = String(start.challengeId);
    const sms = await twilio.waitFor((m) => m.to === personal.phoneNumber, 15_000);
    const verify = await ask(Subjects.challengeVerify, { tenantId, challengeId, code: FakeTwilio.codeOf(sms) }, idpKey);
    assert.deepEqual(verify, { challengeId, status: 'approved' });
    // The report shows the person, opened from the sealed personal data of the challenge.
    const [item] = await eventually(async () => {
      const r = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId }, idpKey)) as { items?: SigninItem[] };
      return r.items?.[0]?.result === 'success' ? r.items : undefined;
    }, 15_000, 'the report row');
    assert.deepEqual([item!.userId, item!.displayName, item!.email, item!.phoneNumber], [userId, personal.displayName, personal.email, personal.phoneNumber]);
    // The report opened them when read: the stored row holds them sealed only.
    const { rows: stored } = await pool.query('SELECT * FROM signins WHERE tenant_id = $1', [tenantId]);
    assert.ok(stored.length > 0 && stored.every((row) => personalIn(JSON.stringify(row)).length === 0), 'a stored row holds personal data in clear');
    // Before the erasure: the events are sealed, and open with the user's key of generation 1.
    const record = await keyRecord();
    assert.equal(record.gen, 1);
    keyBefore = { gen: 1, wrapped: String(record.wrappedKey), dataKey: unwrapDataKey(keyring, tenantId, userId, 1, String(record.wrappedKey)) };
    const sealed = [
      ...(await messages(Streams.userSettings.name, EventSubjects.user(tenantId, userId))),
      ...ofTenant(await messages(Streams.challenges.name, EventSubjects.allChallenges)),
    ].filter((m) => piiOf(m.event));
    assert.ok(sealed.length >= 2, 'the registration and the challenge carry sealed personal data');
    for (const { event } of sealed) assert.ok(openPii(keyBefore.dataKey, purposeOf(event), piiOf(event)!).phoneNumber);
  });

  itWith({ real: wholeStack }, 'users.delete erases the user; it needs the admin scope and is audited', async () => {
    assert.equal((await ask(Subjects.usersDelete, { tenantId, userId }, idpKey)).error?.code, 'forbidden', 'the users scope is not enough');
    assert.deepEqual(await ask(Subjects.usersDelete, { tenantId, userId }, adminKey), { userId, deleted: true });
    assert.deepEqual(await ask(Subjects.usersDelete, { tenantId, userId }, adminKey), { userId, deleted: true }, 'again: still deleted');
    assert.equal((await ask(Subjects.usersDelete, { tenantId, userId: `nobody.${run}@fabrikam.example` }, adminKey)).error?.code, 'not_found');
    // The user is gone for sign-ins: no projection, so no method.
    const start = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms' }, idpKey);
    assert.equal(start.status, 'registration_required');
  });

  itWith({ real: wholeStack }, 'the log is unchanged and holds none of the personal data in clear, and what is sealed no longer opens', async () => {
    const userEvents = await messages(Streams.userSettings.name, EventSubjects.user(tenantId, userId));
    assert.deepEqual(userEvents.map((m) => m.event.type), ['UserRegistered', 'UserErased']);
    const challengeEvents = ofTenant(await messages(Streams.challenges.name, EventSubjects.allChallenges));
    const dispatchEvents = ofTenant(await messages(Streams.dispatch.name, EventSubjects.allDispatch));
    assert.ok(challengeEvents.some((m) => m.event.type === 'ChallengeStarted' && m.event.version === 2));
    assert.ok(dispatchEvents.some((m) => m.event.type === 'SmsSent'));
    for (const { raw, event } of [...userEvents, ...challengeEvents, ...dispatchEvents]) {
      assert.deepEqual(personalIn(raw), [], `${event.type} holds personal data in clear`);
    }
    // What was sealed names generation 1, whose key is now a tombstone: nothing in the system opens it.
    const record = await keyRecord();
    assert.deepEqual(Object.keys(record).sort(), ['erasedAt', 'gen']);
    assert.equal(record.gen, 1);
    for (const { event } of [...userEvents, ...challengeEvents].filter((m) => piiOf(m.event))) {
      assert.equal(dataKeyGeneration(piiOf(event)!), 1);
    }
  });

  itWith({ real: wholeStack }, 'Redis holds nothing personal of the user: the projection is a tombstone', async () => {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `mfa:{${tag}}:*`, 'COUNT', 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== '0');
    assert.ok(keys.includes(`mfa:{${tag}}:user`));
    assert.deepEqual(Object.keys(await redis.hgetall(`mfa:{${tag}}:user`)), ['seq']);
    for (const key of keys) {
      const type = await redis.type(key);
      const content = type === 'hash' ? JSON.stringify(await redis.hgetall(key)) : type === 'string' ? String(await redis.get(key)) : '';
      assert.deepEqual(personalIn(content), [], `${key} holds personal data`);
      assert.ok(!content.includes(keyBefore.wrapped), `${key} holds the wrapped data key`);
    }
  });

  itWith({ real: wholeStack }, 'the report rows keep only the pseudonym, the audit trail too', async () => {
    const items = await eventually(async () => {
      const r = (await ask(Subjects.reportsSigninsQuery, { tenantId, userId: pseudonym }, idpKey)) as { items?: SigninItem[] };
      return r.items && r.items.length >= 2 ? r.items : undefined;
    }, 15_000, 'the rows by pseudonym');
    assert.ok(items.some((i) => i.challengeId === challengeId && i.result === 'success'), 'the sign-in itself is still reported');
    for (const item of items) assert.deepEqual([item.userId, item.displayName, item.email, item.phoneNumber], [pseudonym, null, null, null]);
    assert.deepEqual(((await ask(Subjects.reportsSigninsQuery, { tenantId, userId }, idpKey)) as { items: SigninItem[] }).items, []);
    const { rows } = await pool.query('SELECT * FROM signins WHERE tenant_id = $1', [tenantId]);
    for (const row of rows) assert.deepEqual(personalIn(JSON.stringify(row)), [], 'a stored row holds personal data');
    assert.ok(!rows.some((r) => r.user_id === userId), 'no stored row names the user');
    // Audited: the refused delete (no admin scope), the erasure, its repetition, the unknown user.
    const deletes = await eventually(async () => {
      const r = (await ask(Subjects.reportsAuditQuery, { tenantId }, idpKey)) as { items?: AuditItem[] };
      const found = (r.items ?? []).filter((i) => i.subject === Subjects.usersDelete).reverse();
      return found.length >= 4 && found[1]?.userId === pseudonym ? found : undefined;
    }, 15_000, 'the audited deletes');
    assert.deepEqual(deletes.map((i) => i.outcome), ['forbidden', 'ok', 'ok', 'not_found']);
    // Up to the erasure the target user is the pseudonym; a later request naming the id is recorded as sent.
    assert.deepEqual(deletes.slice(0, 2).map((i) => i.userId), [pseudonym, pseudonym]);
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'the same user id registers again as a new user, with a new data key', async () => {
    assert.deepEqual(await ask(Subjects.usersRegister, { tenantId, userId, displayName: 'Ingrid again', phoneNumber: personal.phoneNumber }, idpKey), {
      userId,
      methods: ['sms', 'voice'],
    });
    const record = await keyRecord();
    assert.equal(record.gen, 2);
    assert.notEqual(record.wrappedKey, keyBefore.wrapped);
    const renewed = unwrapDataKey(keyring, tenantId, userId, 2, String(record.wrappedKey));
    const [, , registered] = (await messages(Streams.userSettings.name, EventSubjects.user(tenantId, userId))).map((m) => m.event);
    assert.equal(registered?.type, 'UserRegistered');
    assert.deepEqual(openPii(renewed, 'profile', piiOf(registered!)!), { displayName: 'Ingrid again', phoneNumber: personal.phoneNumber });
    // The old personal data does not open under the new key.
    const old = (await messages(Streams.userSettings.name, EventSubjects.user(tenantId, userId)))[0]!.event;
    assert.throws(() => openPii(renewed, 'profile', piiOf(old)!));
    // And signs in.
    const sent = twilio.messagesTo(personal.phoneNumber).length;
    const start = await ask(Subjects.challengeStart, { tenantId, userId, method: 'sms' }, idpKey);
    assert.equal(start.status, 'pending');
    const sms = await eventually(async () => twilio.messagesTo(personal.phoneNumber)[sent], 15_000, 'the second SMS');
    assert.equal((await ask(Subjects.challengeVerify, { tenantId, challengeId: start.challengeId, code: FakeTwilio.codeOf(sms) }, idpKey)).status, 'approved');
  });

  itWith({ real: wholeStack }, 'no service logged the personal data', async () => {
    assert.ok(logLines.length > 20);
    for (const line of logLines) assert.deepEqual(personalIn(line), [], `a log line holds personal data: ${line.slice(0, 200)}`);
  });
});
