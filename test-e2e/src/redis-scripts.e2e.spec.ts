import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { globSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Cluster } from 'ioredis';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { generateDeviceKey, randomNonce, signDeviceData, signRequest, type DeviceKeyPair } from '@mfa/authenticator';
import { DeviceSigned, Headers, InternalSubjects, OATH_TOKEN_STATES, type AnyEvent, type ChallengeVerifyReply, type FraudFromAppRequest, type FraudReportReply, type OathTokenState } from '@mfa/contracts';
import { hashCode, internalRequestSigned, loadKeyring, phoneTag, signInternalRequest, totpStep } from '@mfa/crypto';
import {
  challengeId as challengeIdOf,
  deviceId as deviceIdOf,
  hashSlotOf,
  keySlotOf,
  parseChallengeId,
  PROJECTION_MISSING_SUBJECT,
  RedisKeys,
  slotMarkerKey,
  slotOutboxKey,
  slotStepsMarkerKey,
  STEPS_RESTORED_KEY,
  UserIndex,
  UserProjectionWriter,
  type RedisClient,
  type UserSnapshot,
} from '@mfa/projection';
import { createRedis, InternalReplays, InternalRequests, parseHostPorts, RedisLease, ReplicatedWrites, whenRedisReady, type RedisConnection } from '@mfa/service-kit';
import { createLogger, type Logger } from '@mfa/telemetry';
import { eventually, startNatsServer, startRedisCluster, startTogether, type NatsServerProcess, type RedisCluster } from '@mfa/testing';
import { ChallengeStore, type LockoutPolicy } from '@mfa/auth-challenge/dist/adapters/challenge.store.js';
import { decisionName, Outbox } from '@mfa/auth-challenge/dist/adapters/outbox.js';
import { DeviceApiService } from '@mfa/auth-challenge/dist/application/device-api.service.js';
import { OutboxRelay } from '@mfa/auth-challenge/dist/application/outbox-relay.js';
import { Sessions } from '@mfa/console/dist/adapters/sessions.js';
import { PENDING_LOGIN_KEY, PendingLogins } from '@mfa/console/dist/adapters/pending-login.js';
import { UploadSlots } from '@mfa/console/dist/adapters/upload-slots.js';
import { PhoneThrottle } from '@mfa/dispatch/dist/adapters/phone-throttle.js';
import { DeviceDirectory } from '@mfa/dispatch/dist/adapters/push/devices.js';
import { ReceiptRoutes } from '@mfa/dispatch/dist/adapters/receipt-routes.js';
import { SendGuard } from '@mfa/dispatch/dist/adapters/send-guard.js';
import { CallStore } from '@mfa/dispatch/dist/adapters/voice/call-store.js';
import { ChallengeDenial } from '@mfa/fraud/dist/adapters/challenge-denial.js';
import { BlockEnds } from '@mfa/fraud/dist/adapters/block-ends.js';
import { IpCounterKeys, IpCounters } from '@mfa/fraud/dist/adapters/ip-counters.js';
import { MailLedger } from '@mfa/fraud/dist/adapters/mail-ledger.js';
import { SeenRequests } from '@mfa/radius/adapters/seen-requests';
import { StateStore } from '@mfa/radius/adapters/state-store';
import { ActivationAttempts } from '@mfa/user-settings/dist/adapters/activation-attempts.js';
import { AppPasswordFailures } from '@mfa/user-settings/dist/adapters/app-password-failures.js';
import { ActivationCodes } from '@mfa/user-settings/dist/adapters/activation-codes.js';
import { OathInventory } from '@mfa/user-settings/dist/adapters/oath-inventory.js';
import { RememberedBrowsers } from '@mfa/user-settings/dist/adapters/remembered-browsers.js';
import { ProjectionRecovery } from '@mfa/user-settings/dist/application/projection-recovery.js';
import type { OathTokensService } from '@mfa/user-settings/dist/application/oath-tokens.service.js';
import type { UserProjector } from '@mfa/user-settings/dist/application/user-projector.js';
import { RedisRecorder, type RecordedCall } from './redis-recorder.js';

/**
 * Every Redis script of the product and every adapter that sends Redis commands, walked on a
 * Redis Cluster of the test's own (3 masters with 1 replica each; issue 17: "every script keeps
 * its keys in one hash slot; no command spans slots"). The adapters get the product's cluster
 * client (createRedis, as REDIS_MODE=cluster builds it) through a recorder, and their public
 * methods are called as the services call them, for two tenants with three users each, chosen so
 * that the keys of the users, and those of the tenants, fall on different masters. The scripts
 * that accept codes go through ReplicatedWrites with WAIT for 1 replica, on a connection of their
 * own, as in production.
 *
 * After the walk: every script defined was called and answered; each call kept its keys in one
 * hash slot; each script ran in at least 2 slots on at least 2 masters; every command an adapter
 * sent, alone, in a pipeline or in a MULTI, kept its keys in one slot; a pipeline or MULTI of the
 * service's connection stayed in one slot, one of ReplicatedWrites on one master and ended with
 * WAIT (the codes of one tick share it, for users of that master); no command failed, neither one
 * an adapter does not wait for (the lease's renewals) nor one whose error it only logs (the
 * outbox's batched removals). A TTL census of every master, before the users are erased and at
 * the end: each key without a TTL is in a family of LASTING, which says what bounds it. Then the
 * sources are scanned: a file that defines or runs a script must be in SCRIPT_SOURCES with the
 * scripts the walk saw from it, and a file that holds a RedisClient must have sent commands during
 * the walk or be in NOT_WALKED with the reason.
 *
 * Stand-ins: ProjectionRecovery reads an empty event log (a nats-server of the test's own) and
 * projects a user on demand through a UserProjector that writes the snapshot with the real
 * writer; the outbox relay publishes to a publisher that keeps the events; the device API's push
 * answers reach ChallengeStore through a ChallengeService that calls recordPushAnswer as it does;
 * its fraud reports reach, over the walk's NATS, a responder that checks the request's signature
 * and denies the push with fraud's ChallengeDenial, as the fraud service does.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Every product file that defines or runs a Redis script, and what the walk must see from it:
 * the scripts it defines (by name), how many texts it runs with EVAL, or, for ReplicatedWrites,
 * that it ran the scripts defined through it.
 */
