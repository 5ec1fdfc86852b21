import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { errors, type NatsConnection, type Subscription } from '@nats-io/nats-core';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import { EventSubjects, Streams, Subjects, VoiceMessageBuckets } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { eventually, FakeTwilio, itWith, repoRoot, startNatsServer, startStack, testEnv, uniqueTenant, uniqueUser, type NatsServerProcess, type Stack } from '@mfa/testing';
import { runDemo } from './demo.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

const SERVICES_USER = 'mfa-services';
const IDP_USER = 'idp-example';
const IDP_INBOX = `_INBOX_${IDP_USER}`;
/** Letters and digits, starting with a letter: what the server reads back unchanged from its environment. */
const password = () => `p${randomBytes(24).toString('hex')}`;

/**
 * The second wall: deploy/nats/nats-server.conf run by a nats-server of this test's own, with the
 * five services connected as the services' user. An IdP connected with its own user can use the
 * public API and nothing else. Every refusal is positive evidence (the server's permissions
 * violation, or the services' own count of dropped requests), and next to it the same attempt
 * succeeds for the services' user (for inboxes: the IdP's own prefix), so no check passes merely
 * because the attempt could not have worked anyway. The tests run in order: later ones use the
 * tenant and the sign-in of the first.
 */
describe('NATS permissions (deploy/nats): what an IdP with NATS credentials can and cannot do', () => {
  const passwords = { services: password(), idp: password() };
  const twilio = new FakeTwilio();
  const tenant = uniqueTenant('wall');
  let server: NatsServerProcess;
  let stack: Stack;
  let service: NatsConnection;
  let serviceJsm: JetStreamManager;
  let idp: NatsConnection;
  /** The server's refusals of the IdP's operations, as nats.js reports them (status iterator). */
  const refusals: Error[] = [];
  const ask = (subject: string, body: unknown) => requestJson<Reply>(idp, subject, body, { timeoutMs: 10_000 });
  const refused = (pattern: RegExp, what: string) =>
    eventually(async () => refusals.find((e) => e instanceof errors.PermissionViolationError && pattern.test(e.message)), 5_000, what);

  before(async () => {
    await twilio.start();
    server = await startNatsServer({
      config: join(repoRoot, 'deploy', 'nats', 'nats-server.conf'),
      env: { MFA_NATS_SERVICES_PASSWORD: passwords.services, MFA_NATS_IDP_EXAMPLE_PASSWORD: passwords.idp },
    });
    const database = new URL(testEnv.databaseUrl);
    database.pathname = `${database.pathname}_wall`;
    stack = await startStack({
      env: {
        NODE_ENV: 'test',
        NATS_URL: server.url,
        NATS_USER: SERVICES_USER,
        NATS_PASSWORD: passwords.services,
        // Nothing else from the shell that runs the tests: the services connect as above only.
        NATS_TOKEN: '',
        NATS_CREDS: '',
        NATS_TLS_CA: '',
        NATS_TLS_CERT: '',
        NATS_TLS_KEY: '',
        NATS_INBOX_PREFIX: '',
        REDIS_URL: testEnv.redisUrl,
        DATABASE_URL: database.toString(),
        ...twilio.env(),
      },
      onLine: (name, line) => {
        if (/"level":"error"/.test(line)) process.stderr.write(`[${name}] ${line}\n`);
      },
      readyTimeoutMs: 90_000,
    });
    service = await connectClient({ name: 'wall-service' }, { NATS_URL: server.url, NATS_USER: SERVICES_USER, NATS_PASSWORD: passwords.services });
    serviceJsm = await jetstreamManager(service);
    idp = await connectClient({ name: 'wall-idp' }, { NATS_URL: server.url, NATS_USER: IDP_USER, NATS_PASSWORD: passwords.idp, NATS_INBOX_PREFIX: IDP_INBOX });
    void (async () => {
      for await (const status of idp.status()) if (status.type === 'error') refusals.push(status.error);
    })();
  });

  after(async () => {
    await idp?.drain().catch(() => undefined);
    await service?.drain().catch(() => undefined);
    await stack?.stop();
    await twilio.stop();
    await server?.stop();
  });

  const streamLastSeq = async (name: string) => (await serviceJsm.streams.info(name)).state.last_seq;

  itWith({ real: ['nats', 'redis', 'postgres'], fake: ['twilio'] }, 'an IdP registers a user, signs them in by SMS and reads the report over mfa.v1.>, its replies arriving under its own inbox prefix', async () => {
    const userId = uniqueUser('wall');
    const phoneNumber = '+14155550142';
    assert.deepEqual(await ask(Subjects.usersRegister, { tenantId: tenant, userId, phoneNumber }), { userId, methods: ['sms', 'voice'] });
    const start = await ask(Subjects.challengeStart, { tenantId: tenant, userId, method: 'sms' });
    assert.equal(start.status, 'pending', JSON.stringify(start));
    // dispatch consumed the request from JetStream and sent the SMS, all as the services' user.
    const sms = await twilio.waitFor((m) => m.to === phoneNumber, 15_000);
    assert.deepEqual(await ask(Subjects.challengeVerify, { tenantId: tenant, challengeId: start.challengeId, code: FakeTwilio.codeOf(sms) }), {
      challengeId: start.challengeId,
      status: 'approved',
    });
    const rows = await eventually(async () => {
      const report = await ask(Subjects.reportsSigninsQuery, { tenantId: tenant, userId });
      return (report.items as unknown[] | undefined)?.length ? report.items : undefined;
    }, 15_000, 'the sign-in report row');
    assert.equal((rows as unknown[]).length, 1);

    // The inbox prefix is not optional: with the default one (_INBOX.), the client may not
    // subscribe where its replies would arrive, and its requests fail.
    const unprefixed = await connectClient({ name: 'wall-idp-no-prefix' }, { NATS_URL: server.url, NATS_USER: IDP_USER, NATS_PASSWORD: passwords.idp });
    try {
      await assert.rejects(requestJson(unprefixed, Subjects.challengeStatus, { tenantId: tenant, challengeId: start.challengeId }), /Permissions Violation for Subscription to "_INBOX\./);
    } finally {
      await unprefixed.close();
    }
  });

  itWith({ real: ['nats'] }, 'an IdP cannot inject an event into a stream, neither through JetStream nor by a plain publish', async () => {
    const real = await serviceJsm.direct.getMessage(Streams.challenges.name, { last_by_subj: EventSubjects.challengeApproved });
    assert.ok(real, 'the sign-in above recorded an approval');
    // A copy of a real approval under a new id (or the stream's de-duplication would hide it).
    const forged = JSON.stringify({ ...real.json<Record<string, unknown>>(), id: randomUUID() });
    const before = await streamLastSeq(Streams.challenges.name);

    await assert.rejects(jetstream(idp).publish(EventSubjects.challengeApproved, forged), /Permissions Violation for Publish to "mfa\.evt\.challenge\.approved"/);
    idp.publish(EventSubjects.challengeApproved, forged);
    await idp.flush();
    await refused(/Publish to "mfa\.evt\.challenge\.approved"/, 'the refusal of the plain publish');
    assert.equal(await streamLastSeq(Streams.challenges.name), before, 'nothing landed in MFA_CHALLENGES');

    // The same publish as the services' user is stored: the stream does capture that subject.
    const ack = await jetstream(service).publish(EventSubjects.challengeApproved, forged);
    assert.equal(ack.seq, before + 1);

    // Nor dead letters, state records or internal subjects.
    for (const subject of ['mfa.dlq.wall', 'mfa.state.keyring', 'mfa.int.wall']) {
      idp.publish(subject, '{}');
      await idp.flush();
      await refused(new RegExp(`Publish to "${subject.replace(/\./g, '\\.')}"`), `the refusal of ${subject}`);
    }
  });

  itWith({ real: ['nats'] }, 'an IdP cannot subscribe to the event subjects', async () => {
    const idpSeen: string[] = [];
    const serviceSeen: string[] = [];
    const idpSub = idp.subscribe('mfa.evt.>', { callback: (error, m) => { if (!error) idpSeen.push(m.subject); } });
    const serviceSub = service.subscribe('mfa.evt.>', { callback: (error, m) => { if (!error) serviceSeen.push(m.subject); } });
    await service.flush();
    const closedWith = await closedWithin(idpSub);
    assert.ok(closedWith instanceof errors.PermissionViolationError, String(closedWith));
    assert.match(closedWith.message, /Subscription to "mfa\.evt\.>"/);
    // An event appended now (a challenge the IdP itself starts) reaches the services' user only.
    await ask(Subjects.challengeStart, { tenantId: tenant, userId: uniqueUser('nobody') });
    const seen = await eventually(async () => serviceSeen[0], 10_000, 'an event on the services’ subscription');
    assert.match(seen, /^mfa\.evt\.challenge\./);
    assert.deepEqual(idpSeen, []);
    serviceSub.unsubscribe();
  });

  itWith({ real: ['nats'] }, 'an IdP cannot use the JetStream API: no manager, no stream list, no reading or purging a stream', async () => {
    await assert.rejects(jetstreamManager(idp), /Permissions Violation for Publish to "\$JS\.API\.INFO"/);
    const jsm = await jetstreamManager(idp, { checkAPI: false });
    await assert.rejects(jsm.streams.list().next(), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.(NAMES|LIST)"/);
    await assert.rejects(jsm.direct.getMessage(Streams.challenges.name, { last_by_subj: EventSubjects.smsRequested }), /Permissions Violation for Publish to "\$JS\.API\.DIRECT\.GET\./);
    await assert.rejects(jsm.streams.purge(Streams.challenges.name), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.PURGE\./);
    // The services' user does all but the purge here (it would empty the stream).
    const names: string[] = [];
    for await (const s of serviceJsm.streams.list()) names.push(s.config.name);
    assert.ok(names.includes(Streams.challenges.name));
    assert.ok(await serviceJsm.direct.getMessage(Streams.challenges.name, { last_by_subj: EventSubjects.smsRequested }));
    assert.ok((await streamLastSeq(Streams.challenges.name)) > 0, 'nothing was purged');
    // Nor the object stores: an IdP cannot put a recording where dispatch takes uploads from; the services' user can.
    await assert.rejects(new Objm(idp).open(VoiceMessageBuckets.uploads), /Permissions Violation for Publish to "\$JS\.API\./);
    const uploads = await new Objm(service).open(VoiceMessageBuckets.uploads);
    const name = `${tenant}/permissions-${Date.now()}`;
    assert.equal((await uploads.putBlob({ name }, new Uint8Array(64))).size, 64);
    await uploads.delete(name);
  });

  itWith({ real: ['nats'] }, 'an IdP cannot subscribe to another IdP’s inbox prefix, nor to the services’ inboxes', async () => {
    for (const subject of ['_INBOX_idp-other.>', '_INBOX.>', '>']) {
      const closedWith = await closedWithin(idp.subscribe(subject));
      assert.ok(closedWith instanceof errors.PermissionViolationError, `${subject}: ${String(closedWith)}`);
    }
    // Its own prefix is allowed: the subscription stays open.
    const own = idp.subscribe(`${IDP_INBOX}.wall.>`);
    await idp.flush();
    assert.equal(own.isClosed(), false);
    own.unsubscribe();
  });

  itWith({ real: ['nats'] }, 'an IdP cannot have a service write for it by naming an event subject or the JetStream API as its reply subject', async () => {
    // The services' user may publish to both (above), and a purge takes any JSON body, a reply
    // included: the services themselves refuse such reply subjects.
    const stateBefore = (await serviceJsm.streams.info(Streams.challenges.name)).state;
    const metrics = stack.url('auth-challenge');
    const droppedBefore = await droppedForReplySubject(metrics);
    for (const reply of [EventSubjects.challengeApproved, `$JS.API.STREAM.PURGE.${Streams.challenges.name}`]) {
      idp.publish(Subjects.challengeStatus, JSON.stringify({ tenantId: tenant, challengeId: 'x' }), { reply });
    }
    // A request sent after them, on the same connection and subject, is answered after they were taken up.
    assert.equal((await ask(Subjects.challengeStatus, { tenantId: tenant, challengeId: 'x' })).error?.code, 'not_found');
    await new Promise((r) => setTimeout(r, 200));
    const stateAfter = (await serviceJsm.streams.info(Streams.challenges.name)).state;
    assert.deepEqual([stateAfter.messages, stateAfter.last_seq], [stateBefore.messages, stateBefore.last_seq], 'nothing written, nothing purged');
    await eventually(async () => ((await droppedForReplySubject(metrics)) >= droppedBefore + 2 ? true : undefined), 5_000, 'both requests dropped');
    assert.equal(idp.isClosed(), false, 'refusals never closed the IdP’s connection');
  });

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'the demo runs against the secured server with the NATS_* variables', async () => {
    const lines: string[] = [];
    const code = await runDemo({
      out: (l) => lines.push(l),
      tenantId: uniqueTenant('wall-demo'),
      // The demo also plays the phone, reading the SMS request from the event log: a service's view.
      env: { ...process.env, NATS_URL: server.url, NATS_USER: SERVICES_USER, NATS_PASSWORD: passwords.services },
    });
    assert.equal(code, 0, lines.join('\n'));
  });
});

/** What a subscription was closed with (a refusal closes it), or undefined if it is still open after a while. */
async function closedWithin(sub: Subscription, ms = 5_000): Promise<void | Error | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const open = new Promise<undefined>((resolve) => (timer = setTimeout(resolve, ms, undefined)));
  try {
    return await Promise.race([sub.closed, open]);
  } finally {
    clearTimeout(timer);
  }
}

async function droppedForReplySubject(serviceUrl: string): Promise<number> {
  const text = await (await fetch(`${serviceUrl}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith('mfa_requests_dropped_total{') && line.includes('reason="reply_subject"'))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}
