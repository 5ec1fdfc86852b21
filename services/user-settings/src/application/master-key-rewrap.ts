import { z } from 'zod';
import { ContractError, EventSubjects, IMPORTS_BUCKET, Streams, subjectIds, type Operator } from '@mfa/contracts';
import { open, rewrapDataKey, seal, SealContext, sealedKeyId, SealError, userTag, type Keyring, type SealScope } from '@mfa/crypto';
import {
  ConcurrencyError,
  createEvent,
  deleteMessageIfPresent,
  EventPublisher,
  isObjectStoreNotFound,
  isWrongLastSequence,
  nextMessageOn,
  publishWithRetry,
  readAggregate,
  readOnce,
  type NatsClients,
} from '@mfa/messaging';
import { createLogger, type Logger } from '@mfa/telemetry';
import { latestDataKeyRecord, parseStoredDataKey, type StoredDataKey } from '@mfa/service-kit';
import { Objm } from '@nats-io/obj';
import { IMPORT_JOBS_BUCKET } from '../adapters/import-jobs.js';
import { EventStore } from '../adapters/event-store.js';
import type { Decider } from '../domain/events.js';
import { decideOathToken, oathTokenDecider, type OathTokenState } from '../domain/oath-token.js';
import { decideUser, userDecider, type ResealSecrets, type UserState } from '../domain/user.js';
import { eachAggregate } from './each-subject.js';
import { secretContext } from './user-snapshot.js';

/**
 * After a master key rotation: moves and wraps again every user's data key still under a previous
 * master key (MFA_USER_KEYS), and counts, per key id (`kid`, the key's public fingerprint), what
 * still needs each previous key, so the operator knows when one can leave
 * MFA_PREVIOUS_ENCRYPTION_KEYS. Runs while the services run: every write is conditional on what
 * was read (expect.lastSubjectSequence), so it never replaces an erasure's tombstone nor a key the
 * services wrote meanwhile; a write that lost is left to the winner and counted (`raced`). Re-running
 * it redoes only what is left, so an interrupted run is resumed by running it again.
 *
 * Secrets sealed directly under the master key in MFA_USER_SETTINGS events (TOTP and hardware
 * token secrets, voice PIN hashes, push tokens, the inventory's token secrets) are immutable: the
 * ones the current state of a user or token still uses under another key are sealed again under
 * the current key, with the same SealContext, in a new event (SecretsResealed, OathTokenResealed)
 * appended on the aggregate's last sequence as read, through its decider: a change meanwhile (a
 * token enrolled, a PIN set again) wins, the reseal is counted `raced` and left to the next run.
 * The old events stay: history, readable by whoever holds the previous key and a copy of the log.
 *
 * A run that wrote records each tenant whose data it changed (a data key moved, wrapped again or a
 * copy deleted, a secret sealed again) in that tenant's admin audit trail: one AdminActionRecorded
 * per tenant and run (not per user), once the writes are done, on subject REWRAP_AUDIT_SUBJECT
 * by client REWRAP_CLIENT_ID, naming the operator when one was given. A dry run, and a run that
 * changed nothing of a tenant, record nothing for it.
 */

/**
 * The subject the audit trail records the tool's writes under. No request has it (it is not an API
 * subject): it is the tool's name in the form reports.audit.query's `subject` filter takes.
 */
export const REWRAP_AUDIT_SUBJECT = 'mfa.tool.rewrap';
/** The acting client the audit trail names for the tool's writes (reports.audit.query `clientId`). */
export const REWRAP_CLIENT_ID = 'rewrap.js';

/** Users worked on at once: enough to hide the round trips, few enough for a shared NATS. */
const PARALLEL_USERS = 8;

const USER_SUBJECT_PREFIX = EventSubjects.allUsers.slice(0, -1);
const OATH_SUBJECT_PREFIX = EventSubjects.allOathTokens.slice(0, -1);

/** The start of a sealed secret: its format and key id. */
const SEALED_HEAD = /^v[12]\.([A-Za-z0-9_-]{1,32})\./;
/** A sealed secret as the event log and snapshots carry it: `"v2.<kid>.` or `"v1.<kid>.`. */
const SEALED_IN_JSON = /"v[12]\.([A-Za-z0-9_-]{8})\./g;

/** One record of a user's data key: where it is, its stream sequence, what it holds. */
export interface DataKeyRecord {
  tag: string;
  seq: number;
  stored: StoredDataKey;
}