const SCRIPT_SOURCES: Record<string, { scripts?: string[]; evals?: number; runsDecisions?: true }> = {
  'services/auth-challenge/src/adapters/challenge.store.ts': {
    scripts: ['mfaChallengeStart', 'mfaChallengeStatus', 'mfaChallengeResend', 'mfaChallengePushAnswer', 'mfaChallengeVerify', 'mfaChallengeVerifyTotp', 'mfaChallengeVoiceOutcome'],
  },
  'services/auth-challenge/src/application/device-api.service.ts': { scripts: ['mfaDevicePendingPush', 'mfaDeviceFraudUse'] },
  'services/dispatch/src/adapters/phone-throttle.ts': { scripts: ['mfaPhoneSendAdmit'] },
  'services/dispatch/src/adapters/send-guard.ts': { scripts: ['mfaSmsUndeliverable', 'mfaSendClaims', 'mfaSmsUndeliveredReceipt'] },
  'services/dispatch/src/adapters/receipt-routes.ts': { scripts: ['mfaSmsReceiptRoute'] },
  'services/dispatch/src/adapters/voice/call-store.ts': { scripts: ['mfaCallRecordOnce'] },
  'services/fraud/src/adapters/challenge-denial.ts': { scripts: ['mfaFraudDenyChallenge', 'mfaFraudChallengeRecorded', 'mfaFraudAdmitReport', 'mfaFraudNoteReport'] },
  'services/fraud/src/adapters/block-ends.ts': { scripts: ['mfaFraudRemoveEndedBlock'] },
  'services/fraud/src/adapters/ip-counters.ts': { scripts: ['mfaFraudCountIpDenial', 'mfaFraudCountIpStart'] },
  'services/user-settings/src/adapters/activation-attempts.ts': { scripts: ['mfaReserveActivationAttempt'] },
  'services/user-settings/src/adapters/app-password-failures.ts': { scripts: ['mfaReserveAppPasswordCheck', 'mfaReleaseAppPasswordCheck'] },
  'services/user-settings/src/adapters/oath-inventory.ts': { scripts: ['mfaPutOathToken'] },
  'services/user-settings/src/adapters/remembered-browsers.ts': { scripts: ['mfaForgetRemembered'] },
  'services/console/src/adapters/upload-slots.ts': { scripts: ['mfaTakeUploadSlot'] },
  'libs/projection/src/writer.ts': { scripts: ['mfaApplyUserSnapshot', 'mfaEraseUser', 'mfaRestoreTotpStep', 'mfaRestoreFailureGuard', 'mfaMarkUnregistered', 'mfaProjectBlock'] },
  'libs/projection/src/user-index.ts': { scripts: ['mfaReplaceUserTerms'] },
  'libs/service-kit/src/redis-lease.ts': { evals: 2 },
  'libs/service-kit/src/replicated-writes.ts': { runsDecisions: true },
};

/** Files that hold a RedisClient but send no command of their own in this walk, and why that is safe. */
const NOT_WALKED: Record<string, string> = {
  'libs/projection/src/client.ts': 'the RedisClient type itself',
  'libs/service-kit/src/redis.module.ts': 'builds the client (used here) and checks health with PING and INFO per node, keyless',
  'libs/service-kit/src/auth/api-key.guard.ts': 'hands the client to InternalReplays (walked)',
  'services/auth-challenge/src/app.module.ts': 'wiring only',
  'services/console/src/app.module.ts': 'wiring only',
  'services/dispatch/src/app.module.ts': 'wiring only',
  'services/fraud/src/app.module.ts': 'wiring only',
  'services/radius/src/app.module.ts': 'wiring only',
  'services/user-settings/src/app.module.ts':
    'wiring, and two closures that each touch one key of one user: HGETALL of the devices used, GET and MULTI INCR+EXPIRE of the app password failures',
};

/** A part of a key that varies within its family: as written in the example, as shown, as matched. */
interface KeyPart {
  text: string;
  label: string;
  pattern: string;
}
const USER_TAG: KeyPart = { text: '<tag>', label: '<tag>', pattern: '[A-Za-z0-9_-]{22}' };
const TENANT: KeyPart = { text: '<tenant>', label: '<tenant>', pattern: '[^{}]+' };
const TENANT_B64: KeyPart = { text: Buffer.from('<tenant>', 'utf8').toString('base64url'), label: '<tenant, base64url>', pattern: '[A-Za-z0-9_-]+' };
/** The hash tag of a per-slot key, braces included (a short base-36 string: see slotMarkerKey). */
const slotTag = (key: string): KeyPart => ({ text: key.slice(key.indexOf('{'), key.indexOf('}') + 1), label: '{<slot>}', pattern: '\\{[0-9a-z]+\\}' });

/** A family of keys: `example`, as a builder makes it, with `parts` standing for what varies. */
function keyFamily(example: string, ...parts: KeyPart[]): { name: string; family: RegExp } {
  const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  let source = escape(example);
  let name = example;
  for (const part of parts) {
    source = source.split(escape(part.text)).join(part.pattern);
    name = name.split(part.text).join(part.label);
  }
  return { name, family: new RegExp(`^${source}$`) };
}

/**
 * The keys meant to live without a TTL, and what bounds each family instead; the census after the
 * walk finds every other key with one. A key written without a TTL by mistake (HSETNX, HSET, SADD
 * on a key that expired between a read and the write makes it again, for good) is found there.
 */
const LASTING: Array<{ name: string; family: RegExp; bound: string }> = [
  // The user projection: what the event log says of each user, kept while the user exists.
  ...[RedisKeys.user, RedisKeys.totp, RedisKeys.totpSteps, RedisKeys.devices, RedisKeys.devicesUsed].map((key) => ({
    ...keyFamily(key(USER_TAG.text), USER_TAG),
    bound: "one per user, removed by the user's erasure (the user hash stays as a `seq` tombstone, one per user ever registered)",
  })),
  {
    ...keyFamily(RedisKeys.devicesMoved(USER_TAG.text), USER_TAG),
    bound: "one per earlier tag of a user with apps activated under an earlier master key: a field goes with the projection write that drops its app, the user's erasure, or the app's next request once it is gone",
  },
  {
    ...keyFamily(RedisKeys.consecutiveFailures(USER_TAG.text), USER_TAG),
    bound: 'one per user; no TTL by design: at the cap only an admin unlock lets the user in again (NIST SP 800-63B)',
  },
  // users.list's index and each user's terms (an erased user's: the erasure's sequence alone).
  { ...keyFamily(RedisKeys.userIndex(TENANT.text), TENANT_B64), bound: "one per tenant, an entry per search term of each user" },
  { ...keyFamily(RedisKeys.userIndexTerms(TENANT.text), TENANT_B64), bound: 'one per tenant, a field per user ever registered' },
  // The hardware token inventory of a tenant (oath-inventory.ts keeps its key names to itself).
  ...['tokens', ...['all', ...OATH_TOKEN_STATES].map((state) => `by:${state}`)].map((name) => ({
    ...keyFamily(`mfa:{oath:${TENANT.text}}:${name}`, TENANT),
    bound: 'one per tenant, an entry per hardware token imported',
  })),
  { ...keyFamily(slotOutboxKey(0), slotTag(slotOutboxKey(0))), bound: 'one per hash slot (16,384), a field per decision until JetStream acknowledged its event' },
  { ...keyFamily(slotMarkerKey(0), slotTag(slotMarkerKey(0))), bound: 'one per hash slot (16,384): the projection of its users is complete' },
  { ...keyFamily(slotStepsMarkerKey(0), slotTag(slotStepsMarkerKey(0))), bound: 'one per hash slot (16,384): its accepted TOTP steps are back after a loss' },
  { ...keyFamily(RedisKeys.userProjectionMarker), bound: 'one: the projection of this layout exists' },
  { ...keyFamily(STEPS_RESTORED_KEY), bound: 'one: a rebuild restored the accepted TOTP steps' },
  { ...keyFamily(PENDING_LOGIN_KEY), bound: "one for the deployment: the console's key for sign-ins under way" },
];

const { keyring } = loadKeyring({ NODE_ENV: 'test' });
const lockout: LockoutPolicy = { threshold: 10, windowSeconds: 900, lockoutSeconds: 900, maxConsecutiveFailures: 100 };
const METHODS = ['sms', 'totp', 'voice', 'push'];
const SMS_CODE = '482915';
const PUSH_NUMBER = '37';
const SERVER = { name: 'redis-scripts-walk', ip: '127.0.0.1' };
const PUSH_LIMITS = { maxPerWindow: 50, windowSeconds: 900, refusalsToSuspend: 50, suspendSeconds: 3600 };
/** The product's two leases (projection-recovery.ts, outbox-relay.ts). */
const PRODUCT_LEASES = ['mfa:projection:rebuild', 'mfa:outbox:relay'];
const TENANT_NAMES = ['contoso', 'fabrikam', 'northwind', 'adatum', 'litware', 'tailspin', 'woodgrove', 'wingtip', 'proseware', 'fourthcoffee'];

