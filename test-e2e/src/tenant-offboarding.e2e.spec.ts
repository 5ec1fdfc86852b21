import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { Objm } from '@nats-io/obj';
import type { NatsConnection } from '@nats-io/transport-node';
import { Subjects, VoiceMessageBuckets, type SigninItem, type TenantsDeleteReply } from '@mfa/contracts';
import { base32Decode, loadKeyring, totp, userTag } from '@mfa/crypto';
import { connectClient, requestJson } from '@mfa/messaging';
import { RedisKeys } from '@mfa/projection';
import { eventually, FakeTwilio, itWith, startStack, testDatabaseUrl, testEnv, toneWav, uniqueTenant, type Stack } from '@mfa/testing';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };
const wholeStack = ['nats', 'redis', 'postgres'] as const;
const e2eDatabase = () => testDatabaseUrl('mfa_e2e');

interface Person {
  userId: string;
  displayName: string;
  email: string;
  phoneNumber: string;
}

/**
 * tenants.delete through the whole stack (MFA_AUTH=required, the services as processes, SMS through
 * a fake Twilio): a tenant with users who signed in by SMS and by app, a fraud report, a block, a
 * recording and a challenge still pending is deleted with the platform key, next to a tenant that
 * is kept. From the reply on its key is refused and every service answers `not_found` for it; the
 * offboarding then erases its users (nothing of their personal data left readable in Redis or the
 * report) and ends `deleted`; the other tenant signs in as before; the id is created again empty.
 */