/** What `inspect` read of one user's data key: under the current key's tag, and under each previous key's. */
export interface DataKeyPlan {
  tenantId: string;
  userId: string;
  tag: string;
  current?: DataKeyRecord | undefined;
  previous: DataKeyRecord[];
  /** Records that are neither a key nor a tombstone: left alone. */
  unreadable: number;
}

export interface DataKeyOutcome {
  /** The user's record was moved from a previous key's tag (a key wrapped again; a tombstone as it was). */
  moved?: 'key' | 'tombstone';
  /** The key under the current tag was wrapped again in place. */
  rewrapped: boolean;
  /** Copies under previous keys' tags deleted (the current tag holds the same or a later record). */
  copiesRemoved: number;
  /** Copies left because they hold something the current record does not (see `apply`). */
  conflicts: number;
  /** A conditional write lost: the record changed meanwhile (an erasure, a service's own move); left to the winner. */
  raced: boolean;
}

/** What still needs one master key, by key id. */
export interface KeyNeeds {
  /** Data keys in MFA_USER_KEYS wrapped with it. */
  dataKeys: number;
  /** TOTP secrets of users' tokens (apps and hardware, pending or active) sealed with it. */
  totpSecrets: number;
  /** Voice PIN hashes in use sealed with it. */
  pinHashes: number;
  /** Push tokens of users' devices sealed with it. */
  pushTokens: number;
  /** Secrets of hardware tokens in the inventory sealed with it. */
  inventorySecrets: number;
  /** Unfinished import jobs whose file or PSKC keys are sealed with it (they end, or expire within 7 days). */
  importJobs: number;
}

export interface RewrapReport {
  dryRun: boolean;
  currentKid: string;
  previousKids: string[];
  users: number;
  hardwareTokens: number;
  dataKeys: {
    /** Moved from a previous key's tag (in a dry run: would be). */
    moved: number;
    tombstonesMoved: number;
    /** Wrapped again in place under the current tag (in a dry run: would be). */
    rewrapped: number;
    copiesRemoved: number;
    conflicts: number;
    raced: number;
    /** Records that did not open (wrapped with a key not in the keyring) or did not parse: left alone. */
    failed: number;
    /** Tombstones in MFA_USER_KEYS (they need no key). */
    tombstones: number;
  };
  /** Secrets in use sealed again under the current key (in a dry run: would be). */
  resealed: ResealCounts;
  /** In use now, by key id: the current key, each previous key, and any key id the keyring does not know. */
  needs: Record<string, KeyNeeds>;
  /** Sealed values in MFA_USER_SETTINGS by key id: immutable history, whether in use or not. */
  eventLog: Record<string, number>;
  /** Previous key ids nothing in use needs any more: these may leave MFA_PREVIOUS_ENCRYPTION_KEYS. */
  removable: string[];
  /**
   * The audit trail: `recorded` AdminActionRecorded written, one per tenant whose data this run
   * changed (none in a dry run); `failed` tenants whose record could not be written (logged).
   */
  audit: { recorded: number; failed: number };
}

export interface ResealCounts {
  /** Users with a SecretsResealed appended. */
  users: number;
  totpSecrets: number;
  pinHashes: number;
  pushTokens: number;
  inventorySecrets: number;
  /** Appends refused because the user or token changed since it was read: left to the winner (run again). */
  raced: number;
  /** Secrets that do not open (sealed with a key not in the keyring): left as they are. */
  failed: number;
}

/** A user's secrets to seal again, as read: applied by `reseal` only if the user is still at `lastSeq`. */
export interface ResealPlan {
  tenantId: string;
  userId: string;
  lastSeq: number;
  state: UserState;
  command: ResealSecrets;
  /** Secrets left as they are: they do not open with this keyring. */
  failed: number;
}

export interface MasterKeyRewrapOptions {
  /** Only read and report: nothing is written. */
  dryRun?: boolean;
  /** Skip counting the sealed values of the whole event log (a read of every event). */
  skipEventLog?: boolean;
  /** The person who runs the tool, as the audit records name them (`operator.sub`: reports.audit.query's `operator`). */
  operator?: Operator | undefined;
  log?: Logger;
}

