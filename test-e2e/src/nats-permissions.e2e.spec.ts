import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { errors, type NatsConnection, type Subscription } from '@nats-io/nats-core';
import { AckPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import { ContractError, EventSubjects, IMPORTS_BUCKET, MAX_IMPORT_FILE_BYTES, Streams, Subjects, VoiceMessageBuckets } from '@mfa/contracts';
import { connectClient, requestJson } from '@mfa/messaging';
import { MfaApi } from '@mfa/console/dist/adapters/mfa-api.js';
import { Code } from '@mfa/radius/packet';
import { deployedNatsPasswords, eventually, FakeTwilio, freeUdpPort, itWith, repoRoot, startDeployedNatsServer, startStack, testEnv, toneWav, uniqueTenant, uniqueUser, type NatsServerProcess, type Stack } from '@mfa/testing';
import { runDemo } from './demo.js';
import { codeName, CraftedClient } from './radius/client.js';

type Reply = Record<string, unknown> & { error?: { code: string; message: string } };

const SERVICES_USER = 'mfa-services';
const IDP_USER = 'idp-example';
const IDP_INBOX = `_INBOX_${IDP_USER}`;
const CONSOLE_USER = 'mfa-console';
const CONSOLE_INBOX = '_INBOX_console';
const RADIUS_USER = 'mfa-radius';
const RADIUS_INBOX = '_INBOX_radius';
/** The services' master key check (libs/service-kit keyring-check.ts), which the RADIUS front takes part in. */
const KEYRING_FINGERPRINT_SUBJECT = 'mfa.int.keyring.fingerprint';

/**
 * The second wall: deploy/nats/nats-server.conf run by a nats-server of this test's own, with the
 * five services connected as the services' user, and the console and the RADIUS front each as
 * its own user. An IdP connected with its own user can use the public API and nothing else; the
 * console's user, the API and the object stores the console moves files through; the RADIUS
 * front's, the three challenge requests and the master key check. Every refusal is positive
 * evidence (the server's permissions violation, or the services' own count of dropped requests),
 * and next to it the same attempt succeeds for the services' user (for inboxes: the IdP's own
 * prefix), so no check passes merely because the attempt could not have worked anyway. The tests run in order: later ones use the
 * tenant and the sign-in of the first.
 */
describe('NATS permissions (deploy/nats): what an IdP, the console and the RADIUS front can and cannot do', () => {
  const passwords = deployedNatsPasswords();
  const twilio = new FakeTwilio();
  const tenant = uniqueTenant('wall');
  let server: NatsServerProcess;
  let stack: Stack;
  /** The console and the RADIUS front, each connected as its own user. */
  let fronts: Stack;
  let radiusPort: number;
  const radiusSecret = `wall-radius-${randomBytes(8).toString('hex')}`;
  let service: NatsConnection;
  let serviceJsm: JetStreamManager;
  let idp: NatsConnection;
  /** The console's and the RADIUS front's users, connected from this test. */
  let consoleNc: NatsConnection;
  let radiusNc: NatsConnection;
  /** The server's refusals of the IdP's operations, as nats.js reports them (status iterator). */
  const refusals: Error[] = [];
  const consoleRefusals: Error[] = [];
  const radiusRefusals: Error[] = [];
  const watch = (nc: NatsConnection, into: Error[]) =>
    void (async () => {
      for await (const status of nc.status()) if (status.type === 'error') into.push(status.error);
    })();
  const ask = (subject: string, body: unknown) => requestJson<Reply>(idp, subject, body, { timeoutMs: 10_000 });
  const refusedIn = (list: Error[], pattern: RegExp, what: string) =>
    eventually(async () => list.find((e) => e instanceof errors.PermissionViolationError && pattern.test(e.message)), 5_000, what);
  const refused = (pattern: RegExp, what: string) => refusedIn(refusals, pattern, what);

  before(async () => {
    await twilio.start();
    server = await startDeployedNatsServer(passwords);
    const database = new URL(testEnv.databaseUrl);
    database.pathname = `${database.pathname}_wall`;
    const env = {
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
    };
    const onLine = (name: string, line: string) => {
      if (/"level":"error"/.test(line)) process.stderr.write(`[${name}] ${line}\n`);
    };
    stack = await startStack({ env, onLine, readyTimeoutMs: 90_000 });
    // The fronts as deploy and docker-compose.yml run them: their own users and inbox prefixes.
    radiusPort = await freeUdpPort();
    fronts = await startStack({
      services: ['radius', 'console'],
      env,
      serviceEnv: {
        radius: {
          NATS_USER: RADIUS_USER,
          NATS_PASSWORD: passwords.radius,
          NATS_INBOX_PREFIX: RADIUS_INBOX,
          RADIUS_PORT: String(radiusPort),
          RADIUS_CLIENTS: JSON.stringify([{ cidr: '127.0.0.1/32', secret: radiusSecret, tenantId: tenant, name: 'wall-vpn' }]),
        },
        console: { NATS_USER: CONSOLE_USER, NATS_PASSWORD: passwords.console, NATS_INBOX_PREFIX: CONSOLE_INBOX },
      },
      onLine,
      readyTimeoutMs: 60_000,
    });
    service = await connectClient({ name: 'wall-service' }, { NATS_URL: server.url, NATS_USER: SERVICES_USER, NATS_PASSWORD: passwords.services });
    serviceJsm = await jetstreamManager(service);
    idp = await connectClient({ name: 'wall-idp' }, { NATS_URL: server.url, NATS_USER: IDP_USER, NATS_PASSWORD: passwords.idp, NATS_INBOX_PREFIX: IDP_INBOX });
    watch(idp, refusals);
    consoleNc = await connectClient({ name: 'wall-console' }, { NATS_URL: server.url, NATS_USER: CONSOLE_USER, NATS_PASSWORD: passwords.console, NATS_INBOX_PREFIX: CONSOLE_INBOX });
    watch(consoleNc, consoleRefusals);
    radiusNc = await connectClient({ name: 'wall-radius' }, { NATS_URL: server.url, NATS_USER: RADIUS_USER, NATS_PASSWORD: passwords.radius, NATS_INBOX_PREFIX: RADIUS_INBOX });
    watch(radiusNc, radiusRefusals);
  });

  after(async () => {
    await idp?.drain().catch(() => undefined);
    await consoleNc?.drain().catch(() => undefined);
    await radiusNc?.drain().catch(() => undefined);
    await service?.drain().catch(() => undefined);
    await fronts?.stop();
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

  itWith({ real: ['nats', 'redis', 'postgres'] }, 'the console’s user does what the console does, through the console’s own MfaApi: the API, recordings and token files in and out of the object stores', async () => {
    // The console process itself runs as mfa-console: its connection and /health (JetStream's account info) pass.
    assert.equal((await fetch(`${fronts.url('console')}/health`)).status, 200);
    const api = new MfaApi(consoleNc, undefined);
    const operator = { sub: 'wall-operator', name: 'Wall Operator' };
    const report = await api.call<Reply>(Subjects.reportsSigninsQuery, { tenantId: tenant, limit: 5 }, operator);
    assert.ok(Array.isArray(report.items), JSON.stringify(report));

    // A recording: put into MFA_VOICE_UPLOADS, taken by dispatch (voice.messages.upload) into
    // MFA_VOICE_MESSAGES, played back from there, deleted.
    const wav = toneWav(1);
    const upload = await api.putUpload(tenant, wav);
    const saved = await api.call<Reply>(Subjects.voiceMessagesUpload, { tenantId: tenant, type: 'greetingPin', language: 'sv', object: upload }, operator);
    assert.equal(saved.format, 'wav', JSON.stringify(saved));
    const played = await api.recording(tenant, 'greetingPin', 'sv');
    assert.ok(played, 'the recording plays back');
    assert.deepEqual(await bytesOf(played.body), wav);
    await api.call(Subjects.voiceMessagesDelete, { tenantId: tenant, type: 'greetingPin', language: 'sv' }, operator);
    assert.equal(await api.recording(tenant, 'greetingPin', 'sv'), undefined);

    // A token file of many chunks (128 KiB each), each read back by a message get of its own:
    // streamed into MFA_IMPORTS, counted, read back whole, deleted.
    const file = randomBytes(16 * 1024 * 1024);
    const { object, size } = await api.putImport(tenant, Readable.from([file]), MAX_IMPORT_FILE_BYTES);
    assert.equal(size, file.length);
    assert.equal(await api.consoleImports(tenant), 1);
    const read = await api.importFile(object);
    assert.ok(read, 'the file reads back');
    assert.ok((await bytesOf(read.body)).equals(file), 'the same bytes');
    await api.deleteImport(object);
    assert.equal(await api.consoleImports(tenant), 0);
    assert.equal(await api.importFile(object), undefined);
    // One over its limit fails as too large, and the chunks it had put are purged.
    const stored = async () => (await serviceJsm.streams.info(`OBJ_${IMPORTS_BUCKET}`)).state.messages;
    const before = await stored();
    await assert.rejects(api.putImport(tenant, Readable.from([randomBytes(700_000), randomBytes(700_000)]), 1024 * 1024), (e: unknown) => e instanceof ContractError && e.code === 'invalid_request');
    assert.equal(await stored(), before, 'nothing left of it');
    assert.deepEqual(consoleRefusals.map(String), [], 'nothing refused on the way');
  });

  itWith({ real: ['nats'] }, 'the console’s user can do nothing else: no subscription to the API, events or others’ inboxes, no event or internal subject, no other stream, no consumer (not even on its buckets), no writing a recording, no new bucket', async () => {
    for (const subject of ['mfa.v1.>', 'mfa.evt.>', 'mfa.int.>', '_INBOX.>', `${IDP_INBOX}.>`, '>']) {
      const closedWith = await closedWithin(consoleNc.subscribe(subject));
      assert.ok(closedWith instanceof errors.PermissionViolationError, `${subject}: ${String(closedWith)}`);
    }
    for (const subject of [EventSubjects.challengeApproved, 'mfa.int.wall', 'mfa.dlq.wall', 'mfa.state.keyring']) {
      consoleNc.publish(subject, '{}');
      await consoleNc.flush();
      await refusedIn(consoleRefusals, new RegExp(`Publish to "${subject.replace(/\./g, '\\.')}"`), `the refusal of ${subject}`);
    }
    // JetStream: account information (its /health) and its buckets only.
    const jsm = await jetstreamManager(consoleNc);
    await assert.rejects(jsm.streams.list().next(), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.(NAMES|LIST)"/);
    await assert.rejects(jsm.streams.info(Streams.challenges.name), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.INFO\.MFA_CHALLENGES"/);
    await assert.rejects(jsm.direct.getMessage(Streams.challenges.name, { last_by_subj: EventSubjects.smsRequested }), /Permissions Violation for Publish to "\$JS\.API\.DIRECT\.GET\./);
    await assert.rejects(jsm.streams.getMessage(Streams.challenges.name, { last_by_subj: EventSubjects.smsRequested }), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.MSG\.GET\.MFA_CHALLENGES"/);
    await assert.rejects(jsm.streams.purge(Streams.challenges.name), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.PURGE\.MFA_CHALLENGES"/);
    await assert.rejects(jsm.streams.delete(Streams.challenges.name), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.DELETE\.MFA_CHALLENGES"/);
    await assert.rejects(jsm.consumers.add(Streams.challenges.name, { name: 'wall-console', ack_policy: AckPolicy.Explicit }), /Permissions Violation for Publish to "\$JS\.API\.CONSUMER\.CREATE\.MFA_CHALLENGES/);
    await assert.rejects(jsm.streams.delete(`OBJ_${IMPORTS_BUCKET}`), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.DELETE\.OBJ_MFA_IMPORTS"/);
    await assert.rejects(new Objm(consoleNc).create('MFA_WALL'), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.(INFO|CREATE)\.OBJ_MFA_WALL"/);
    // No consumer on its own buckets either (it reads them by message gets): the server does not
    // check a push consumer's delivery subject against the creator's permissions, so one would
    // have the server publish bytes the console stored (an upload) to an event subject. The
    // services' user may create that same consumer: the refusal is the console's permissions.
    for (const bucket of [VoiceMessageBuckets.messages, IMPORTS_BUCKET, VoiceMessageBuckets.uploads]) {
      const consumer = { name: `wall-console-${bucket.toLowerCase()}`, deliver_subject: EventSubjects.challengeApproved, ack_policy: AckPolicy.None, filter_subject: `$O.${bucket}.C.>` };
      await assert.rejects(jsm.consumers.add(`OBJ_${bucket}`, consumer), new RegExp(`Permissions Violation for Publish to "\\$JS\\.API\\.CONSUMER\\.CREATE\\.OBJ_${bucket}\\.`));
      await assert.rejects(jsm.consumers.add(`OBJ_${bucket}`, { deliver_subject: EventSubjects.challengeApproved, ack_policy: AckPolicy.None }), new RegExp(`Permissions Violation for Publish to "\\$JS\\.API\\.CONSUMER\\.CREATE\\.OBJ_${bucket}"`));
      assert.equal((await serviceJsm.consumers.add(`OBJ_${bucket}`, { ...consumer, deliver_subject: `_INBOX.wall.${bucket}` })).config.deliver_subject, `_INBOX.wall.${bucket}`);
      await serviceJsm.consumers.delete(`OBJ_${bucket}`, consumer.name);
    }
    // It reads the tenants' recordings but never writes them: only dispatch does, from an upload.
    const messages = await new Objm(consoleNc).open(VoiceMessageBuckets.messages);
    const name = `${tenant}/greetingPin/xx`;
    const stored = async () => (await serviceJsm.streams.info(`OBJ_${VoiceMessageBuckets.messages}`)).state.last_seq;
    const before = await stored();
    // (nats.js then tries to purge what it put, and reports that refusal.)
    await assert.rejects(messages.putBlob({ name }, new Uint8Array(64)), /Permissions Violation for Publish to "\$(O\.MFA_VOICE_MESSAGES\.|JS\.API\.STREAM\.PURGE\.OBJ_MFA_VOICE_MESSAGES")/);
    await refusedIn(consoleRefusals, /Publish to "\$O\.MFA_VOICE_MESSAGES\.C\./, 'the refusal of the chunk');
    assert.equal(await stored(), before, 'nothing landed in MFA_VOICE_MESSAGES');
    // The same put as the services' user is stored: the refusals above are the permissions, not the bucket.
    const asService = await new Objm(service).open(VoiceMessageBuckets.messages);
    assert.equal((await asService.putBlob({ name }, new Uint8Array(64))).size, 64);
    // The object store's own reader (a consumer per read) is refused; the console's reads it.
    await assert.rejects(messages.get(name), /Permissions Violation for Publish to "\$JS\.API\.CONSUMER\.CREATE\.OBJ_MFA_VOICE_MESSAGES/);
    const played = await new MfaApi(consoleNc, undefined).recording(tenant, 'greetingPin', 'xx');
    assert.ok(played);
    assert.deepEqual(await bytesOf(played.body), Buffer.alloc(64));
    await asService.delete(name);
    assert.equal(consoleNc.isClosed(), false, 'refusals never closed the console’s connection');
  });

  itWith({ real: ['nats', 'redis'], fake: ['twilio'] }, 'the RADIUS front’s user: the front signs a user in by SMS over challenge.start and challenge.verify, and takes part in the master key check', async () => {
    // Booted as mfa-radius: the master key check at boot, its connection and /health pass.
    assert.equal((await fetch(`${fronts.url('radius')}/health`)).status, 200);
    // It answers the services' master key check (allow_responses): a booting service hears its key.
    const answers: string[] = [];
    for await (const m of await service.requestMany(KEYRING_FINGERPRINT_SUBJECT, '{}', { strategy: 'timer', maxWait: 1_000 })) answers.push(m.json<{ service: string }>().service);
    assert.ok(answers.includes('radius'), `answers from: ${answers.join(', ')}`);

    const userId = uniqueUser('wall-radius');
    const phoneNumber = '+14155550143';
    assert.equal((await ask(Subjects.usersRegister, { tenantId: tenant, userId, phoneNumber })).error, undefined);
    const vpn = await new CraftedClient(radiusPort, radiusSecret).open();
    try {
      // Projections are asynchronous: asked until the user is known to auth-challenge.
      const challenge = await eventually(async () => {
        const a = await vpn.send({ user: userId, password: 'vpn-password' });
        return a?.packet.code === Code.AccessChallenge ? a : undefined;
      }, 15_000, 'an Access-Challenge');
      const sms = await twilio.waitFor((m) => m.to === phoneNumber, 15_000);
      const accepted = await vpn.send({ user: userId, password: FakeTwilio.codeOf(sms), state: challenge.state });
      assert.equal(codeName(accepted?.packet.code ?? 0), 'Access-Accept');
    } finally {
      vpn.close();
    }
  });

  itWith({ real: ['nats'] }, 'the RADIUS front’s user can do nothing else: no other API request, no subscription but its inbox and the key check, no event, no JetStream but the account information', async () => {
    await assert.rejects(requestJson(radiusNc, Subjects.usersRegister, { tenantId: tenant, userId: uniqueUser('nobody') }, { timeoutMs: 5_000 }), /Permissions Violation for Publish to "mfa\.v1\.users\.register"/);
    await refusedIn(radiusRefusals, /Publish to "mfa\.v1\.users\.register"/, 'the refusal of users.register');
    for (const subject of [Subjects.reportsSigninsQuery, Subjects.clientsList, EventSubjects.challengeApproved, 'mfa.int.wall', 'mfa.state.keyring']) {
      radiusNc.publish(subject, '{}');
      await radiusNc.flush();
      await refusedIn(radiusRefusals, new RegExp(`Publish to "${subject.replace(/\./g, '\\.')}"`), `the refusal of ${subject}`);
    }
    for (const subject of ['mfa.v1.>', 'mfa.evt.>', 'mfa.int.>', '_INBOX.>', `${CONSOLE_INBOX}.>`, '>']) {
      const closedWith = await closedWithin(radiusNc.subscribe(subject));
      assert.ok(closedWith instanceof errors.PermissionViolationError, `${subject}: ${String(closedWith)}`);
    }
    const jsm = await jetstreamManager(radiusNc);
    await assert.rejects(jsm.streams.list().next(), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.(NAMES|LIST)"/);
    await assert.rejects(jsm.direct.getMessage(Streams.challenges.name, { last_by_subj: EventSubjects.smsRequested }), /Permissions Violation for Publish to "\$JS\.API\.DIRECT\.GET\./);
    await assert.rejects(new Objm(radiusNc).open(VoiceMessageBuckets.messages), /Permissions Violation for Publish to "\$JS\.API\.STREAM\.INFO\.OBJ_MFA_VOICE_MESSAGES"/);
    // Its own three requests do go through (the sign-in above); a status of nothing is answered.
    assert.equal((await requestJson<Reply>(radiusNc, Subjects.challengeStatus, { tenantId: tenant, challengeId: 'x' }, { timeoutMs: 10_000 })).error?.code, 'not_found');
    assert.equal(radiusNc.isClosed(), false, 'refusals never closed the front’s connection');
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

async function bytesOf(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}