describe('end to end: offboarding a tenant (tenants.delete)', () => {
  const { keyring } = loadKeyring(process.env);
  const platformKey = randomBytes(36).toString('base64url');
  const twilio = new FakeTwilio();
  const gone = uniqueTenant('offboard-a');
  const kept = uniqueTenant('offboard-b');
  // Values no other test uses, so a scan for them finds only these users' data.
  const run = randomBytes(4).toString('hex');
  const person = (name: string, tenantId: string): Person => ({
    userId: `${name}.${run}@${tenantId}.example`,
    displayName: `${name[0]!.toUpperCase()}${name.slice(1)} Offboarded ${run}`,
    email: `${name}.private.${run}@mail.example`,
    phoneNumber: `+4670${String(randomInt(0, 10_000_000)).padStart(7, '0')}`,
  });
  /** A's users: alpha signs in by SMS, bravo by app (then blocked), charlie's sign-in is reported as fraud, delta and echo have a challenge pending at the deletion. */
  const alpha = person('alpha', gone);
  const bravo = person('bravo', gone);
  const charlie = person('charlie', gone);
  const delta = person('delta', gone);
  const echo = person('echo', gone);
  const goneUsers = [alpha, bravo, charlie, delta, echo];
  /** B's user, who signs in by app before and after A's deletion. */
  const foxtrot = person('foxtrot', kept);
  const startedAt = new Date();
  const today = startedAt.toISOString().slice(0, 10);
  const usageQuery = (tenantId: string) => ({
    tenantId,
    from: `${today}T00:00:00Z`,
    to: new Date(Date.parse(`${today}T00:00:00Z`) + 86_400_000).toISOString(),
    granularity: 'day',
  });

  let stack: Stack;
  let nc: NatsConnection;
  let redis: Redis;
  let pool: pg.Pool;
  const idpKey: Record<string, string> = {};
  const secretOf: Record<string, Buffer> = {};
  /** The TOTP step each user used last: a code is never accepted twice. */
  const stepOf: Record<string, number> = {};
  /** Pending at the deletion: the challenge and the SMS code it sent. */
  const pending: Record<string, { challengeId: string; code: string }> = {};
  /** Every challenge of A's users before the deletion. */
  const formerChallenges = new Set<string>();
  let firstDelete: TenantsDeleteReply;
  let finalDelete: TenantsDeleteReply;
  /** What the services answered that the test records without asserting (printed at the end). */
  const observed: Record<string, unknown> = {};

  const ask = (subject: string, body: unknown, key: string) =>
    requestJson<Reply>(nc, subject, body, { timeoutMs: 10_000, headers: { Authorization: `Bearer ${key}` } });
  const codeOf = async (subject: string, body: unknown, key: string) => {
    const reply = await ask(subject, body, key);
    return reply.error?.code ?? `ok: ${JSON.stringify(reply).slice(0, 200)}`;
  };

  /** Which of these people's personal values appear in `text` in clear (as UTF-8 or JSON-escaped). */
  const personalIn = (text: string, people: Person[]) =>
    people.flatMap((p) => [p.displayName, p.email, p.phoneNumber]).filter((v) => text.includes(v) || text.includes(JSON.stringify(v).slice(1, -1)));

  const stepNow = () => Math.floor(Date.now() / 30_000);
  /** A TOTP code of the current step (an activation). */
  const currentTotp = (userId: string) => {
    stepOf[userId] = stepNow();
    return totp(secretOf[userId]!, stepOf[userId] * 30_000);
  };
  /**
   * A code of the step after the last one this user sent (a code is never accepted twice), once
   * that step is within the window the service accepts (one step ahead of the clock at most).
   */
  async function nextTotp(userId: string): Promise<string> {
    const step = stepOf[userId]! + 1;
    while (stepNow() + 1 < step) await new Promise((r) => setTimeout(r, 500));
    stepOf[userId] = step;
    return totp(secretOf[userId]!, step * 30_000);
  }

  async function register(tenantId: string, p: Person, key: string): Promise<void> {
    const reply = await ask(Subjects.usersRegister, { tenantId, ...p }, key);
    assert.deepEqual(reply, { userId: p.userId, methods: ['sms', 'voice'] });
  }

  async function enrollTotp(tenantId: string, p: Person, key: string): Promise<void> {
    const enrolled = await ask(Subjects.totpEnroll, { tenantId, userId: p.userId, label: 'Phone' }, key);
    assert.equal(enrolled.error, undefined, JSON.stringify(enrolled));
    secretOf[p.userId] = base32Decode(String(enrolled.secret));
    const activated = await ask(Subjects.totpActivate, { tenantId, userId: p.userId, tokenId: enrolled.tokenId, code: currentTotp(p.userId) }, key);
    assert.deepEqual(activated, { tokenId: enrolled.tokenId, active: true });
  }

  async function signInByTotp(tenantId: string, p: Person, key: string): Promise<string> {
    const start = await ask(Subjects.challengeStart, { tenantId, userId: p.userId, method: 'totp', clientIp: '198.51.100.20', application: 'VPN' }, key);
    assert.deepEqual([start.status, start.method], ['pending', 'totp'], JSON.stringify(start));
    const verify = await ask(Subjects.challengeVerify, { tenantId, challengeId: start.challengeId, code: await nextTotp(p.userId) }, key);
    assert.deepEqual(verify, { challengeId: start.challengeId, status: 'approved' });
    return String(start.challengeId);
  }

  /** Starts an SMS challenge and waits for its SMS: the challenge and its code. */
  async function smsChallenge(tenantId: string, p: Person, key: string): Promise<{ challengeId: string; code: string }> {
    const sent = twilio.messagesTo(p.phoneNumber).length;
    const start = await ask(Subjects.challengeStart, { tenantId, userId: p.userId, method: 'sms', clientIp: '198.51.100.21', application: 'Webmail' }, key);
    assert.deepEqual([start.status, start.method], ['pending', 'sms'], JSON.stringify(start));
    const sms = await eventually(async () => twilio.messagesTo(p.phoneNumber)[sent], 15_000, `the SMS to ${p.userId}`);
    return { challengeId: String(start.challengeId), code: FakeTwilio.codeOf(sms) };
  }

  async function uploadRecording(tenantId: string): Promise<void> {
    const uploads = await new Objm(nc).open(VoiceMessageBuckets.uploads);
    const object = `${tenantId}/greeting-${run}`;
    await uploads.putBlob({ name: object }, toneWav(1));
    const uploaded = await ask(Subjects.voiceMessagesUpload, { tenantId, type: 'greetingStandard', language: 'en', object }, platformKey);
    assert.equal(uploaded.format, 'wav', JSON.stringify(uploaded));
  }

  const recordingsOf = async (tenantId: string) => {
    const listed = await ask(Subjects.voiceMessagesList, { tenantId }, platformKey);
    return listed.error ? listed.error.code : (listed.messages as Array<{ type: string; language: string }>).map((m) => `${m.type}/${m.language}`);
  };

  async function signinsOf(tenantId: string, key: string): Promise<SigninItem[]> {
    const reply = await ask(Subjects.reportsSigninsQuery, { tenantId, limit: 100 }, key);
    assert.equal(reply.error, undefined, JSON.stringify(reply));
    return reply.items as SigninItem[];
  }

  /** Every Redis key matching `pattern`. */
  async function redisKeys(pattern: string): Promise<string[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== '0');
    return keys;
  }

  async function redisContent(key: string): Promise<string> {
    switch (await redis.type(key)) {
      case 'hash':
        return JSON.stringify(await redis.hgetall(key));
      case 'string':
        return String(await redis.get(key));
      case 'set':
        return JSON.stringify(await redis.smembers(key));
      case 'zset':
        return JSON.stringify(await redis.zrange(key, 0, -1, 'WITHSCORES'));
      case 'list':
        return JSON.stringify(await redis.lrange(key, 0, -1));
      case 'stream':
        return JSON.stringify(await redis.xrange(key, '-', '+'));
      default:
        return '';
    }
  }

  /** The report's tables with a tenant column, and the rows of `tenantId` in each, as text. */
  async function reportRows(tenantId: string): Promise<Record<string, string[]>> {
    const { rows: tables } = await pool.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.columns WHERE column_name = 'tenant_id' AND table_schema = current_schema() ORDER BY table_name",
    );
    const out: Record<string, string[]> = {};
    for (const { table_name: table } of tables) {
      const { rows } = await pool.query<{ row: string }>(`SELECT row_to_json(t)::text AS row FROM "${table}" t WHERE tenant_id = $1`, [tenantId]);
      out[table] = rows.map((r) => r.row);
    }
    return out;
  }

  before(async () => {
    await twilio.start();
    stack = await startStack({
      env: {
        NODE_ENV: 'test',
        LOG_LEVEL: 'info',
        MFA_AUTH: 'required',
        MFA_PLATFORM_API_KEY: platformKey,
        DATABASE_URL: e2eDatabase(),
        NATS_URL: testEnv.natsUrl,
        REDIS_URL: testEnv.redisUrl,
        ...twilio.env(),
      },
      onLine: (service, line) => {
        if (/"level":"error"/.test(line)) process.stderr.write(`[${service}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    nc = await connectClient({ servers: testEnv.natsUrl, name: 'e2e-tenant-offboarding' });
    redis = new Redis(testEnv.redisUrl);
    pool = new pg.Pool({ connectionString: e2eDatabase(), max: 2 });
    for (const tenantId of [gone, kept]) {
      assert.equal((await ask(Subjects.tenantsConfigure, { tenantId, settings: { codeLifetimeSeconds: 300 } }, platformKey)).error, undefined);
      const client = await ask(Subjects.clientsCreate, { tenantId, name: 'idp', scopes: ['challenges', 'users', 'reports'] }, platformKey);
      assert.equal(client.error, undefined, JSON.stringify(client));
      idpKey[tenantId] = String(client.apiKey);
    }
  });

  after(async () => {
    if (Object.keys(observed).length > 0) process.stderr.write(`# observed: ${JSON.stringify(observed, null, 2).replace(/\n/g, '\n# ')}\n`);
    await nc?.drain();
    await stack?.stop();
    await twilio.stop();
    redis?.disconnect();
    await pool?.end();
  });

  itWith({ real: wholeStack, fake: ['twilio'] }, 'two tenants in use: sign-ins by SMS and by app in the report, a fraud report, a block, a recording, two challenges pending', async () => {
    const a = idpKey[gone]!;
    const b = idpKey[kept]!;
    for (const p of goneUsers) await register(gone, p, a);
    await register(kept, foxtrot, b);
    await enrollTotp(gone, bravo, a);
    await enrollTotp(kept, foxtrot, b);
    // Completed sign-ins: alpha by SMS, bravo and foxtrot by app.
    const alphaSms = await smsChallenge(gone, alpha, a);
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: gone, challengeId: alphaSms.challengeId, code: alphaSms.code }, a), { challengeId: alphaSms.challengeId, status: 'approved' });
    const bravoSignin = await signInByTotp(gone, bravo, a);
    await signInByTotp(kept, foxtrot, b);
    // Charlie says the SMS was not theirs: the challenge denied, the user blocked (fraud).
    const charlieSms = await smsChallenge(gone, charlie, a);
    const reported = await ask(Subjects.fraudReport, { tenantId: gone, userId: charlie.userId, challengeId: charlieSms.challengeId, source: 'idp', comment: 'not me' }, a);
    assert.deepEqual([reported.challengeDenied, reported.blocked], [true, true], JSON.stringify(reported));
    // Bravo blocked by an administrator (fraud).
    assert.equal((await ask(Subjects.usersBlock, { tenantId: gone, userId: bravo.userId, reason: 'lost laptop' }, platformKey)).error, undefined);
    // A recording each (dispatch).
    await uploadRecording(gone);
    await uploadRecording(kept);
    assert.deepEqual(await recordingsOf(gone), ['greetingStandard/en']);
    // Delta and echo: challenges pending when the tenant is deleted.
    pending.delta = await smsChallenge(gone, delta, a);
    pending.echo = await smsChallenge(gone, echo, a);
    for (const id of [alphaSms.challengeId, bravoSignin, charlieSms.challengeId, pending.delta.challengeId, pending.echo.challengeId]) formerChallenges.add(id);
    // The report holds A's sign-ins, with the people in them.
    const items = await eventually(async () => {
      const list = await signinsOf(gone, a);
      const done = list.some((i) => i.challengeId === alphaSms.challengeId && i.result === 'success') && list.some((i) => i.challengeId === bravoSignin && i.result === 'success');
      return done && list.some((i) => i.challengeId === charlieSms.challengeId && i.resultDetail === 'MFA denied; Fraud Code Entered') ? list : undefined;
    }, 20_000, 'A’s sign-ins in the report');
    const alphaRow = items.find((i) => i.challengeId === alphaSms.challengeId)!;
    assert.deepEqual([alphaRow.displayName, alphaRow.email, alphaRow.phoneNumber], [alpha.displayName, alpha.email, alpha.phoneNumber]);
    await eventually(async () => ((await signinsOf(kept, b)).some((i) => i.result === 'success') ? true : undefined), 20_000, 'B’s sign-in in the report');
    const usage = await ask(Subjects.reportsUsageQuery, usageQuery(gone), a);
    assert.equal(usage.error, undefined, JSON.stringify(usage));
    const blocked = await eventually(async () => {
      const r = await ask(Subjects.reportsBlockedQuery, { tenantId: gone }, a);
      return (r.items as unknown[] | undefined)?.length ? r.items : undefined;
    }, 20_000, 'A’s block history');
    assert.ok((blocked as unknown[]).length >= 2);
    await eventually(async () => {
      const r = await ask(Subjects.reportsFraudQuery, { tenantId: gone }, a);
      return (r.items as unknown[] | undefined)?.length ? true : undefined;
    }, 20_000, 'A’s fraud alert in the report');
    // Before: Redis holds A's users' projections, the report their rows.
    for (const p of goneUsers) assert.ok((await redis.hgetall(RedisKeys.user(userTag(keyring, gone, p.userId)))).seq, `${p.userId}’s projection`);
    assert.ok((await reportRows(gone)).signins!.length >= 3);
  });

  itWith({ real: wholeStack }, 'tenants.delete: only with the platform key; from the reply on A’s key is refused everywhere', async () => {
    assert.equal((await ask(Subjects.tenantsDelete, { tenantId: gone }, idpKey[gone]!)).error?.code, 'forbidden', 'a tenant’s own key');
    assert.equal((await ask(Subjects.tenantsDelete, { tenantId: uniqueTenant('never') }, platformKey)).error?.code, 'not_found');
    const first = await ask(Subjects.tenantsDelete, { tenantId: gone }, platformKey);
    assert.equal(first.error, undefined, JSON.stringify(first));
    firstDelete = first as unknown as TenantsDeleteReply;
    assert.equal(firstDelete.tenantId, gone);
    assert.ok(['deleting', 'deleted'].includes(firstDelete.state), JSON.stringify(first));
    // user-settings revoked the key before answering; the other services within a second.
    assert.equal(await codeOf(Subjects.usersGet, { tenantId: gone, userId: alpha.userId }, idpKey[gone]!), 'forbidden');
    for (const [subject, body] of [
      [Subjects.challengeStart, { tenantId: gone, userId: alpha.userId, method: 'sms' }],
      [Subjects.usersGet, { tenantId: gone, userId: alpha.userId }],
      [Subjects.reportsSigninsQuery, { tenantId: gone }],
      [Subjects.fraudReport, { tenantId: gone, userId: alpha.userId, source: 'idp' }],
    ] as const) {
      await eventually(async () => ((await codeOf(subject, body, idpKey[gone]!)) === 'forbidden' ? true : undefined), 10_000, `${subject} with A’s key refused`);
    }
  });

  itWith({ real: wholeStack }, 'A is unknown to every service, also with the platform key: not_found', async () => {
    const expectNotFound = async (service: string, subject: string, body: Record<string, unknown>) => {
      let last = '';
      await eventually(
        async () => {
          last = await codeOf(subject, { tenantId: gone, ...body }, platformKey);
          return last === 'not_found' ? true : undefined;
        },
        10_000,
        `${subject} (${service}) not_found`,
      ).catch(() => assert.fail(`${subject} (${service}) for the deleted tenant answered ${last}, not not_found`));
    };
    await expectNotFound('auth-challenge', Subjects.challengeStart, { userId: alpha.userId, method: 'sms' });
    await expectNotFound('user-settings', Subjects.usersGet, { userId: alpha.userId });
    await expectNotFound('user-settings', Subjects.usersRegister, { userId: `new.${run}@example.com` });
    await expectNotFound('user-settings', Subjects.tenantsGet, {});
    await expectNotFound('fraud', Subjects.fraudReport, { userId: alpha.userId, source: 'idp' });
    await expectNotFound('fraud', Subjects.usersBlock, { userId: alpha.userId, reason: 'after the deletion' });
    await expectNotFound('dispatch', Subjects.voiceMessagesList, {});
    await expectNotFound('reporting', Subjects.reportsSigninsQuery, {});
    await expectNotFound('reporting', Subjects.reportsUsageQuery, usageQuery(gone));
  });

  itWith({ real: wholeStack }, 'a challenge pending at the deletion is unknown after it, with the right code too: not_found, erased or not', async () => {
    const { challengeId, code } = pending.delta!;
    observed.pendingVerifyWithTenantKey = await codeOf(Subjects.challengeVerify, { tenantId: gone, challengeId, code }, idpKey[gone]!);
    assert.equal(observed.pendingVerifyWithTenantKey, 'forbidden', 'the tenant’s own key is revoked');
    // With the platform key (a RADIUS front without a key of its own uses it): the tenant is unknown
    // to auth-challenge, whether or not the offboarding has erased this user yet.
    observed.pendingStatusAfterDeletion = await codeOf(Subjects.challengeStatus, { tenantId: gone, challengeId }, platformKey);
    const verified = await ask(Subjects.challengeVerify, { tenantId: gone, challengeId, code }, platformKey);
    observed.pendingVerifyAfterDeletion = verified.error?.code ?? verified;
    observed.pendingResendAfterDeletion = await codeOf(Subjects.challengeResend, { tenantId: gone, challengeId }, platformKey);
    assert.deepEqual(
      [observed.pendingStatusAfterDeletion, observed.pendingVerifyAfterDeletion, observed.pendingResendAfterDeletion],
      ['not_found', 'not_found', 'not_found'],
      JSON.stringify(verified),
    );
  });

  itWith({ real: wholeStack }, 'tenants.delete sent again ends deleted, with every user of A erased; B keeps its recording', async () => {
    finalDelete = await eventually(
      async () => {
        const reply = (await ask(Subjects.tenantsDelete, { tenantId: gone }, platformKey)) as unknown as TenantsDeleteReply & Reply;
        assert.equal(reply.error, undefined, JSON.stringify(reply));
        return reply.state === 'deleted' ? reply : undefined;
      },
      60_000,
      'the offboarding to finish',
    );
    assert.equal(finalDelete.deletedAt, firstDelete.deletedAt);
    assert.ok(finalDelete.erasedAt && finalDelete.erasedAt >= finalDelete.deletedAt);
    assert.deepEqual(finalDelete.erased, { users: goneUsers.length, hardwareTokens: 0, recordings: 1, clients: 1 });
    assert.deepEqual(await ask(Subjects.tenantsDelete, { tenantId: gone }, platformKey), finalDelete, 'sent again: the same answer');
    assert.deepEqual(await recordingsOf(kept), ['greetingStandard/en']);
    const { challengeId, code } = pending.echo!;
    observed.pendingStatusAfterErasure = await codeOf(Subjects.challengeStatus, { tenantId: gone, challengeId }, platformKey);
    const verified = await ask(Subjects.challengeVerify, { tenantId: gone, challengeId, code }, platformKey);
    observed.pendingVerifyAfterErasure = verified.error?.code ?? verified;
    // Whatever it answers once the users are erased, a deleted tenant's sign-in is not approved.
    assert.notEqual(verified.status, 'approved', JSON.stringify(verified));
  });

  itWith({ real: wholeStack }, 'B is untouched: its user signs in by app and its reports answer', async () => {
    const b = idpKey[kept]!;
    const challengeId = await signInByTotp(kept, foxtrot, b);
    const shown = await ask(Subjects.usersGet, { tenantId: kept, userId: foxtrot.userId }, b);
    assert.deepEqual([shown.displayName, shown.email, shown.phoneNumber], [foxtrot.displayName, foxtrot.email, foxtrot.phoneNumber]);
    const row = await eventually(async () => (await signinsOf(kept, b)).find((i) => i.challengeId === challengeId && i.result === 'success'), 20_000, 'B’s new sign-in');
    assert.equal(row.displayName, foxtrot.displayName);
    assert.equal((await signinsOf(kept, b)).filter((i) => i.result === 'success').length, 2);
    const usage = (await ask(Subjects.reportsUsageQuery, usageQuery(kept), b)) as Reply & { items?: Array<{ authentications: { total: number } }> };
    assert.equal(usage.error, undefined, JSON.stringify(usage));
    assert.ok(usage.items!.length === 1 && usage.items![0]!.authentications.total >= 1, JSON.stringify(usage));
  });

  itWith({ real: wholeStack }, 'nothing of A’s users’ personal data is left in clear: Redis holds tombstones, the report no row of theirs in clear', async () => {
    for (const p of goneUsers) {
      const tag = userTag(keyring, gone, p.userId);
      assert.deepEqual(Object.keys(await redis.hgetall(RedisKeys.user(tag))), ['seq'], `${p.userId}’s projection is a tombstone`);
      for (const key of await redisKeys(`mfa:{${tag}}:*`)) assert.deepEqual(personalIn(await redisContent(key), [p]), [], `${key} holds ${p.userId}’s personal data`);
    }
    for (const key of await redisKeys(`*${gone}*`)) assert.deepEqual(personalIn(await redisContent(key), goneUsers), [], `${key} holds personal data`);
    // The report: the tenant's rows go once it is erased, but for the erased users and the audit
    // trail — and the outcomes of the challenges pending at the deletion, which may be projected
    // after the erasure (the report drops those when the id is created again, below).
    const late = new Set([pending.delta!.challengeId, pending.echo!.challengeId]);
    const isLate = (row: string) => late.has(String((JSON.parse(row) as { challenge_id?: string }).challenge_id));
    const counts = (found: Record<string, string[]>) => Object.fromEntries(Object.entries(found).map(([t, r]) => [t, r.length]));
    const rows = await eventually(
      async () => {
        const found = await reportRows(gone);
        const left = Object.entries(found).filter(([table, list]) => !['tenants', 'erased_users', 'audit_log'].includes(table) && list.some((row) => !isLate(row)));
        return left.length === 0 ? found : undefined;
      },
      20_000,
      'A’s report rows deleted',
    ).catch(async () => assert.fail(`A’s report rows were not deleted: ${JSON.stringify(counts(await reportRows(gone)))}`));
    observed.reportRowsAfterErasure = counts(rows);
    observed.lateSigninRows = rows.signins!.map((row) => {
      const r = JSON.parse(row) as Record<string, unknown>;
      return { challenge: r.challenge_id === pending.delta!.challengeId ? 'delta' : 'echo', userId: r.user_id, result: r.result, detail: r.result_detail };
    });
    for (const [table, list] of Object.entries(rows)) {
      for (const row of list) assert.deepEqual(personalIn(row, goneUsers), [], `a row of ${table} holds personal data: ${row.slice(0, 300)}`);
    }
    assert.equal(rows.erased_users?.length, goneUsers.length, 'one erased user row each');
  });

  itWith({ real: wholeStack }, 'the id is created again: a new, empty tenant that knows none of the old users', async () => {
    assert.equal((await ask(Subjects.tenantsConfigure, { tenantId: gone, settings: {} }, platformKey)).error, undefined);
    for (const p of goneUsers) assert.equal(await codeOf(Subjects.usersGet, { tenantId: gone, userId: p.userId }, platformKey), 'not_found', `${p.userId} unknown`);
    // The old key stays revoked.
    assert.equal(await codeOf(Subjects.usersGet, { tenantId: gone, userId: alpha.userId }, idpKey[gone]!), 'forbidden');
    assert.deepEqual(await ask(Subjects.usersRegister, { tenantId: gone, userId: alpha.userId }, platformKey), { userId: alpha.userId, methods: [] });
    // The other services know the tenant again, with nothing of the old one.
    const start = await eventually(async () => {
      const reply = await ask(Subjects.challengeStart, { tenantId: gone, userId: bravo.userId }, platformKey);
      return reply.error?.code === 'not_found' ? undefined : reply;
    }, 10_000, 'auth-challenge to know the tenant again');
    assert.equal(start.status, 'registration_required', JSON.stringify(start));
    await eventually(async () => (Array.isArray(await recordingsOf(gone)) ? true : undefined), 10_000, 'dispatch to know the tenant again');
    assert.deepEqual(await recordingsOf(gone), []);
    const signins = await eventually(async () => {
      const reply = await ask(Subjects.reportsSigninsQuery, { tenantId: gone, limit: 100 }, platformKey);
      return reply.error?.code === 'not_found' ? undefined : reply;
    }, 10_000, 'reporting to know the tenant again');
    assert.equal(signins.error, undefined, JSON.stringify(signins));
    // The start above is the new tenant's own; none of the former tenant's, the late outcomes of
    // the challenges pending at the deletion included, is reported or stored.
    const former = (ids: string[]) => ids.filter((id) => formerChallenges.has(id));
    await eventually(
      async () => (former((await reportRows(gone)).signins!.map((row) => String((JSON.parse(row) as { challenge_id?: string }).challenge_id))).length === 0 ? true : undefined),
      10_000,
      'the former tenant’s late sign-in rows deleted',
    );
    const items = (await ask(Subjects.reportsSigninsQuery, { tenantId: gone, limit: 100 }, platformKey)).items as SigninItem[];
    observed.signinsAfterRecreation = items.map((i) => [i.userId, i.result, i.resultDetail]);
    assert.deepEqual(former(items.map((i) => i.challengeId)), [], 'no sign-in of the former tenant');
  });
});