const noReseal = (): ResealCounts => ({ users: 0, totpSecrets: 0, pinHashes: 0, pushTokens: 0, inventorySecrets: 0, raced: 0, failed: 0 });
const noNeeds = (): KeyNeeds => ({ dataKeys: 0, totpSecrets: 0, pinHashes: 0, pushTokens: 0, inventorySecrets: 0, importJobs: 0 });

export class MasterKeyRewrap {
  private readonly log: Logger;
  private readonly store: EventStore;
  private readonly events: EventPublisher;
  /** Tenants whose data the current run has written (a data key moved, wrapped again or a copy deleted, a secret sealed again). */
  private readonly changedTenants = new Set<string>();

  constructor(
    private readonly nats: Pick<NatsClients, 'js' | 'jsm'>,
    private readonly keyring: Keyring,
    private readonly options: MasterKeyRewrapOptions = {},
  ) {
    this.log = options.log ?? createLogger('user-settings');
    this.events = new EventPublisher(nats.js);
    this.store = new EventStore(nats.jsm, this.events, Streams.userSettings.name, this.log);
  }

  async run(): Promise<RewrapReport> {
    const dryRun = this.options.dryRun === true;
    const report: RewrapReport = {
      dryRun,
      currentKid: this.keyring.kid,
      previousKids: this.keyring.previous.map((k) => k.kid),
      users: 0,
      hardwareTokens: 0,
      dataKeys: { moved: 0, tombstonesMoved: 0, rewrapped: 0, copiesRemoved: 0, conflicts: 0, raced: 0, failed: 0, tombstones: 0 },
      resealed: noReseal(),
      needs: {},
      eventLog: {},
      removable: [],
      audit: { recorded: 0, failed: 0 },
    };
    this.changedTenants.clear();
    const needs = (kid: string): KeyNeeds => (report.needs[kid] ??= noNeeds());
    // What is not a sealed secret at all is counted apart: it needs no key, and no key opens it.
    const needsOf = (sealed: string): KeyNeeds => needs(sealedKeyId(sealed) ?? 'unreadable');
    for (const kid of [report.currentKid, ...report.previousKids]) needs(kid);

    // Steps 1 and 2 write; the audit records follow them, also when they fail (outcome: the error's code).
    try {
      await this.writeSteps(dryRun, report, needsOf);
    } catch (error) {
      await this.recordAudit(error instanceof ContractError ? error.code : 'internal', report);
      throw error;
    }
    await this.recordAudit('ok', report);

    // 3. What MFA_USER_KEYS holds now, users of the log or not (a key whose user has no event is
    //    counted here only: nothing can say whose it is, so nothing can wrap it again).
    await readOnce(this.nats.js, Streams.userKeys.name, '>', { policy: 'last_per_subject' }, (msg) => {
      const stored = parseStoredDataKey(parseJson(msg.string()));
      if (stored?.kind === 'key') needsOf(stored.wrappedKey).dataKeys++;
      else if (stored?.kind === 'erased') report.dataKeys.tombstones++;
    });

    // 4. Import jobs still to run: their file and PSKC keys were sealed when they were asked for.
    await readOnce(this.nats.js, `KV_${IMPORT_JOBS_BUCKET}`, '>', { policy: 'last_per_subject' }, async (msg) => {
      const job = UnfinishedJob.safeParse(parseJson(msg.string()));
      if (!job.success) return;
      const kid = job.data.sealedKeys ? sealedKeyId(job.data.sealedKeys) : job.data.source.sealed ? await this.sealedFileKid(job.data.source.object) : undefined;
      if (kid) needs(kid).importJobs++;
    });

    // 5. The immutable history: every value sealed under the master key in the event log.
    if (!this.options.skipEventLog) {
      await readOnce(this.nats.js, Streams.userSettings.name, '>', { policy: 'all' }, (msg) => {
        for (const match of msg.string().matchAll(SEALED_IN_JSON)) report.eventLog[match[1]!] = (report.eventLog[match[1]!] ?? 0) + 1;
      });
    }

    report.removable = report.previousKids.filter((kid) => Object.values(report.needs[kid] ?? noNeeds()).every((n) => n === 0));
    return report;
  }