interface WalkUser {
  tenantId: string;
  userId: string;
  tag: string;
  slot: number;
  phoneNumber: string;
  /** `id`: the app's id, under another tag for every other user (activated under an earlier master key: found through its pointer there). */
  device: { nonce: string; key: DeviceKeyPair; id: string };
  seq: number;
}

interface Started extends WalkUser {
  nonce: string;
  challengeId: string;
}

/** A Logger that keeps what was logged at warn and error, for the checks after the walk. */
function keepingLogger(): Logger & { kept: Array<{ level: string; msg: string; error?: string }> } {
  const kept: Array<{ level: string; msg: string; error?: string }> = [];
  const keep = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
    const error = fields?.error instanceof Error ? fields.error.message : undefined;
    kept.push({ level, msg, ...(error ? { error } : {}) });
  };
  const logger: Logger = { debug: () => undefined, info: () => undefined, warn: keep('warn'), error: keep('error'), child: () => logger };
  return Object.assign(logger, { kept });
}

describe('Redis scripts and multi-key commands on a Redis Cluster', () => {
  const log = keepingLogger();
  const recorder = new RedisRecorder(ROOT);
  let cluster: RedisCluster;
  let nats: NatsServerProcess;
  let nc: NatsConnection;
  /** The connection the adapters share, and the decisions' own (both the product's cluster client). */
  let raw: Cluster;
  let rawDecisions: Cluster;
  let redis: RedisClient;
  let writes: ReplicatedWrites;
  let recovery: ProjectionRecovery | undefined;
  let walkMs = 0;
  /** How many masters the users' keys fell on. */
  let userMasters = 0;

  before(async () => {
    [cluster, nats] = await startTogether([startRedisCluster({ masters: 3, replicasPerMaster: 1 }), startNatsServer()]);
    const connection: RedisConnection = { mode: 'cluster', nodes: parseHostPorts('REDIS_NODES', cluster.nodes).addresses };
    raw = createRedis({ connection, connectionName: 'redis-scripts-walk', log: createLogger('redis-scripts-walk', { level: 'error' }) }) as Cluster;
    rawDecisions = createRedis({ connection, connectionName: 'redis-scripts-walk-decisions', log: createLogger('redis-scripts-walk', { level: 'error' }) }) as Cluster;
    await Promise.all([whenRedisReady(raw, connection, 20_000), whenRedisReady(rawDecisions, connection, 20_000)]);
    redis = recorder.wrap(raw, 'service');
    writes = new ReplicatedWrites(recorder.wrap(rawDecisions, 'decisions'), { replicas: 1, timeoutMs: 100 }, log, true);
    nc = await connect({ servers: nats.url });
  });

  after(async () => {
    await recovery?.onApplicationShutdown();
    await writes?.stop();
    await raw?.quit().catch(() => raw.disconnect());
    await nc?.close();
    await nats?.stop();
    await cluster?.stop();
  });

  const masterOf = (key: string): string => raw.slots[keySlotOf(key)]?.[0] ?? 'none';

  /** The keys without a TTL (PTTL -1) on every master of the cluster, and how many keys there were. */
  async function keysWithoutTtl(): Promise<{ scanned: number; lasting: string[] }> {
    const lasting: string[] = [];
    let scanned = 0;
    for (const node of raw.nodes('master')) {
      for await (const keys of node.scanStream({ count: 1000 }) as AsyncIterable<string[]>) {
        scanned += keys.length;
        const ttls = await Promise.all(keys.map((key) => node.pttl(key)));
        keys.forEach((key, i) => ttls[i] === -1 && lasting.push(key));
      }
    }
    return { scanned, lasting: lasting.sort() };
  }
  /** The census before the users are erased, when every user's keys are there. */
  let beforeErasure: { scanned: number; lasting: string[] } | undefined;

  /**
   * The first `count` candidates whose keys fall, family by family (each index of `keysOf`), on a
   * master none of the others took: keys of different users or tenants on different masters.
   */
  function onDistinctMasters<T>(candidates: readonly T[], keysOf: (c: T) => string[], count: number, taken: Array<Set<string>> = []): T[] {
    const picked: T[] = [];
    for (const candidate of candidates) {
      const masters = keysOf(candidate).map(masterOf);
      if (masters.some((m, family) => taken[family]?.has(m))) continue;
      masters.forEach((m, family) => (taken[family] ??= new Set()).add(m));
      picked.push(candidate);
      if (picked.length === count) return picked;
    }
    throw new Error(`fewer than ${count} of ${candidates.length} candidates fall on distinct masters: add candidates`);
  }

  const slotsOf = (keys: readonly string[]) => new Set(keys.map(keySlotOf));
  const describeCall = (c: RecordedCall) => `${c.client} ${c.name}${c.batch ? ` (in a ${c.batch})` : ''} from ${c.sources[0] ?? 'the test'}: ${c.keys.join(' ')}`;

  /** What Redis or ioredis refused, or would refuse, so far: said first when the walk stops on a wrong answer. */
  const slotProblems = () => [
    ...recorder.calls.filter((c) => slotsOf(c.keys).size > 1).map((c) => `keys in ${slotsOf(c.keys).size} slots: ${describeCall(c)}`),
    ...recorder.calls.filter((c) => c.outcome === 'error').map((c) => `failed: ${describeCall(c)}: ${c.error}`),
    ...recorder.batches.filter((b) => b.outcome === 'error').map((b) => `failed: ${b.client} ${b.kind} from ${b.sources[0] ?? 'the test'}: ${b.error}`),
  ];

  /** The walk: the product's adapters called as the services call them, for every user and tenant. */
  async function walk(): Promise<void> {
    const startedAt = Date.now();
    const writer = new UserProjectionWriter(redis, keyring);
    const index = new UserIndex(redis, keyring);
    const store = new ChallengeStore(redis, writes);
    const outbox = new Outbox(redis, log);
    const denial = new ChallengeDenial(redis);
    const ipCounters = new IpCounters(redis);
    const ledger = new MailLedger(redis);
    const blockEnds = new BlockEnds(redis);
    const guard = new SendGuard(redis);
    const throttle = new PhoneThrottle(redis, keyring, { maxSends: 3, windowSeconds: 3600, prefixMaxSends: 100, prefixGlobalMaxSends: 1000, prefixWindowSeconds: 3600 });
    const devices = new DeviceDirectory(redis);
    const receipts = new ReceiptRoutes(redis);
    const calls = new CallStore(redis);
    const attempts = new ActivationAttempts(redis, keyring, 600);
    const appPasswordChecks = new AppPasswordFailures(redis);
    const activationCodes = new ActivationCodes(redis, keyring);
    const oath = new OathInventory(redis);
    const remembered = new RememberedBrowsers(redis);
    const states = new StateStore(redis, keyring);
    const seen = new SeenRequests(redis, 600_000);
    const sessions = new Sessions(redis, 900);
    const pendingLogins = new PendingLogins(redis);
    const replays = new InternalReplays(redis);
    const uploadSlots = new UploadSlots(redis);

    // Two tenants whose tenant-wide keys (hardware tokens, users.list's index) are on different
    // masters, three users each on three masters, one phone number per tenant shared by its users.
    const tenants = onDistinctMasters(
      [...TENANT_NAMES, ...Array.from({ length: 40 }, (_, i) => `tenant-${i}`)],
      (t) => [`mfa:{oath:${t}}:tokens`, RedisKeys.userIndex(t)],
      2,
    );
    const phoneKey = (tenantId: string, phone: string) => RedisKeys.phoneSends(tenantId, phoneTag(keyring, tenantId, phone));
    const phoneTaken: Array<Set<string>> = [];
    const phones = new Map(
      tenants.map((t) => [t, onDistinctMasters(Array.from({ length: 40 }, (_, i) => `+4670${String(1_234_500 + i)}`), (p) => [phoneKey(t, p)], 1, phoneTaken)[0]!]),
    );
    const users: WalkUser[] = tenants.flatMap((tenantId) =>
      onDistinctMasters(Array.from({ length: 60 }, (_, i) => `user${i}@${tenantId}.example`), (u) => [RedisKeys.user(writer.tagOf(tenantId, u))], 3).map((userId, i) => {
        const tag = writer.tagOf(tenantId, userId);
        const nonce = randomBytes(16).toString('base64url');
        const id = deviceIdOf(i % 2 === 1 ? randomBytes(16).toString('base64url') : tag, nonce);
        return { tenantId, userId, tag, slot: hashSlotOf(tag), phoneNumber: phones.get(tenantId)!, device: { nonce, key: generateDeviceKey('ES256'), id }, seq: 1 };
      }),
    );
    const snapshotOf = (u: WalkUser): UserSnapshot => ({
      tenantId: u.tenantId,
      userId: u.userId,
      seq: u.seq,
      displayName: `Walk ${u.userId.split('@')[0]}`,
      email: u.userId,
      phoneNumber: u.phoneNumber,
      language: 'sv',
      methods: METHODS,
      defaultMethod: 'sms',
      phoneCountry: 'SE',
      totpTokens: [{ tokenId: 'app', secret: randomBytes(20), digits: 6, period: 30, activatedStep: 0 }],
      devices: [
        {
          nonce: u.device.nonce,
          device: {
            state: 'active',
            algorithm: 'ES256',
            publicKey: u.device.key.publicKey,
            platform: 'none',
            name: 'walk phone',
            activatedAt: new Date().toISOString(),
            ...(u.device.id !== deviceIdOf(u.tag, u.device.nonce) ? { id: u.device.id } : {}),
          },
        },
      ],
    });

    // user-settings' recovery: the whole rebuild from an (empty) event log, then one user
    // projected on demand when auth-challenge says it is missing.
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const projector = { rebuild: async (tenantId: string, userId: string) => writer.apply(snapshotOf(users.find((u) => u.tenantId === tenantId && u.userId === userId)!)) };
    recovery = new ProjectionRecovery({ nc, js, jsm }, redis, writer, projector as unknown as UserProjector, { reindex: async () => undefined } as unknown as OathTokensService, log);
    recovery.onApplicationBootstrap();
    await eventually(async () => ((await raw.exists(RedisKeys.userProjectionMarker)) === 1 ? true : undefined), 30_000, 'the projection rebuilt');
    const onDemand = users[0]!;
    nc.publish(PROJECTION_MISSING_SUBJECT, JSON.stringify({ tenantId: onDemand.tenantId, userId: onDemand.userId }));
    await eventually(async () => ((await raw.hget(RedisKeys.user(onDemand.tag), 'userId')) === onDemand.userId ? true : undefined), 10_000, 'the user projected on demand');
    for (const u of users.slice(1)) assert.equal(await writer.apply(snapshotOf(u)), true);

    // auth-challenge: starts, statuses, verifies (SMS, TOTP), resends, calls, pushes and the device API.
    const now = () => new Date();
    const start = async (u: WalkUser, method: string, options: { remember?: boolean; at?: Date } = {}) => {
      const nonce = randomBytes(16).toString('base64url').slice(0, 22);
      const challengeId = challengeIdOf(u.tag, nonce);
      const at = options.at ?? now();
      const expiresAt = new Date(at.getTime() + 300_000);
      const verdict = await store.startChallenge({
        tag: u.tag, nonce, tenantId: u.tenantId, userId: u.userId, requestedMethod: method, enabledMethods: METHODS, now: at, expiresAt,
        maxAttempts: 5, codeHash: method === 'sms' ? hashCode(keyring, challengeId, SMS_CODE) : undefined, ttlSeconds: 1200,
        smsMaxSends: 50, smsWindowSeconds: 3600, tenantKnown: true, lockout, challengeId, slot: u.slot, application: 'VPN',
        // The device API locates a push's client IP in a database it loads on first use: none for pushes.
        ...(method === 'push' ? {} : { clientIp: '198.51.100.20' }),
        context: JSON.stringify({ k: 'start', t: u.tenantId, u: u.userId, id: challengeId, n: at.getTime(), e: expiresAt.getTime(), m: 5, s: SERVER }),
        rememberDevice: options.remember === true, numberHash: method === 'push' ? hashCode(keyring, challengeId, PUSH_NUMBER) : undefined, push: PUSH_LIMITS,
      });
      return { started: { ...u, nonce, challengeId } as Started, verdict };
    };
    const where = (c: Started) => {
      const at = now();
      return {
        tag: c.tag, nonce: c.nonce, tenantId: c.tenantId, now: at, lockout, challengeId: c.challengeId, slot: c.slot,
        context: JSON.stringify({ k: 'verify', t: c.tenantId, id: c.challengeId, n: at.getTime(), s: SERVER }),
      };
    };
    const deviceApi = new DeviceApiService(redis, new InternalRequests(nc, keyring), {
      pushAnswer: async (req, at) => {
        const id = parseChallengeId(req.challengeId)!;
        const c = { ...users.find((u) => u.tag === id.tag)!, nonce: id.nonce, challengeId: req.challengeId };
        const verdict = await store.recordPushAnswer({
          ...where(c), now: at, deviceNonce: req.deviceNonce, fatigueWindowSeconds: PUSH_LIMITS.windowSeconds,
          numberHash: req.decision !== 'approve' ? undefined : req.number !== undefined ? hashCode(keyring, req.challengeId, req.number) : 'none',
        });
        const reply: ChallengeVerifyReply = verdict.kind === 'approved' ? { challengeId: req.challengeId, status: 'approved' } : { challengeId: req.challengeId, status: 'denied', reason: 'denied_by_user' };
        return { verdict, reply };
      },
    }, log);
    // The fraud service's side of a report from the app (InternalSubjects.fraudFromApp): a signed
    // request, the push denied for fraud (its pending marker cleared), then the reply.
    const fraudResponder = nc.subscribe(InternalSubjects.fraudFromApp, {
      callback: (_error, msg) => {
        void (async () => {
          if (!internalRequestSigned(keyring, msg.subject, msg.data, msg.headers?.get(Headers.internal) || undefined, Date.now())) {
            throw new Error('a fraud report without a valid Mfa-Internal signature');
          }
          const report = msg.json<FraudFromAppRequest>();
          const id = parseChallengeId(report.challengeId)!;
          const denied = await denial.denyPending(id.tag, id.nonce, report.tenantId, report.userId, now());
          const reply: FraudReportReply = { alertId: `walk-${report.challengeId}`, challengeDenied: denied.kind === 'denied', blocked: false };
          msg.respond(JSON.stringify(reply));
        })().catch((error: unknown) => {
          log.error('walk: the fraud responder failed', { error });
          msg.respond(JSON.stringify({ error: { code: 'internal', message: String(error) } }));
        });
      },
    });
    await nc.flush();
    const signed = (u: WalkUser, method: string, path: string, body = '') => {
      const headers = signRequest({ algorithm: 'ES256', privateKey: u.device.key.privateKeyPem, deviceId: u.device.id, method, pathWithQuery: path, body, now: Date.now(), nonce: randomNonce() });
      // Each user's phone from an address of its own: the device API counts failures per source (one key each).
      const source = `198.51.100.${users.indexOf(u) + 1}`;
      return { method, path, body: Buffer.from(body), headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])), source };
    };
    const decided: Started[] = [];

    for (const [i, u] of users.entries()) {
      const sms = await start(u, 'sms', { remember: true });
      assert.equal(sms.verdict.kind, 'pending');
      assert.equal((await store.readChallenge(u.tag, sms.started.nonce))?.status, 'pending');
      const wrong = await store.checkCode({ ...where(sms.started), codeHash: hashCode(keyring, sms.started.challengeId, '000000') });
      assert.equal(wrong.kind, 'rejected');
      const rememberId = randomBytes(16).toString('base64url');
      const right = await store.checkCode({ ...where(sms.started), codeHash: hashCode(keyring, sms.started.challengeId, SMS_CODE), remember: { id: rememberId, until: Date.now() + 86_400_000 } });
      assert.equal(right.kind, 'approved');
      decided.push(sms.started);

      // dispatch's side of an SMS: its send claims, a resend's, an undelivered one; the challenge resent; fraud denies it.
      const again = (await start(u, 'sms')).started;
      assert.equal((await guard.claim(again.challengeId, 60_000)).kind, 'claimed');
      await guard.sent(again.challengeId, 'twilio', `SM${i}`, 60_000, { seq: 7 });
      assert.equal((await guard.claim(again.challengeId, 60_000)).kind, 'sent');
      const resent = await store.resend({
        tag: u.tag, nonce: again.nonce, tenantId: u.tenantId, now: now(), lockout, maxSends: 5, minIntervalSeconds: 0, smsMaxSends: 50, smsWindowSeconds: 3600,
        challengeId: again.challengeId, slot: u.slot, context: JSON.stringify({ k: 'resend', t: u.tenantId, id: again.challengeId, n: Date.now(), s: SERVER }),
        smsAllowed: true, phoneCountries: { allowed: '*', blocked: 'KP' },
      });
      assert.equal(resent.kind, 'resent');
      assert.equal((await guard.claim(again.challengeId, 60_000, 1)).kind, 'claimed');
      const before = await guard.sendsBefore(again.challengeId, 2);
      assert.deepEqual(before.sends.map((s) => s?.kind), ['sent', 'in_progress']);
      assert.deepEqual(await guard.smsSendOf(again.challengeId, 'twilio', `SM${i}`), { index: 0, latest: 1 });
      await guard.release(again.challengeId, 1);
      await guard.undeliverable(again.challengeId, Date.now(), 'sms', undefined, 7);
      assert.equal(await guard.undeliveredReceipt(again.challengeId, Date.now()), true);
      assert.equal(await guard.tenantOf(again.challengeId), u.tenantId);
      // A message id per challenge (random), so the routes spread over the masters.
      await receipts.remember('smpp', `msg-${again.challengeId}`, { tenantId: u.tenantId, challengeId: again.challengeId });
      const route = await receipts.find('smpp', `msg-${again.challengeId}`);
      assert.equal(route?.kind === 'route' ? route.route.challengeId : route?.kind, again.challengeId);
      assert.equal((await denial.denyPending(u.tag, again.nonce, u.tenantId, u.userId, now())).kind, 'denied');
      assert.equal((await denial.denyPending(u.tag, again.nonce, u.tenantId, u.userId, now())).kind, 'already');
      await denial.markRecorded(u.tag, again.nonce);
      await denial.noteReport(u.tag, again.nonce, u.tenantId, u.userId, 0);
      assert.equal(((await denial.look(u.tag, again.nonce, u.tenantId, u.userId, now())) as { alertAfter?: number }).alertAfter, 0);
      assert.deepEqual(await denial.admitReport(u.tag, `walk-alert-${i}`, now(), { max: 10, windowMs: 3_600_000, denies: false }), {});
      // fraud's index of block ends (its own slots, by shard): a block that ended, found due and forgotten.
      await blockEnds.add(u.tenantId, u.userId, Date.now() - 1000);
      assert.ok((await blockEnds.due(now(), 1000)).some((b) => b.userId === u.userId));
      await blockEnds.removeEnded(u.tenantId, u.userId, now());

      const totp = (await start(u, 'totp')).started;
      const check = await store.checkCode({ ...where(totp), codeHash: hashCode(keyring, totp.challengeId, '123456') });
      assert.equal(check.kind, 'totp_check');
      const step = totpStep(Date.now());
      assert.equal((await store.recordTotpCheck({ ...where(totp), match: { matched: true, tokenId: 'app', step } })).kind, 'approved');
      assert.equal(await writer.restoreTotpStep(u.tenantId, u.userId, 'app', step + 1), true);
      decided.push(totp);

      const voice = (await start(u, 'voice')).started;
      await calls.create(voice.challengeId, { tenantId: u.tenantId, userId: u.userId, language: 'sv', pinMode: false, fraudCode: '0' }, 600_000);
      await calls.setCallSid(voice.challengeId, `CA${i}`);
      assert.equal(await calls.answerOnce(voice.challengeId, 1, '#'), true);
      assert.equal((await calls.read(voice.challengeId))?.callSid, `CA${i}`);
      // Named (dispatch's answer id): recorded once, the same answer again gets the same decision.
      assert.equal((await store.recordVoiceOutcome({ ...where(voice), approved: true, answerId: `CAwalk${i}:1` })).kind, 'approved');
      assert.equal((await store.recordVoiceOutcome({ ...where(voice), approved: true, answerId: `CAwalk${i}:1` })).kind, 'approved');
      assert.equal(await calls.finish(voice.challengeId, 'approved'), true);
      decided.push(voice);
      // A call whose record expired between a webhook's read and its write (it waits up to 10 s for
      // other services in between): every write leaves it gone (the TTL census below would find it).
      const expired = (await start(u, 'voice')).started;
      await calls.create(expired.challengeId, { tenantId: u.tenantId, userId: u.userId, pinMode: true, fraudCode: null }, 600_000);
      await raw.del(RedisKeys.call(expired.tag, expired.nonce));
      await calls.setCallSid(expired.challengeId, `CAgone${i}`);
      await calls.answerOnce(expired.challengeId, 1, 'check_pin');
      await calls.finish(expired.challengeId, 'unanswered');

      // dispatch's side of a push no device got (an APNs or FCM outage): it no longer waits for the
      // user, so the next start naming push is not rate_limited (and, below, it is not counted as ignored).
      const undelivered = await start(u, 'push');
      assert.equal(undelivered.verdict.kind, 'pending');
      await guard.undeliverable(undelivered.started.challengeId, Date.now(), 'push');
      const next = await start(u, 'push');
      assert.equal(next.verdict.kind, 'pending', 'a start naming push after one no device got');
      const push = next.started;
      const { devices: found } = await devices.of(u.tag);
      assert.deepEqual(found.map((d) => d.nonce), [u.device.nonce]);
      const claims = await guard.claimPush(push.challengeId, [u.device.nonce, 'spare-device'], 60_000);
      assert.deepEqual(claims.map((c) => c.kind), ['claimed', 'claimed']);
      await guard.pushSent(push.challengeId, u.device.nonce, 'fcm', `push-${i}`, 60_000);
      await guard.releasePush(push.challengeId, ['spare-device', 'gone-device']);
      const pending = await deviceApi.pending(signed(u, 'GET', '/device/v1/challenges/pending'));
      assert.equal(pending.challenge?.challengeId, push.challengeId);
      // A request whose signature does not cover what was sent: refused, and counted against its source.
      await assert.rejects(deviceApi.pending({ ...signed(u, 'GET', '/device/v1/challenges/pending'), path: '/device/v1/challenges/pending?changed' }), /Mfa-Signature/);
      const decision = i % 2 === 0 ? 'approve' : 'deny';
      const number = decision === 'approve' ? PUSH_NUMBER : undefined;
      const body = JSON.stringify({ decision, ...(number ? { number } : {}), signature: signDeviceData('ES256', u.device.key.privateKeyPem, DeviceSigned.answer(push.challengeId, decision, number)) });
      const answered = await deviceApi.answer(signed(u, 'POST', `/device/v1/challenges/${push.challengeId}/answer`, body), push.challengeId);
      assert.equal(answered.status, decision === 'approve' ? 'approved' : 'denied');
      decided.push(push);
      // The next push reported as fraud from the app: fraud denies it, and the device's use is
      // recorded while the user still has it (FRAUD_USE_SCRIPT, in the user's slot).
      const reported = await start(u, 'push');
      assert.equal(reported.verdict.kind, 'pending');
      const fraudBody = JSON.stringify({ decision: 'fraud', signature: signDeviceData('ES256', u.device.key.privateKeyPem, DeviceSigned.answer(reported.started.challengeId, 'fraud', undefined)) });
      await raw.hdel(RedisKeys.devicesUsed(u.tag), u.device.nonce);
      const fraudAnswer = await deviceApi.answer(signed(u, 'POST', `/device/v1/challenges/${reported.started.challengeId}/answer`, fraudBody), reported.started.challengeId);
      assert.deepEqual(fraudAnswer, { status: 'denied', reason: 'fraud_reported' });
      assert.equal((await store.readChallenge(u.tag, reported.started.nonce))?.status, 'denied');
      assert.ok(Number(await raw.hget(RedisKeys.devicesUsed(u.tag), u.device.nonce)) > 0, 'the reporting device’s use recorded');
      // A start that may push, once the undelivered push has expired, does not count it as ignored.
      const afterExpiry = new Date(Number(await raw.hget(RedisKeys.challenge(u.tag, undelivered.started.nonce), 'expiresAt')) + 1000);
      assert.equal((await start(u, 'push', { at: afterExpiry })).verdict.kind, 'pending');
      assert.equal(await raw.zscore(RedisKeys.pushRefusals(u.tag), undelivered.started.challengeId), null, 'the undelivered push is not counted as ignored');

      // user-settings: remembered browsers, activation attempts and codes, lockouts and blocks.
      assert.deepEqual((await remembered.list(u.tag, now())).map((b) => b.rememberId), [rememberId]);
      assert.equal(await remembered.revoke(u.tag, rememberId), 1);
      assert.equal(await remembered.revoke(u.tag), 0);
      await remembered.forgetUpTo(u.tag, Date.now());
      await remembered.clear(u.tag);
      assert.equal(await attempts.reserve(u.tenantId, u.userId, 'hw-1'), true);
      assert.equal(await attempts.reserve(u.tenantId, u.userId, 'hw-1'), true);
      await attempts.clear(u.tenantId, u.userId, 'hw-1');
      assert.equal(await appPasswordChecks.reserve(u.tag), 'ok');
      await appPasswordChecks.release(u.tag);
      const issued = await activationCodes.issue(u.tenantId, u.userId, u.tag, new Date(), randomBytes);
      assert.equal(await activationCodes.outstanding(u.tag), true);
      const taken = await activationCodes.take(issued.code);
      assert.deepEqual([taken?.tenantId, taken?.userId], [u.tenantId, u.userId]);
      await activationCodes.giveBack(taken!);
      assert.equal((await activationCodes.take(issued.code))?.userId, u.userId, 'given back, taken again');
      // A user the log holds nothing of, looked up during a rebuild: marked, never over a user hash.
      assert.equal(await writer.markUnregistered(u.tenantId, `${u.userId}-unregistered`), true);
      assert.equal(await writer.markUnregistered(u.tenantId, u.userId), false);
      assert.equal(await writer.restoreFailureGuard(u.tenantId, u.userId, { failures: 2, resetAt: Date.now() + 600_000, consecutive: 2 }, now()), true);
      assert.equal(await writer.hasLockouts(u.tenantId, u.userId), true);
      assert.equal(await writer.clearLockouts(u.tenantId, u.userId), 2);
      await writer.block(u.tenantId, u.userId, Date.now() + 60_000, 1);
      assert.equal((await start(u, 'sms')).verdict.kind, 'blocked');
      await writer.unblock(u.tenantId, u.userId, 2);
      // As fraud's block projector: with the event's sequence, an older one changes nothing.
      assert.equal(await writer.block(u.tenantId, u.userId, Date.now() + 60_000, 7), true);
      assert.equal(await writer.unblock(u.tenantId, u.userId, 6), false);
      assert.equal(await writer.unblock(u.tenantId, u.userId, 8), true);

      // RADIUS States and console sessions (one key each).
      const code = { tenantId: u.tenantId, client: '10.0.0.0/8', userId: u.userId, challengeId: sms.started.challengeId, method: 'sms' as const, expiresAt: new Date(Date.now() + 60_000).toISOString() };
      const state = (await states.issue(code, Date.now()))!;
      assert.equal((await states.take(state, code))?.userId, u.userId);
      await states.restore(state, code, Date.now());
      assert.equal((await states.take(state, code))?.userId, u.userId);
      // RADIUS Access-Requests taken once (a replay is refused), and forgotten when left unanswered.
      const request = randomBytes(16);
      assert.equal(await seen.firstSight({ tenantId: u.tenantId, client: '10.0.0.0/8' }, request), true);
      assert.equal(await seen.firstSight({ tenantId: u.tenantId, client: '10.0.0.0/8' }, request), false);
      await seen.forget({ tenantId: u.tenantId, client: '10.0.0.0/8' }, request);
      assert.equal(await seen.firstSight({ tenantId: u.tenantId, client: '10.0.0.0/8' }, request), true);
      const session = await sessions.create({ operator: { sub: u.userId }, roles: [`tenant-admin:${u.tenantId}`], via: 'dev' }, Date.now());
      assert.equal((await sessions.load(session, Date.now()))?.operator.sub, u.userId);
      await sessions.destroy(session);
      // The console's key for sign-ins under way: one key, made by the first instance.
      const login = { state: 's', nonce: 'n', verifier: 'v', returnTo: '/' };
      assert.deepEqual(await pendingLogins.open(await pendingLogins.seal(login, Date.now()), Date.now()), login);
      // The console's upload slots of a tenant (one key).
      const uploadSlot = await uploadSlots.take(u.tenantId, 4, Date.now());
      assert.ok(uploadSlot);
      await uploadSlots.give(u.tenantId, uploadSlot.slot);
      // A signed internal request, answered once (one key, in its own slot).
      const signature = signInternalRequest(keyring, 'mfa.int.walk', JSON.stringify({ tenantId: u.tenantId }), Date.now());
      assert.deepEqual([await replays.firstUse(signature, Date.now()), await replays.firstUse(signature, Date.now())], [true, false]);
    }

    fraudResponder.unsubscribe();

    // Codes of every user accepted in one tick: ReplicatedWrites sends one pipeline per master.
    const tick = await Promise.all(users.map(async (u) => (await start(u, 'sms')).started));
    const accepted = await Promise.all(tick.map((c) => store.checkCode({ ...where(c), codeHash: hashCode(keyring, c.challengeId, SMS_CODE) })));
    assert.deepEqual(accepted.map((v) => v.kind), users.map(() => 'approved'));
    decided.push(...tick);

    // Per tenant: users.list, hardware tokens, per-IP counters, alert mails, then the phone
    // number's throttle copied into every user's slot (their next SMS start is refused).
    for (const [t, tenantId] of tenants.entries()) {
      const own = users.filter((u) => u.tenantId === tenantId);
      assert.equal((await index.list(tenantId, { limit: 10 })).items.length, own.length);
      assert.equal((await index.list(tenantId, { query: 'walk', blocked: false, limit: 2 })).items.length, 2);
      assert.deepEqual((await index.usersWithPhone(tenantId, phones.get(tenantId)!, 10)).sort(), own.map((u) => u.userId).sort());
      const inventory: OathTokenState[] = ['unassigned', 'assigned', 'active'];
      for (const [n, state] of inventory.entries()) {
        const item = { serialNumber: `SN${t}${n}`, tokenId: `hw-${n}`, state, algorithm: 'SHA1' as const, digits: 6, period: 30, importedAt: new Date().toISOString(), ...(state === 'unassigned' ? {} : { userId: own[n]!.userId }) };
        assert.equal(await oath.put(tenantId, item, n + 1), true);
      }
      assert.equal((await oath.list(tenantId, { limit: 10 })).items.length, 3);
      assert.deepEqual((await oath.list(tenantId, { state: 'active', limit: 10 })).items.map((x) => x.serialNumber), [`SN${t}2`]);
      assert.equal((await oath.get(tenantId, `SN${t}0`))?.state, 'unassigned');
      const ips = onDistinctMasters(Array.from({ length: 60 }, (_, n) => `203.0.113.${n + 1}`), (ip) => [IpCounterKeys.denials(tenantId, ip)], 2);
      for (const ip of ips) {
        for (const [n, u] of own.entries()) {
          const window = await ipCounters.countDenial(tenantId, ip, `denial-${t}-${n}`, u.tag, now(), now(), 15);
          assert.deepEqual(window, { failures: n + 1, users: n + 1 });
          await ipCounters.countStart(tenantId, ip, `start-${t}-${n}`, now(), now(), 3600);
        }
        await ipCounters.reset(tenantId, ip);
      }
      const alertId = `alert-${tenantId}`;
      await ledger.record(alertId, { to: `admin@${tenantId}.example`, sent: true, detail: `<${alertId}@mail>`, attempts: 1 });
      assert.equal((await ledger.outcomes(alertId)).get(`admin@${tenantId}.example`)?.sent, true);
      const phone = phones.get(tenantId)!;
      for (const u of own) assert.deepEqual(await throttle.admit(tenantId, phone, `${u.tag}.sms-${u.userId}`, Date.now()), { admitted: true });
      assert.equal((await throttle.admit(tenantId, phone, `${own[0]!.tag}.one-more`, Date.now())).admitted, false);
      for (const u of own) {
        const { verdict } = await start(u, 'sms');
        assert.equal(verdict.kind === 'rate_limited' ? verdict.scope : verdict.kind, 'phone', `${u.userId}: the number's throttle is in the user's slot`);
      }
    }

    // The leases: the product's two, and one on a master they are not on; each held long enough to be renewed.
    const leaseKeys = [...PRODUCT_LEASES, ...onDistinctMasters(Array.from({ length: 60 }, (_, n) => `mfa:walk:lease:${n}`), (k) => [k], 1, [new Set(PRODUCT_LEASES.map(masterOf))])];
    await Promise.all(
      leaseKeys.map(async (key) => {
        const lease = new RedisLease(redis, key, 300);
        assert.equal(await lease.acquire(), true);
        await lease.hold(() => sleep(250));
      }),
    );

    // The outbox: removals batched over many slots, one decision deferred and relayed by its own
    // instance, then a full pass (under its lease) over every slot's outbox relays the rest.
    for (const c of decided.slice(0, 6)) outbox.remove(c.slot, decisionName(c.challengeId, 'pending'));
    await outbox.flush();
    for (const c of decided.slice(0, 6)) assert.equal(await outbox.read(slotOutboxKey(c.slot), decisionName(c.challengeId, 'pending')), undefined);
    const published: string[] = [];
    const relay = new OutboxRelay(
      outbox,
      { eventOfRecord: (record: { c: { id: string } }) => ({ subject: 'mfa.evt.walk', event: { id: record.c.id } as unknown as AnyEvent }) } as never,
      { publish: async (_subject: string, event: { id: string }) => (published.push(event.id), { duplicate: false }) } as never,
      redis,
      log,
    );
    const deferred = decided[6]!;
    outbox.defer(deferred.slot, decisionName(deferred.challengeId, 'pending'));
    assert.equal(await relay.ownPass(), 1);
    const relayed = await relay.fullPass(() => Date.now() + 3_600_000);
    assert.ok(relayed > users.length * 5, `the full pass relayed ${relayed} decisions`);
    for (const slot of new Set(users.map((u) => u.slot))) assert.equal(await raw.hlen(slotOutboxKey(slot)), 0);

    beforeErasure = await keysWithoutTtl();
    // users.delete: every user erased; a start for an erased user finds no user.
    for (const u of users) assert.equal(await writer.erase(u.tenantId, u.userId, ++u.seq), true);
    assert.equal((await start(users[0]!, 'sms')).verdict.kind, 'registration_required');
    assert.equal((await index.list(tenants[0]!, { limit: 10 })).items.length, 0);

    await recovery.onApplicationShutdown();
    recovery = undefined;
    // What an adapter started without waiting (the lease's renewals) has answered too.
    await eventually(async () => (recorder.calls.every((c) => c.outcome !== 'pending') && recorder.wire.every((w) => w.outcome !== 'pending') ? true : undefined), 5_000, 'every call answered');
    walkMs = Date.now() - startedAt;
    userMasters = new Set(users.map((u) => masterOf(RedisKeys.user(u.tag)))).size;
  }

  it('walks every script and multi-key command; each stays in one hash slot, no command spans slots', { timeout: 120_000 }, async () => {
    try {
      await walk();
    } catch (error) {
      const problems = slotProblems();
      if (problems.length === 0) throw error;
      throw new Error(`the walk stopped (${(error as Error).message.split('\n')[0]}) after:\n${problems.join('\n')}`, { cause: error });
    }

    const crossSlot = recorder.calls.filter((c) => slotsOf(c.keys).size > 1);
    assert.deepEqual(crossSlot.map(describeCall), [], 'commands or scripts whose keys span slots');
    const failed = recorder.calls.filter((c) => c.outcome === 'error');
    assert.deepEqual(failed.map((c) => `${describeCall(c)}: ${c.error}`), [], 'commands or scripts that failed');
    const wireCrossSlot = recorder.wire.filter((w) => slotsOf(w.keys).size > 1);
    assert.deepEqual(wireCrossSlot.map((w) => `${w.client} ${w.name} ${w.keys.join(' ')}`), [], 'commands sent to a node with keys in several slots');
    // NOSCRIPT is how ioredis learns that a node has not seen a script yet (it sends the text then).
    const wireErrors = recorder.wire.filter((w) => w.outcome === 'error' && !/^NOSCRIPT/.test(w.error ?? ''));
    assert.deepEqual(wireErrors.map((w) => `${w.client} ${w.name} ${w.keys.join(' ')}: ${w.error}`), [], 'commands a node refused');
    assert.deepEqual(log.kept.filter((l) => l.level === 'error' || /failed|could not/.test(l.msg)), [], 'errors the adapters only logged');

    for (const b of recorder.batches) {
      const keys = b.calls.flatMap((c) => c.keys);
      const label = `${b.client} ${b.kind} of ${b.calls.map((c) => c.name).join(', ')} from ${b.sources[0] ?? 'the test'}`;
      assert.equal(b.outcome, 'ok', `${label}: ${b.error}`);
      if (b.client === 'decisions') {
        assert.equal(new Set(keys.map(masterOf)).size, 1, `${label}: one master per pipeline`);
        assert.equal(b.calls.at(-1)?.name, 'wait', `${label}: ended by WAIT`);
      } else {
        assert.equal(slotsOf(keys).size, 1, `${label}: one slot`);
      }
    }
    const shared = recorder.batches.filter((b) => b.client === 'decisions' && slotsOf(b.calls.flatMap((c) => c.keys)).size > 1);
    assert.ok(shared.length > 0, 'decisions of users in different slots of one master went in one pipeline');

    const report: string[] = [];
    for (const script of recorder.scripts.values()) {
      const own = recorder.calls.filter((c) => c.script === script.name);
      const slots = slotsOf(own.flatMap((c) => c.keys));
      const masters = new Set(own.flatMap((c) => c.keys.map(masterOf)));
      const ok = own.filter((c) => c.outcome === 'ok').length;
      report.push(`${script.name} (${script.source}${script.via === 'defineCommand' ? '' : `, ${script.via}`}): ${own.length} calls, ${slots.size} slots, ${masters.size} masters`);
      assert.ok(ok > 0, `${script.name} was defined but never answered a call`);
      assert.ok(slots.size >= 2, `${script.name} ran in ${slots.size} slot(s): the walk must give it keys of different users or tenants`);
      assert.ok(masters.size >= 2, `${script.name} ran on ${masters.size} master(s)`);
    }
    const byClient = (client: string) => recorder.calls.filter((c) => c.client === client && !c.script && c.keys.length > 0);
    const multiKey = recorder.calls.filter((c) => !c.script && c.keys.length > 1);
    process.stdout.write(
      [
        `# walk: ${walkMs} ms; ${recorder.scripts.size} scripts, ${recorder.calls.length} calls (${byClient('service').length} keyed commands, ${multiKey.length} of them multi-key), ` +
          `${recorder.batches.length} pipelines and MULTIs, ${recorder.wire.length} commands on the wire; users on ${userMasters} masters`,
        ...report.map((line) => `#   ${line}`),
        '',
      ].join('\n'),
    );
  });

  it('leaves no key without a TTL but those meant to have none, before the users are erased and after', async () => {
    assert.ok(beforeErasure, 'the walk ran');
    const censuses = { 'before the erasure': beforeErasure, 'at the end': await keysWithoutTtl() };
    const seen = new Map<string, number>();
    for (const [when, census] of Object.entries(censuses)) {
      const strays = census.lasting.filter((key) => {
        const allowed = LASTING.find((l) => l.family.test(key));
        if (allowed) seen.set(allowed.name, (seen.get(allowed.name) ?? 0) + 1);
        return !allowed;
      });
      assert.deepEqual(strays, [], `keys without a TTL ${when} of the walk, in no family of LASTING: give them a TTL, or say in LASTING what bounds them`);
      process.stdout.write(`# TTL census ${when}: ${census.scanned} keys, ${census.lasting.length} without a TTL, each in a family of LASTING\n`);
    }
    process.stdout.write(`# kept without a TTL, by family (both censuses):\n${LASTING.map((l) => `#   ${l.name}: ${seen.get(l.name) ?? 0}`).join('\n')}\n`);
  });

  it('walks every file that defines or runs a script, and every file that holds a Redis client', () => {
    assert.ok(recorder.calls.length > 0, 'the walk ran');
    const sources = globSync(['services/*/src/**/*.ts', 'libs/*/src/**/*.ts'], { cwd: ROOT })
      .map((f) => f.split('\\').join('/'))
      .filter((f) => !/\.spec\.ts$|spec-support\.ts$|\.d\.ts$/.test(f) && !f.startsWith('libs/testing/'))
      .sort();
    const text = new Map(sources.map((f) => [f, readFileSync(resolve(ROOT, f), 'utf8')]));

    const scriptFiles = sources.filter((f) => /\bdefineCommand\(|\.define\(|\.eval\(|\bevalsha\b/i.test(text.get(f)!));
    const unlisted = scriptFiles.filter((f) => !(f in SCRIPT_SOURCES));
    assert.deepEqual(unlisted, [], 'files that define or run Redis scripts the walk does not cover: call their adapters in the walk above and list them in SCRIPT_SOURCES');
    const scripts = [...recorder.scripts.values()];
    for (const [file, expected] of Object.entries(SCRIPT_SOURCES)) {
      assert.ok(scriptFiles.includes(file), `${file} is listed in SCRIPT_SOURCES but defines or runs no script any more`);
      const seen = scripts.filter((s) => s.source === file);
      if (expected.scripts) {
        assert.deepEqual(seen.filter((s) => s.via !== 'eval').map((s) => s.name).sort(), [...expected.scripts].sort(), `${file}: the scripts the walk saw it define`);
      }
      if (expected.evals !== undefined) {
        assert.equal(seen.filter((s) => s.via === 'eval').length, expected.evals, `${file}: the texts the walk saw it run with EVAL`);
      }
      if (expected.runsDecisions) {
        const decisions = scripts.filter((s) => s.via === 'ReplicatedWrites.define');
        assert.ok(decisions.length > 0, `${file}: no script was defined through ReplicatedWrites`);
        for (const s of decisions) {
          assert.ok(recorder.calls.some((c) => c.script === s.name && c.client === 'decisions' && c.batch === 'pipeline' && c.outcome === 'ok'), `${s.name}: run through ReplicatedWrites' pipelines`);
        }
      }
    }
    const unattributed = scripts.filter((s) => s.source === undefined || !(s.source in SCRIPT_SOURCES));
    assert.deepEqual(unattributed.map((s) => `${s.name} (${s.source ?? 'no product file on the stack'})`), [], 'scripts from files not listed in SCRIPT_SOURCES');

    const clientFiles = sources.filter((f) => /\bRedisClient\b/.test(text.get(f)!));
    const walked = new Set(recorder.calls.flatMap((c) => c.sources));
    const notWalked = clientFiles.filter((f) => !walked.has(f) && !(f in NOT_WALKED));
    assert.deepEqual(notWalked, [], 'files holding a RedisClient that sent no command in the walk: call them in the walk above, or say in NOT_WALKED why not');
    for (const file of Object.keys(NOT_WALKED)) assert.ok(clientFiles.includes(file), `${file} is listed in NOT_WALKED but holds no RedisClient any more`);
    process.stdout.write(`# sources: ${scriptFiles.length} files with scripts, ${clientFiles.length} with a RedisClient (${clientFiles.filter((f) => walked.has(f)).length} walked)\n`);
  });
});