  /** Steps 1 and 2 of `run`, the writes: the inventory's secrets, then each user's data key and secrets. */
  private async writeSteps(dryRun: boolean, report: RewrapReport, needsOf: (sealed: string) => KeyNeeds): Promise<void> {
    // 1. The hardware token inventory first (a token's secret stays with it, assigned or not): an
    //    assignment copies the inventory's sealed secret to the user, so one made while the users
    //    are walked copies the value sealed again, or is walked after it and sealed again there.
    await this.eachSubject(EventSubjects.allOathTokens, async (subject) => {
      const ids = subjectIds(OATH_SUBJECT_PREFIX, subject);
      if (!ids) return;
      report.hardwareTokens++;
      const state = await this.resealToken(ids[0], ids[1], dryRun, report.resealed);
      if (state.exists && state.sealedSecret) needsOf(state.sealedSecret).inventorySecrets++;
    });

    // 2. Every user of the log: their data key, and the sealed secrets their state still uses.
    await this.eachSubject(EventSubjects.allUsers, async (subject) => {
      const ids = subjectIds(USER_SUBJECT_PREFIX, subject);
      if (!ids) return;
      const [tenantId, userId] = ids;
      report.users++;
      await this.rewrapUser(tenantId, userId, dryRun, report);
      const state = await this.resealUser(await this.inspectSecrets(tenantId, userId), dryRun, report.resealed);
      for (const token of state.tokens) needsOf(token.sealedSecret).totpSecrets++;
      if (state.sealedPinHash) needsOf(state.sealedPinHash).pinHashes++;
      for (const device of state.devices ?? []) if (device.sealedPushToken) needsOf(device.sealedPushToken).pushTokens++;
    });
  }

  /**
   * One AdminActionRecorded per tenant the run changed, on the tenant's audit subject. A record
   * that cannot be written is logged and counted (`audit.failed`), as the services' audit trail
   * does: the writes are in the event log and MFA_USER_KEYS either way.
   */
  private async recordAudit(outcome: string, report: RewrapReport): Promise<void> {
    const operator = this.options.operator;
    for (const tenantId of this.changedTenants) {
      const event = createEvent('AdminActionRecorded', 1, {
        tenantId,
        aggregateId: tenantId,
        now: new Date(),
        data: { subject: REWRAP_AUDIT_SUBJECT, clientId: REWRAP_CLIENT_ID, ...(operator ? { operator } : {}), outcome },
      });
      try {
        await publishWithRetry(this.events, EventSubjects.audit(tenantId), event, { attempts: 3, delayMs: 100 });
        report.audit.recorded++;
      } catch (error) {
        report.audit.failed++;
        this.log.error('audit event not written', { subject: REWRAP_AUDIT_SUBJECT, tenantId, error: error instanceof Error ? { name: error.name, message: error.message } : String(error) });
      }
    }
  }

  /**
   * Reads one user's events and seals again, under the current key, each secret their state uses
   * under another one (the same SealContext as when it was sealed first). Writes nothing.
   */
  async inspectSecrets(tenantId: string, userId: string): Promise<ResealPlan> {
    const { events, lastSeq } = await this.read(EventSubjects.user(tenantId, userId));
    const state = fold(userDecider, events);
    const plan: ResealPlan = { tenantId, userId, lastSeq, state, command: {}, failed: 0 };
    const again = (sealed: string, context: SealScope): string | undefined => {
      const kid = sealedKeyId(sealed);
      // Current already, or not a sealed value at all (counted as such by the report).
      if (kid === undefined || kid === this.keyring.kid) return undefined;
      const resealed = this.sealAgain(sealed, context);
      if (resealed === undefined) plan.failed++;
      return resealed;
    };
    if (!state.registered) return plan;
    const tokens = state.tokens.flatMap((t) => {
      const sealedSecret = again(t.sealedSecret, secretContext(tenantId, userId, t));
      return sealedSecret ? [{ tokenId: t.tokenId, from: t.sealedSecret, sealedSecret }] : [];
    });
    const pin = state.sealedPinHash && again(state.sealedPinHash, SealContext.pinHash(tenantId, userId));
    const devices = (state.devices ?? []).flatMap((d) => {
      const sealedPushToken = d.sealedPushToken && again(d.sealedPushToken, SealContext.pushToken(tenantId, userId, d.deviceId));
      return sealedPushToken ? [{ deviceId: d.deviceId, from: d.sealedPushToken!, sealedPushToken }] : [];
    });
    plan.command = {
      ...(tokens.length ? { tokens } : {}),
      ...(pin ? { pinHash: { from: state.sealedPinHash!, sealedHash: pin } } : {}),
      ...(devices.length ? { devices } : {}),
    };
    return plan;
  }

  /**
   * Appends the plan's SecretsResealed if the user's subject is still at the plan's sequence. The
   * user's state after it (as read when the append lost: a later run sees the winner's).
   */
  async reseal(plan: ResealPlan, now = new Date()): Promise<{ state: UserState; appended: boolean; raced: boolean }> {
    const decided = decideUser({ type: 'ResealSecrets', data: plan.command }, plan.state, now);
    if (decided.length === 0) return { state: plan.state, appended: false, raced: false };
    const envelopes = decided.map((event) => createEvent(event.type, 1, { tenantId: plan.tenantId, aggregateId: plan.userId, now, data: event.data as never }));
    try {
      await this.store.append(EventSubjects.user(plan.tenantId, plan.userId), envelopes, plan.lastSeq);
    } catch (error) {
      if (error instanceof ConcurrencyError) return { state: plan.state, appended: false, raced: true };
      throw error;
    }
    this.changedTenants.add(plan.tenantId);
    return { state: decided.reduce(userDecider.evolve, plan.state), appended: true, raced: false };
  }

  private async resealUser(plan: ResealPlan, dryRun: boolean, counts: ResealCounts): Promise<UserState> {
    counts.failed += plan.failed;
    const { tokens = [], pinHash, devices = [] } = plan.command;
    if (tokens.length === 0 && !pinHash && devices.length === 0) return plan.state;
    if (!dryRun) {
      const outcome = await this.reseal(plan);
      if (outcome.raced) counts.raced++;
      if (!outcome.appended) return outcome.state;
      plan = { ...plan, state: outcome.state };
    }
    counts.users++;
    counts.totpSecrets += tokens.length;
    counts.pinHashes += pinHash ? 1 : 0;
    counts.pushTokens += devices.length;
    return plan.state;
  }

  /** The inventory token's secret sealed again under the current key, as `resealUser` does for a user. */
  private async resealToken(tenantId: string, serialNumber: string, dryRun: boolean, counts: ResealCounts): Promise<OathTokenState> {
    const subject = EventSubjects.oathToken(tenantId, serialNumber);
    const { events, lastSeq } = await this.read(subject);
    const state = fold(oathTokenDecider, events);
    const from = state.sealedSecret;
    const kid = from && sealedKeyId(from);
    if (!state.exists || !state.tokenId || !from || kid === undefined || kid === this.keyring.kid) return state;
    const sealedSecret = this.sealAgain(from, SealContext.hardwareSecret(tenantId, state.tokenId));
    if (sealedSecret === undefined) {
      counts.failed++;
      return state;
    }
    if (!dryRun) {
      const now = new Date();
      const decided = decideOathToken({ type: 'ResealToken', data: { tokenId: state.tokenId, from, sealedSecret } }, state, now);
      const envelopes = decided.map((event) => createEvent(event.type, 1, { tenantId, aggregateId: serialNumber, now, data: event.data as never }));
      try {
        await this.store.append(subject, envelopes, lastSeq);
      } catch (error) {
        if (!(error instanceof ConcurrencyError)) throw error;
        counts.raced++;
        return state;
      }
      this.changedTenants.add(tenantId);
      counts.inventorySecrets++;
      return decided.reduce(oathTokenDecider.evolve, state);
    }
    counts.inventorySecrets++;
    return state;
  }

  /** `sealed` opened and sealed again under the current key; undefined when it does not open. */
  private sealAgain(sealed: string, context: SealScope): string | undefined {
    let plain: Buffer | undefined;
    try {
      plain = open(this.keyring, sealed, context);
      return seal(this.keyring, plain, context);
    } catch (error) {
      if (error instanceof SealError) return undefined;
      throw error;
    } finally {
      plain?.fill(0);
    }
  }

  /** Reads one user's data key records, changing nothing. */
  async inspect(tenantId: string, userId: string): Promise<DataKeyPlan> {
    const tag = userTag(this.keyring, tenantId, userId);
    const plan: DataKeyPlan = { tenantId, userId, tag, previous: [], unreadable: 0 };
    plan.current = await this.record(tag, plan);
    for (const previousTag of new Set(this.keyring.previous.map((k) => userTag(k, tenantId, userId)))) {
      if (previousTag === tag) continue;
      const found = await this.record(previousTag, plan);
      if (found) plan.previous.push(found);
    }
    return plan;
  }

  /**
   * Brings the user's record to the current key, each write conditional on what `inspect` read:
   * - nothing under the current tag: the first copy under a previous tag is written there
   *   (a key wrapped again) only if the subject is still empty;
   * - a key under the current tag wrapped with a previous key: wrapped again, only if the subject
   *   still holds that message. An erasure deletes the key's message before writing its tombstone,
   *   so either write, whenever it comes, finds the subject moved on and fails: the erasure wins.
   * Then copies under previous tags go (deleted with erase, as UserDataKeys.erase does) when the
   * current record, read again, makes them worthless: a tombstone or key of the same or a later
   * generation, or the same key. A copy holding anything else (a later generation, or another key
   * of the same one, as a service without the previous key configured would make) is left and
   * counted as a conflict: it still needs its key, and the operator's attention.
   */
  async apply(plan: DataKeyPlan): Promise<DataKeyOutcome> {
    const { tenantId, userId, tag } = plan;
    const outcome: DataKeyOutcome = { rewrapped: false, copiesRemoved: 0, conflicts: 0, raced: false };
    const from = latestDataKeyRecord(plan.previous);
    if (!plan.current && from) {
      const body = from.stored.kind === 'key' ? { gen: from.stored.gen, wrappedKey: rewrapDataKey(this.keyring, tenantId, userId, from.stored.gen, from.stored.wrappedKey) } : toBody(from.stored);
      if (await this.writeIf(tag, body, 0)) {
        outcome.moved = from.stored.kind === 'key' ? 'key' : 'tombstone';
        this.changedTenants.add(tenantId);
      } else {
        outcome.raced = true;
      }
    } else if (plan.current?.stored.kind === 'key' && sealedKeyId(plan.current.stored.wrappedKey) !== this.keyring.kid) {
      const { gen, wrappedKey } = plan.current.stored;
      if (await this.writeIf(tag, { gen, wrappedKey: rewrapDataKey(this.keyring, tenantId, userId, gen, wrappedKey) }, plan.current.seq)) {
        outcome.rewrapped = true;
        this.changedTenants.add(tenantId);
      } else {
        outcome.raced = true;
      }
    }
    if (plan.previous.length === 0) return outcome;
    const now = await this.record(tag, { unreadable: 0 });
    if (!now) return outcome; // Nothing current (a write lost and the winner's record is gone too): a later run sees.
    for (const copy of plan.previous) {
      if (this.supersedes(tenantId, userId, now.stored, copy.stored)) {
        await this.deleteErasing(copy.seq);
        this.changedTenants.add(tenantId);
        outcome.copiesRemoved++;
      } else {
        outcome.conflicts++;
      }
    }
    return outcome;
  }

  private async rewrapUser(tenantId: string, userId: string, dryRun: boolean, report: RewrapReport): Promise<void> {
    const plan = await this.inspect(tenantId, userId);
    report.dataKeys.failed += plan.unreadable;
    if (!plan.current && plan.previous.length === 0) return;
    if (dryRun) {
      const from = latestDataKeyRecord(plan.previous);
      if (!plan.current && from) {
        if (from.stored.kind === 'key') report.dataKeys.moved++;
        else report.dataKeys.tombstonesMoved++;
      } else if (plan.current?.stored.kind === 'key' && sealedKeyId(plan.current.stored.wrappedKey) !== this.keyring.kid) {
        report.dataKeys.rewrapped++;
      }
      return;
    }
    try {
      const outcome = await this.apply(plan);
      if (outcome.moved === 'key') report.dataKeys.moved++;
      if (outcome.moved === 'tombstone') report.dataKeys.tombstonesMoved++;
      if (outcome.rewrapped) report.dataKeys.rewrapped++;
      if (outcome.raced) report.dataKeys.raced++;
      report.dataKeys.copiesRemoved += outcome.copiesRemoved;
      report.dataKeys.conflicts += outcome.conflicts;
    } catch (error) {
      // A key that does not open (its master key is not in the keyring): left as it is, counted.
      if (!(error instanceof SealError)) throw error;
      report.dataKeys.failed++;
      this.log.warn('a user’s data key does not open: left as it is', { tenantId, error: { name: error.name, message: error.message } });
    }
  }

  /** Whether `current` makes `copy` worthless: see `apply`. */
  private supersedes(tenantId: string, userId: string, current: StoredDataKey, copy: StoredDataKey): boolean {
    if (current.gen !== copy.gen) return current.gen > copy.gen;
    if (current.kind === 'erased') return true;
    // A tombstone of the generation the current tag holds a key of: the erasure must win, not be deleted.
    if (copy.kind === 'erased') return false;
    return this.sameKey(tenantId, userId, current.gen, current.wrappedKey, copy.wrappedKey);
  }

  private sameKey(tenantId: string, userId: string, gen: number, a: string, b: string): boolean {
    const context = SealContext.userDataKey(tenantId, userId, gen);
    let x: Buffer | undefined;
    let y: Buffer | undefined;
    try {
      x = open(this.keyring, a, context);
      y = open(this.keyring, b, context);
      return x.equals(y);
    } catch (error) {
      if (error instanceof SealError) return false;
      throw error;
    } finally {
      x?.fill(0);
      y?.fill(0);
    }
  }

  /** The key id of a file the service sealed in MFA_IMPORTS, from its first chunk (a sealed file is one text: `v2.<kid>.…`). */
  private async sealedFileKid(name: string): Promise<string | undefined> {
    let store;
    try {
      store = await new Objm(this.nats.js).open(IMPORTS_BUCKET);
    } catch (error) {
      if (isObjectStoreNotFound(error)) return undefined;
      throw error;
    }
    const info = await store.info(name);
    if (!info || info.deleted) return undefined;
    const first = await nextMessageOn(this.nats.jsm, `OBJ_${IMPORTS_BUCKET}`, `$O.${IMPORTS_BUCKET}.C.${info.nuid}`, 0);
    return first ? SEALED_HEAD.exec(Buffer.from(first.data.subarray(0, 64)).toString('utf8'))?.[1] : undefined;
  }

  private async read(subject: string): Promise<{ events: Array<{ type: string }>; lastSeq: number }> {
    const { events, lastSeq } = await readAggregate(this.nats.jsm, Streams.userSettings.name, subject, this.log);
    return { events: events.map((stored) => stored.event), lastSeq };
  }

  /** Publishes `body` on the user's subject if its last message is still `expectedSeq` (0: none); false when it is not. */
  private async writeIf(tag: string, body: object, expectedSeq: number): Promise<boolean> {
    try {
      await this.nats.js.publish(EventSubjects.userDataKey(tag), JSON.stringify(body), { expect: { lastSubjectSequence: expectedSeq } });
      return true;
    } catch (error) {
      if (isWrongLastSequence(error)) return false;
      throw error;
    }
  }

  private async record(tag: string, counts: { unreadable: number }): Promise<DataKeyRecord | undefined> {
    // From the stream leader: a replica answering direct gets may lag behind an erasure.
    const msg = await this.nats.jsm.streams.getMessage(Streams.userKeys.name, { last_by_subj: EventSubjects.userDataKey(tag) });
    if (!msg) return undefined;
    const stored = parseStoredDataKey(msg.json());
    if (!stored) {
      counts.unreadable++;
      return undefined;
    }
    return { tag, seq: msg.seq, stored };
  }

  /** Deletes a message so that the server overwrites its stored bytes; one already gone is fine. */
  private async deleteErasing(seq: number): Promise<void> {
    await deleteMessageIfPresent(this.nats.jsm, Streams.userKeys.name, seq, true);
  }

  /** Calls `work` for the subject of each aggregate under `filter`, a few at a time: memory bounded by the few, not by the users. */
  private eachSubject(filter: string, work: (subject: string) => Promise<void>): Promise<void> {
    return eachAggregate(this.nats.js, filter, (msg) => work(msg.subject), { parallel: PARALLEL_USERS, headersOnly: true, log: this.log });
  }
}

/** An import job's record (adapters/import-jobs.ts) that still has to read its sealed file or keys. */
const UnfinishedJob = z.object({
  state: z.enum(['queued', 'running']),
  source: z.object({ object: z.string(), sealed: z.boolean() }),
  sealedKeys: z.string().optional(),
});

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function toBody(stored: StoredDataKey): object {
  return stored.kind === 'key' ? { gen: stored.gen, wrappedKey: stored.wrappedKey } : { gen: stored.gen, erasedAt: stored.erasedAt };
}

/** An aggregate's state from all its events (personal data is not opened: only sealed secrets are looked at). */
function fold<S, E extends { type: string }>(decider: Decider<unknown, S, E>, events: readonly { type: string }[]): S {
  let state = decider.initialState();
  for (const event of events) if (decider.accepts(event)) state = decider.evolve(state, event);
  return state;
}
