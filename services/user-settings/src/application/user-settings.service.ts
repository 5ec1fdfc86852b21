import { randomBytes } from 'node:crypto';
import {
  ContractError,
  conflict,
  forbidden,
  rateLimited,
  EventSubjects,
  notFound,
  unavailable,
  type TenantsConfigureReply,
  type TenantsConfigureRequest,
  type TenantsGetReply,
  type TenantsGetRequest,
  type TenantsDeleteReply,
  type TenantsDeleteRequest,
  type UsersDeleteReply,
  type UsersDeleteRequest,
  type UsersGetReply,
  type UsersGetRequest,
  type UsersListReply,
  type UsersListRequest,
  type UsersResetReply,
  type UsersResetRequest,
  type UsersMethodsDefaultReply,
  type UsersMethodsDefaultRequest,
  type UsersRememberedRevokeReply,
  type UsersRememberedRevokeRequest,
  type UsersAppPasswordsCreateReply,
  type UsersAppPasswordsCreateRequest,
  type UsersAppPasswordsDeleteReply,
  type UsersAppPasswordsDeleteRequest,
  type AppPasswordsVerifyReply,
  type AppPasswordsVerifyRequest,
  type UsersTokensDeleteReply,
  type UsersTokensDeleteRequest,
  invalidRequest,
  type TotpActivateReply,
  type TotpActivateRequest,
  type TotpEnrollReply,
  type TotpEnrollRequest,
  type UsersRegisterReply,
  type UsersRegisterRequest,
  type UsersPinSetReply,
  type UsersPinSetRequest,
  type PinVerifyReply,
  type PinVerifyRequest,
  DEVICE_POLL_SECONDS,
  DeviceSigned,
  type DeviceActivateReply,
  type DeviceActivateRequest,
  type DeviceReregisterRequest,
  type UsersDevicesDeleteReply,
  type UsersDevicesDeleteRequest,
  type UsersPushEnrollReply,
  type UsersPushEnrollRequest,
} from '@mfa/contracts';
import QRCode from 'qrcode';
import { deviceId as joinDeviceId, parseDeviceId } from '@mfa/projection';
import type { ActivationCodes } from '../adapters/activation-codes.js';
import { base32Encode, DeviceKeyError, devicePublicKey, deviceSignatureValid, formatWrappedDataKey, open, randomToken, seal, SealContext, type Keyring } from '@mfa/crypto';
import { ConcurrencyError } from '@mfa/messaging';
import type { UserIndex, UserProjectionWriter } from '@mfa/projection';
import { UserErasedMeanwhileError, type DataKeyEntry, type UserDataKeys } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import type { ActivationAttempts } from '../adapters/activation-attempts.js';
import type { AppPasswordFailures } from '../adapters/app-password-failures.js';
import type { FraudBlocks } from '../adapters/fraud-blocks.js';
import type { RememberedBrowsers } from '../adapters/remembered-browsers.js';
import type { AppPasswordHasher } from '../adapters/app-password-hasher.js';
import type { SnapshotStore } from '../adapters/snapshot-store.js';
import { AggregateLoader, type LoadedState } from './aggregate-loader.js';
import type { EventStore } from '../adapters/event-store.js';
import type { Decider } from '../domain/events.js';
import { tenantDecider, type TenantCommand, type TenantEvent, type TenantState } from '../domain/tenant.js';
import { otpauthUri } from '../domain/totp.js';
import { activationCandidate, countedTokens, decideUser, defaultMethodOf, MAX_TOTP_TOKENS, methodsOf, userDecider, type LostHardwareToken, type UserEvent, type UserState } from '../domain/user.js';
import type { ImportedToken } from '../domain/oath-token.js';
import { UserDataKeyGoneError, UserEventCodec, type AggregateRef as CodecRef } from './user-events.codec.js';
import { secretContext, userSnapshot } from './user-snapshot.js';
import { cursorAfter, nextCursor } from './keyset-cursor.js';
import { MAX_APPEND_ATTEMPTS, storeCall } from './store-call.js';

/** Wrong app passwords per user within 15 minutes before apppasswords.verify answers rate_limited. */
const TOTP_SECRET_BYTES = 20;
const TOTP_TOKEN_ID_BYTES = 12;
/**
 * How long a command waits, after a loss of Redis, for the rebuild to restore the accepted TOTP
 * steps before it writes a user with tokens (UserProjectionWriter.apply); then `unavailable`.
 */
const STEPS_RESTORE_WAIT_MS = 2_000;

interface UserSettingsOptions {
  store: EventStore;
  projection: UserProjectionWriter;
  keyring: Keyring;
  /** The users' data keys, under which their personal data is sealed in the log. */
  keys: UserDataKeys;
  log: Logger;
  /** Register creates unknown tenants with default settings (MFA_TENANT_AUTO_CREATE, and only with MFA_AUTH=off). */
  autoCreateTenants: boolean;
  /** Issuer shown by authenticator apps (MFA_TOTP_ISSUER). */
  totpIssuer: string;
  /** Wrong activation codes per pending token; without it activation is not limited (unit tests). */
  activationAttempts?: ActivationAttempts;
  /** User aggregate snapshots; without them every load reads the whole aggregate. */
  snapshots?: SnapshotStore;
  /** The users' blocks, which the fraud service owns (users.get shows them); none without it. */
  blocks?: Pick<FraudBlocks, 'of'>;
  /** users.list's search index (Redis, kept with the projection). */
  index?: Pick<UserIndex, 'list'>;
  /** The user's remembered browsers (Redis, written by auth-challenge). */
  remembered?: Pick<RememberedBrowsers, 'list' | 'revoke' | 'clear' | 'forgetUpTo'>;
  /** App passwords: drawn, hashed (scrypt), checked. */
  appPasswords?: AppPasswordHasher;
  /** Failed app password checks per user, for the rate limit of apppasswords.verify. */
  appPasswordFailures?: Pick<AppPasswordFailures, 'reserve' | 'release'>;
  /** Push enrolment's one-time activation codes (Redis). */
  activationCodes?: ActivationCodes;
  /** The device API's public base (DEVICE_API_PUBLIC_URL): activation URLs are built from it. */
  deviceApiUrl?: string;
  /** When the user's devices last answered a push (Redis, written by auth-challenge): device nonce -> ms. */
  devicesUsed?: (tag: string) => Promise<Record<string, string>>;
}

/** Puts hardware tokens the user lost back into the inventory, where it still names them for it (idempotent). */
export type HardwareRelease = (tenantId: string, userId: string, tokens: readonly LostHardwareToken[], now: Date) => Promise<void>;
/** Records in the inventory that the user activated their hardware token (its serial) at `step`. */
export type HardwareActivated = (tenantId: string, userId: string, token: { serialNumber: string; tokenId: string; step: number }, now: Date) => Promise<void>;

/**
 * The claim on the inventory's token under which a user is given it (OathTokensService): when it
 * was made, and the check, run just before the user's record is appended to, that it still holds.
 */
export interface HardwareClaim {
  claimedAtMs: number;
  check: () => Promise<void>;
}

function lastUse(used: Record<string, string>, deviceId: string): string | null {
  const ms = Number(used[parseDeviceId(deviceId)?.nonce ?? '']);
  return ms > 0 ? new Date(ms).toISOString() : null;
}

interface Outcome<S> {
  /** State after the decision (including the events appended, if any). */
  state: S;
  appended: boolean;
  /** Stream sequence of the aggregate's last event after the decision; 0 if it has none. */
  seq: number;
}

interface AggregateRef extends CodecRef {
  kind: 'tenant' | 'user';
}

/**
 * The user's events and MFA_USER_KEYS disagree for good, as a restore leaves them when it took the
 * two streams at different moments: `erased`, the key store destroyed the key of personal data
 * that the log never erased (the key store wins: the user is erased, `not_found`, and users.delete
 * or users.register records it); `missing`, it holds no key for that data at all (`conflict`:
 * users.delete erases the user, after which they can register again).
 */
export class KeyStoreDisagreementError extends ContractError {
  constructor(
    readonly state: 'erased' | 'missing',
    readonly gen: number,
  ) {
    super(
      state === 'erased' ? 'not_found' : 'conflict',
      state === 'erased'
        ? 'unknown user: their data key is destroyed (the user was erased), but the event log does not record the erasure; users.delete records it'
        : 'the user’s data key is missing from MFA_USER_KEYS, so their personal data cannot be read (the key stream restored from an older backup than the event log, or the master key that wrapped the key is not in MFA_PREVIOUS_ENCRYPTION_KEYS); when it cannot be brought back, users.delete erases the user, who can then register again',
    );
  }
}

/**
 * The commands of user-settings: load an aggregate from its subject, let the pure decider decide,
 * append with optimistic concurrency (deciding again on a conflict), and write the user
 * projection into Redis before answering, so the caller can start a challenge right away.
 */
export class UserSettingsService {
  private readonly codec: UserEventCodec;
  private readonly loader: AggregateLoader;

  constructor(private readonly options: UserSettingsOptions) {
    this.codec = new UserEventCodec(options.keys);
    this.loader = new AggregateLoader(options.store, this.codec, options.keys, options.snapshots);
  }

  /**
   * Patches the tenant's settings; on a tenant that does not exist yet, creates it, which only
   * callers allowed to create tenants may do (the platform key, or anyone with MFA_AUTH=off).
   */
  async configureTenant(request: TenantsConfigureRequest, now: Date, caller: { mayCreateTenant: boolean }): Promise<TenantsConfigureReply> {
    const outcome = await this.execute(tenantDecider, this.tenantRef(request.tenantId), now, (state) => {
      if (!state.exists && !caller.mayCreateTenant) throw forbidden('only the platform key may create a tenant');
      return tenantDecider.decide({ type: 'ConfigureTenant', data: { settings: request.settings } }, state, now);
    });
    if (!outcome.state.exists) throw new Error('tenant missing after configure');
    return { tenantId: request.tenantId, settings: outcome.state.settings };
  }

  /**
   * tenants.delete: records TenantDeleted (once; again it only answers the state), after which the
   * tenant is unknown to every request; the caller revokes its clients, and the offboarding
   * consumer erases the rest (TenantErased). An unknown tenant is not_found.
   */
  async deleteTenant(request: TenantsDeleteRequest, now: Date): Promise<TenantsDeleteReply> {
    const outcome = await this.executeTenant(request.tenantId, { type: 'DeleteTenant', data: {} }, now);
    return this.deletionReply(request.tenantId, outcome.state);
  }

  /** Where a deleted tenant's offboarding stands; not_found for a tenant that is not deleted. */
  async tenantDeletion(tenantId: string, now: Date): Promise<TenantsDeleteReply> {
    const outcome = await this.execute(tenantDecider, this.tenantRef(tenantId), now, () => []);
    return this.deletionReply(tenantId, outcome.state);
  }

  /** The offboarding finished: TenantErased with what it erased (nothing when recorded already, or the tenant is not being deleted). */
  async recordTenantErased(tenantId: string, erased: { users: number; hardwareTokens: number; recordings: number; clients: number }, now: Date): Promise<TenantsDeleteReply> {
    const outcome = await this.executeTenant(tenantId, { type: 'RecordTenantErased', data: erased }, now);
    return this.deletionReply(tenantId, outcome.state);
  }

  private deletionReply(tenantId: string, state: TenantState): TenantsDeleteReply {
    if (state.exists || !state.deletion) throw notFound('unknown tenant');
    const { deletedAt, erasedAt, erased } = state.deletion;
    return { tenantId, state: erasedAt ? 'deleted' : 'deleting', deletedAt, ...(erasedAt ? { erasedAt } : {}), ...(erased ? { erased } : {}) };
  }

  async getTenant(request: TenantsGetRequest, now: Date): Promise<TenantsGetReply> {
    const outcome = await this.execute(tenantDecider, this.tenantRef(request.tenantId), now, () => []);
    if (!outcome.state.exists) throw notFound('unknown tenant');
    return { tenantId: request.tenantId, settings: outcome.state.settings };
  }

  /**
   * Erases the user (crypto-shredding): records UserErased, destroys the user's data key, so the
   * personal data sealed under it never opens again, removes the aggregate's snapshot, and
   * replaces the Redis projection with a tombstone. Deleting an erased user again does all of it
   * again (what is done already changes nothing) and answers deleted.
   *
   * `onlyIfKeyErased` (generation g) only completes an erasure the key store made that the log
   * misses (a restore of the two from different moments; register's own completion uses it too):
   * done already when the log erases g or later; carried out when MFA_USER_KEYS holds a tombstone
   * of g or later; `conflict` otherwise (a live key, or none), with nothing written.
   */
  async delete(request: UsersDeleteRequest, now: Date): Promise<UsersDeleteReply> {
    await this.requireTenant(request.tenantId, now, false);
    const { userId } = await this.erase(request, now);
    return { userId, deleted: true };
  }

  /**
   * A deleted tenant's user, erased by its offboarding as users.delete erases, without the tenant
   * check (the tenant is unknown by then; the offboarding read its deletion once, and nothing
   * creates the tenant again before TenantErased).
   */
  async eraseOffboarded(tenantId: string, userId: string, now: Date): Promise<void> {
    await this.erase({ tenantId, userId }, now);
  }

  /** A register's completion of an erasure the key store holds at `gen` (users.delete with onlyIfKeyErased); true when this call recorded it. */
  protected async completeKeyErasure(tenantId: string, userId: string, gen: number, now: Date): Promise<boolean> {
    return (await this.erase({ tenantId, userId, onlyIfKeyErased: gen }, now)).recorded;
  }

  /** users.delete; `recorded`: this request appended the erasure (not one recorded by another meanwhile). */
  private async erase(request: UsersDeleteRequest, now: Date): Promise<{ userId: string; recorded: boolean }> {
    const { tenantId, userId, onlyIfKeyErased } = request;
    const ref = this.userRef(tenantId, userId);
    // Loaded without opening personal data: an erasure needs none, and so it also erases a user
    // whose key is gone (a restore of the event log and MFA_USER_KEYS from different moments).
    const outcome = await this.execute(
      userDecider,
      ref,
      now,
      async (state, loaded) => {
        // The key destroyed is the user's current one; a user registered before data keys existed
        // has none, and erasing records the generation a key of theirs would have had. A key store
        // that destroyed the key already (the log missing that erasure) names its generation; one
        // that lost the key, the generation the events are sealed under: its tombstone lets the
        // user register again, as a new generation, and no key of it can appear any more.
        // Completing a key store's erasure that the log records already (this request sent before,
        // or a register that completed it and may have registered the user again): nothing to undo.
        if (onlyIfKeyErased !== undefined && (state.erasedGen ?? 0) >= onlyIfKeyErased) return [];
        const current = state.registered ? await this.store(() => this.options.keys.current(tenantId, userId)) : undefined;
        const gen = Math.max((state.erasedGen ?? 0) + 1, current?.gen ?? 0, ...(loaded.sealedGens ?? []));
        if (onlyIfKeyErased !== undefined && !(await this.keyErasureToComplete(ref, state, current, gen, onlyIfKeyErased))) return [];
        return decideUser({ type: 'EraseUser', data: { userId, gen } }, state, now);
      },
      { personalData: false },
    );
    // Recorded by another request meanwhile (which carried it out): nothing of this one to do.
    if (onlyIfKeyErased !== undefined && !outcome.appended) return { userId, recorded: false };
    const gen = outcome.state.erasedGen;
    if (gen === undefined) throw new Error('user not erased after users.delete');
    await this.releaseLostHardware(tenantId, userId, outcome.state, now);
    try {
      await this.options.keys.erase(tenantId, userId, gen, now);
      // A snapshot from before holds what the erasure took (tokens, app password hashes, devices):
      // its tombstone replaces it, and refuses any snapshot folded before the erasure.
      await this.options.snapshots?.remove(ref.subject, outcome.seq);
      await this.options.projection.erase(tenantId, userId, outcome.seq);
    } catch (error) {
      // UserErased is stored: the projector consumer shreds when it handles it. Until then the
      // caller must not rely on the erasure, so it hears about the failure and may retry.
      this.options.log.warn('erasure recorded but not carried out yet', { tenantId, error });
      throw unavailable('the erasure is recorded and will be completed shortly; try again to confirm', error);
    }
    return { userId, recorded: outcome.appended };
  }

  /**
   * For `onlyIfKeyErased` (generation `wanted`), whose erasure the log (`state`) does not record
   * yet: true when the key store's record (`current`, read after the log) is the tombstone of an
   * erasure to complete at `gen`; false when the log, read again, now records it (a register or a
   * delete completed it meanwhile: nothing to do); `conflict` otherwise. Atomic with the append:
   * a key newer than a tombstone is only created by a caller whose aggregate records the erasure
   * (getOrCreate's minGen), so the key store cannot turn live again while the log stays where
   * `state` was read, and the append is conditional on that position.
   */
  private async keyErasureToComplete(ref: AggregateRef, state: UserState, current: DataKeyEntry | undefined, gen: number, wanted: number): Promise<boolean> {
    // Never registered: users.delete's own answer (not_found).
    if (!state.registered && state.erasedGen === undefined) return true;
    if (!state.registered) throw conflict(`the event log does not hold the user registered after their erasure of generation ${state.erasedGen}: no erasure of generation ${wanted} to complete`);
    if (current?.kind !== 'erased' || current.gen < wanted) {
      // A register that completed the erasure and registered the user again after the log was read.
      const again = await this.store(() => this.loader.loadUser(ref, { personalData: false }));
      if ((again.state.erasedGen ?? 0) >= wanted) return false;
      const found = !current ? 'MFA_USER_KEYS holds no data key for the user' : current.kind === 'key' ? `the user’s data key (generation ${current.gen}) is live` : `the key store erased generation ${current.gen} only`;
      throw conflict(`${found}: no erasure of generation ${wanted} to complete; nothing erased`);
    }
    // Events sealed under a generation newer than the tombstone: that key is missing, not erased
    // (docs/operations.md, "Backup and restore"), and erasing it is the operator's plain users.delete.
    if (gen !== current.gen) throw conflict(`the user’s events are sealed under data key generation ${gen}, newer than the key store’s erasure of ${current.gen}: that key is missing, not erased; nothing erased`);
    return true;
  }

  /** The user as administrators see it; an erased or never registered user is `not_found`. */
  async get(request: UsersGetRequest, now: Date): Promise<UsersGetReply> {
    const { tenantId, userId } = request;
    await this.requireTenant(tenantId, now, false);
    const tag = this.options.projection.tagOf(tenantId, userId);
    const [outcome, blocked, remembered, devicesUsed] = await Promise.all([
      this.execute(userDecider, this.userRef(tenantId, userId), now, () => []),
      this.store(() => this.options.blocks?.of(tenantId, userId, now) ?? Promise.resolve(null)),
      this.store(() => this.options.remembered?.list(tag, now) ?? Promise.resolve([])),
      // When each device last answered a push (auth-challenge writes it): device nonce -> ms.
      this.store(() => this.options.devicesUsed?.(tag) ?? Promise.resolve({} as Record<string, string>)),
    ]);
    const state = outcome.state;
    if (!state.registered) throw notFound('unknown user');
    const { displayName, email, phoneNumber, phoneExtension, language } = state.profile;
    return {
      userId,
      displayName: displayName ?? null,
      email: email ?? null,
      phoneNumber: phoneNumber ?? null,
      ...(phoneExtension ? { phoneExtension } : {}),
      language: language ?? null,
      methods: methodsOf(state),
      defaultMethod: defaultMethodOf(state) ?? null,
      tokens: state.tokens.map((t) => ({
        tokenId: t.tokenId,
        kind: t.hardware ? ('hardware' as const) : ('app' as const),
        label: t.label,
        ...(t.hardware ? { serialNumber: t.hardware.serialNumber } : {}),
        state: t.activatedStep === undefined ? ('pending' as const) : ('active' as const),
      })),
      devices: (state.devices ?? []).map((d) => ({
        deviceId: d.deviceId,
        name: d.name,
        platform: d.platform,
        state: d.state,
        activatedAt: new Date(d.activatedAtMs).toISOString(),
        lastUsedAt: lastUse(devicesUsed, d.deviceId),
      })),
      blocked,
      appPasswords: (state.appPasswords ?? []).length,
      appPasswordList: (state.appPasswords ?? []).map((a) => ({
        appPasswordId: a.appPasswordId,
        name: a.name ?? null,
        // Snapshots of the version before 7 are ignored (USER_SNAPSHOT_VERSION), so every state read here was folded with the time.
        createdAt: new Date(a.createdAtMs ?? 0).toISOString(),
      })),
      rememberedBrowsers: remembered,
    };
  }

  /**
   * Finds users by a prefix of their id, display name or phone number (or lists them all), by
   * user id; the cursor is sealed and bound to the tenant and the query.
   */
  async list(request: UsersListRequest, now: Date): Promise<UsersListReply> {
    const { tenantId } = request;
    await this.requireTenant(tenantId, now, false);
    if (!this.options.index) throw unavailable('the user directory is not available');
    // The method joins the scope only when given: cursors of searches without it stay as they were.
    const scope = { tenantId, kind: `users.list:${request.query ?? ''}:${request.blocked ?? ''}${request.method !== undefined ? `:${request.method}` : ''}` };
    const after = cursorAfter(this.options.keyring, scope, request.cursor);
    const page = await this.store(() =>
      this.options.index!.list(tenantId, {
        ...(request.query !== undefined ? { query: request.query } : {}),
        ...(request.blocked !== undefined ? { blocked: request.blocked } : {}),
        ...(request.method !== undefined ? { method: request.method } : {}),
        limit: request.limit,
        ...(after !== undefined ? { after } : {}),
      }),
    );
    return { items: page.items, ...nextCursor(this.options.keyring, scope, page.next) };
  }

  /** Clears every method of the user: they must register again (admin). */
  async reset(request: UsersResetRequest, now: Date): Promise<UsersResetReply> {
    const { tenantId, userId } = request;
    await this.requireTenant(tenantId, now, false);
    // Push activation codes issued lately revoke only with a recorded reset (codesValidFromMs).
    const codes = this.options.activationCodes;
    const codesOutstanding = codes ? await this.store(() => codes.outstanding(this.options.projection.tagOf(tenantId, userId))) : false;
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) =>
      decideUser({ type: 'ResetMfa', data: { userId }, codesOutstanding }, state, now),
    );
    // What the reset takes away outside the user's record goes first, so that a projection write
    // that fails below leaves no remembered browser skipping MFA and no token named for the user.
    // A retry (which records nothing new) does it again, and so does the projector on UserMfaReset.
    await this.releaseLostHardware(tenantId, userId, outcome.state, now);
    await this.forgetBrowsers(tenantId, userId);
    await this.project(tenantId, userId, outcome);
    // A verify of a challenge started before the reset is voided only once the projection is
    // written: one that ran between the two remembered its browser and the MFA after they were
    // forgotten. Forgotten again now that none can (all of them, as above: the projector's reach
    // would take them too, but only when it handles the reset).
    await this.forgetBrowsers(tenantId, userId);
    return { userId, reset: true };
  }

  /** The tenant's settings, or not_found. */
  private async settingsOf(tenantId: string, now: Date) {
    const outcome = await this.execute(tenantDecider, this.tenantRef(tenantId), now, () => []);
    if (!outcome.state.exists) throw notFound('unknown tenant');
    return outcome.state.settings;
  }

  /** A password for a legacy client (shown once, kept as a scrypt hash), if the tenant allows them. */
  async createAppPassword(request: UsersAppPasswordsCreateRequest, now: Date): Promise<UsersAppPasswordsCreateReply> {
    const { tenantId, userId } = request;
    const settings = await this.settingsOf(tenantId, now);
    if (!settings.appPasswords.allowed) throw forbidden('app passwords are not allowed for this tenant (appPasswords.allowed)');
    const hasher = this.appPasswordHasher();
    const password = hasher.newPassword();
    const hash = await hasher.hash(password);
    const appPasswordId = randomToken(12);
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) =>
      decideUser({ type: 'CreateAppPassword', data: { appPasswordId, ...(request.name ? { name: request.name } : {}), hash } }, state, now),
    );
    // Projected before the answer, as every change start reads: from now on the user's legacy
    // clients need an app password (no trusted-IP or remembered bypass for them).
    await this.project(tenantId, userId, outcome);
    return { appPasswordId, password };
  }

  /** Deletes one app password, or all of them (a lost phone). */
  async deleteAppPasswords(request: UsersAppPasswordsDeleteRequest, now: Date): Promise<UsersAppPasswordsDeleteReply> {
    const { tenantId, userId, appPasswordId } = request;
    await this.requireTenant(tenantId, now, false);
    let before = 0;
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) => {
      before = (state.appPasswords ?? []).length;
      return decideUser({ type: 'DeleteAppPasswords', data: { appPasswordId } }, state, now);
    });
    if (outcome.appended) await this.project(tenantId, userId, outcome);
    return { userId, deleted: before - (outcome.state.appPasswords ?? []).length };
  }

  /**
   * Whether a legacy client's password is one of the user's app passwords: every stored hash is
   * checked (constant time in what matches); a user with 10 failed checks in 15 minutes gets
   * rate_limited until they age out (each check is counted before the hash runs, so concurrent
   * guesses cannot pass the limit together), and a blocked user `forbidden`. An unknown user, or
   * none allowed, is simply not valid.
   */
  async verifyAppPassword(request: AppPasswordsVerifyRequest, now: Date): Promise<AppPasswordsVerifyReply> {
    const { tenantId, userId, password } = request;
    const settings = await this.settingsOf(tenantId, now);
    if (!settings.appPasswords.allowed) throw forbidden('app passwords are not allowed for this tenant (appPasswords.allowed)');
    const tag = this.options.projection.tagOf(tenantId, userId);
    const failures = this.options.appPasswordFailures;
    if (failures) {
      const admitted = await this.store(() => failures.reserve(tag));
      if (admitted === 'blocked') throw forbidden('the user is blocked: their app passwords are refused until they are unblocked');
      if (admitted === 'limited') throw rateLimited('too many wrong app passwords for this user; try again in 15 minutes');
    }
    const check = async () => {
      const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, () => []);
      const stored = outcome.state.registered ? (outcome.state.appPasswords ?? []) : [];
      return { outcome, matched: stored[await this.appPasswordHasher().matchIndex(password, stored.map((p) => p.hash))] };
    };
    let checked: Awaited<ReturnType<typeof check>> | undefined;
    try {
      checked = await check();
    } finally {
      // The check was counted as a failure: it stays one only when the password was wrong.
      if (failures && (checked === undefined || checked.matched !== undefined)) {
        await this.store(() => failures.release(tag)).catch((error: unknown) => this.options.log.warn('app password check not given back', { tenantId, error }));
      }
    }
    const { outcome, matched } = checked;
    if (!matched) return { valid: false };
    // The first use makes app passwords required for the user's legacy clients from now on.
    if (!outcome.state.appPasswordUsed) {
      const used = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) =>
        decideUser({ type: 'RecordAppPasswordUse', data: { appPasswordId: matched.appPasswordId } }, state, now),
      );
      // The password was right whatever Redis says: a projection that fails here is left to the
      // projector consumer (the use is stored) rather than answered as unavailable.
      if (used.appended) await this.project(tenantId, userId, used).catch((error: unknown) => this.options.log.warn('app password use recorded, not projected yet', { tenantId, error }));
    }
    return { valid: true };
  }

  /** The voice PIN (PIN mode): scrypt-hashed, the hash sealed, recorded in the user's events. */
  async setPin(request: UsersPinSetRequest, now: Date): Promise<UsersPinSetReply> {
    const { tenantId, userId } = request;
    await this.requireTenant(tenantId, now, false);
    const hash = await this.appPasswordHasher().hash(request.pin);
    const sealedHash = seal(this.options.keyring, Buffer.from(hash, 'utf8'), SealContext.pinHash(tenantId, userId));
    await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) => decideUser({ type: 'SetPin', data: { sealedHash } }, state, now));
    return { userId, pinSet: true };
  }

  /** Whether `pin` is the user's voice PIN (dispatch asks during a call); slow on purpose (scrypt). */
  async verifyPin(request: PinVerifyRequest, now: Date): Promise<PinVerifyReply> {
    const { tenantId, userId } = request;
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, () => []);
    const sealed = outcome.state.registered ? outcome.state.sealedPinHash : undefined;
    if (!sealed) return { valid: false, pinSet: false };
    const hash = open(this.options.keyring, sealed, SealContext.pinHash(tenantId, userId)).toString('utf8');
    return { valid: /^\d{4,8}$/.test(request.pin) && (await this.appPasswordHasher().matchIndex(request.pin, [hash])) === 0, pinSet: true };
  }

  private appPasswordHasher(): AppPasswordHasher {
    if (!this.options.appPasswords) throw unavailable('app passwords are not available');
    return this.options.appPasswords;
  }

  /** Forgets one remembered browser of the user, or all of them: their next sign-in asks for MFA again. */
  async revokeRemembered(request: UsersRememberedRevokeRequest, now: Date): Promise<UsersRememberedRevokeReply> {
    const { tenantId, userId } = request;
    await this.requireTenant(tenantId, now, false);
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, () => []);
    if (!outcome.state.registered) throw notFound('unknown user');
    const tag = this.options.projection.tagOf(tenantId, userId);
    const revoked = await this.store(() => this.options.remembered?.revoke(tag, request.rememberId) ?? Promise.resolve(0));
    if (request.rememberId !== undefined && revoked === 0) throw notFound('no such remembered browser');
    return { userId, revoked };
  }

  /** The method a start without one uses (users.methods.default). */
  async chooseDefaultMethod(request: UsersMethodsDefaultRequest, now: Date): Promise<UsersMethodsDefaultReply> {
    const { tenantId, userId, method } = request;
    await this.requireTenant(tenantId, now, false);
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) =>
      decideUser({ type: 'ChooseDefaultMethod', data: { method } }, state, now),
    );
    await this.project(tenantId, userId, outcome);
    return { userId, defaultMethod: method };
  }

  async deleteToken(request: UsersTokensDeleteRequest, now: Date): Promise<UsersTokensDeleteReply> {
    const { tenantId, userId, tokenId } = request;
    await this.requireTenant(tenantId, now, false);
    let seen: UserState | undefined;
    let outcome: Outcome<UserState>;
    try {
      outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) => {
        seen = state;
        return decideUser({ type: 'DeleteTotpToken', data: { tokenId } }, state, now);
      });
    } catch (error) {
      // A retry after the token went (the first try cut short after its event) is not_found: the
      // token still goes back to the inventory.
      if (seen && error instanceof ContractError && error.code === 'not_found') await this.releaseLostHardware(tenantId, userId, seen, now);
      throw error;
    }
    await this.releaseLostHardware(tenantId, userId, outcome.state, now);
    await this.project(tenantId, userId, outcome);
    return { userId, tokenId, deleted: true };
  }

  /**
   * `hooks.erasureCompleted` runs once this request recorded and carried out an erasure the key
   * store held and the log missed, before the user registers anew (the audit trail's record of it).
   */
  async register(request: UsersRegisterRequest, now: Date, hooks: { erasureCompleted?: () => Promise<void> } = {}): Promise<UsersRegisterReply> {
    const { tenantId, userId } = request;
    await this.requireTenant(tenantId, now, this.options.autoCreateTenants);
    const command = {
      type: 'RegisterUser',
      data: {
        userId,
        displayName: request.displayName,
        email: request.email,
        phoneNumber: request.phoneNumber,
        phoneExtension: request.phoneExtension,
        language: request.language,
      },
    } as const;
    for (let attempt = 1; ; attempt++) {
      try {
        const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) => decideUser(command, state, now));
        // Also when nothing changed: a register repeated after a lost projection write repairs Redis.
        await this.project(tenantId, userId, outcome);
        return { userId, methods: methodsOf(outcome.state) };
      } catch (error) {
        // The key store says the user was erased, the log does not record it (a restore of the two
        // from different moments): the erasure is recorded and carried out as users.delete does,
        // then the user registers as a new user, as after any erasure. Nothing readable is lost
        // (that data's key is destroyed) and nothing erased comes back. A key that is missing
        // instead is not erased here: that takes the operator's users.delete (a register must not
        // take the user's tokens and devices, which still read, nor destroy a key that a
        // configuration fix might find again).
        if (!(error instanceof KeyStoreDisagreementError) || error.state !== 'erased' || attempt > 1) throw error;
        this.options.log.warn('the user’s data key is erased but the log did not record it; erasure completed before registering', { tenantId });
        // Recorded by this request only: a register racing it that completed it first records it.
        if (await this.completeKeyErasure(tenantId, userId, error.gen, now)) await hooks.erasureCompleted?.();
      }
    }
  }

  async enrollTotp(request: TotpEnrollRequest, now: Date): Promise<TotpEnrollReply> {
    const { tenantId, userId } = request;
    await this.requireTenant(tenantId, now, false);
    const tokenId = randomToken(TOTP_TOKEN_ID_BYTES);
    const label = request.label ?? userId;
    const secret = randomBytes(TOTP_SECRET_BYTES);
    try {
      // Only the sealed secret is stored; the plaintext leaves the service once, in this reply.
      const sealedSecret = seal(this.options.keyring, secret, SealContext.totpSecret(tenantId, userId, tokenId));
      const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) =>
        decideUser({ type: 'EnrollTotpToken', data: { tokenId, label, sealedSecret } }, state, now),
      );
      await this.project(tenantId, userId, outcome);
      const secretBase32 = base32Encode(secret);
      return {
        tokenId,
        secret: secretBase32,
        otpauthUri: otpauthUri({ issuer: this.options.totpIssuer, label, secretBase32, digits: 6, period: 30 }),
        digits: 6,
        period: 30,
        algorithm: 'SHA1',
      };
    } finally {
      secret.fill(0);
    }
  }

  /**
   * Push enrolment: a one-time activation code (10 minutes) for the user's authenticator app, with
   * the device API's URL holding it and that URL as a QR code. Nothing is recorded until a device
   * activates with it.
   */
  async enrollPush(request: UsersPushEnrollRequest, now: Date): Promise<UsersPushEnrollReply> {
    const { tenantId, userId } = request;
    await this.requireTenant(tenantId, now, false);
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, () => []);
    if (!outcome.state.registered) throw notFound('unknown user');
    const codes = this.activationCodes();
    const { code, expiresAt } = await this.store(() => codes.issue(tenantId, userId, this.options.projection.tagOf(tenantId, userId), now, randomBytes));
    const activationUrl = `${(this.options.deviceApiUrl ?? '').replace(/\/+$/, '')}/v1/activate?code=${code}`;
    return { activationCode: code, activationUrl, qrCode: await QRCode.toDataURL(activationUrl, { errorCorrectionLevel: 'M', margin: 2, width: 256 }), expiresAt: expiresAt.toISOString() };
  }

  /**
   * A device activates with its code (the device API asks): its key must be what the algorithm says
   * and have signed the proof, before the code is taken (a bad request does not burn it); the code is
   * then taken once, and the device recorded with its push token sealed. A refusal after the code
   * was taken but before anything was recorded (five apps already) gives the code back.
   */
  async activateDevice(request: DeviceActivateRequest, now: Date): Promise<DeviceActivateReply> {
    try {
      const key = devicePublicKey(request.algorithm, request.publicKey);
      if (!deviceSignatureValid(request.algorithm, key, DeviceSigned.activation(request.code, request.publicKey), request.proof)) {
        throw invalidRequest('proof: not the signature of this key over the activation string');
      }
    } catch (error) {
      if (error instanceof DeviceKeyError) throw invalidRequest(error.message);
      throw error;
    }
    const codes = this.activationCodes();
    const enrolment = await this.store(() => codes.take(request.code));
    if (!enrolment) throw notFound('unknown or expired activation code');
    const { tenantId, userId } = enrolment;
    const tag = this.options.projection.tagOf(tenantId, userId);
    const deviceId = joinDeviceId(tag, randomToken(16));
    const sealedPushToken = request.pushToken ? seal(this.options.keyring, Buffer.from(request.pushToken, 'utf8'), SealContext.pushToken(tenantId, userId, deviceId)) : undefined;
    let outcome;
    try {
      outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) =>
        decideUser(
          {
            type: 'ActivatePushDevice',
            data: { deviceId, name: request.name ?? request.platform, platform: request.platform, algorithm: request.algorithm, publicKey: request.publicKey, sealedPushToken },
            codeIssuedAtMs: enrolment.issuedAtMs,
          },
          state,
          now,
        ),
      );
    } catch (error) {
      // Refused before the append (five apps already, the record changing under it too often):
      // nothing was recorded, so the same code may try again, after a device is deleted. Not after
      // `unavailable`: an append that timed out may have been stored, and the code would then
      // activate a second device; nor after `not_found` (the user erased, or reset since the code
      // was issued): it will never activate. A give-back that fails leaves the code taken, as before.
      if (error instanceof ContractError && error.code !== 'unavailable' && error.code !== 'not_found') await codes.giveBack(enrolment).catch(() => undefined);
      throw error;
    }
    await this.project(tenantId, userId, outcome);
    return { deviceId, tenantId, userId, pollSeconds: DEVICE_POLL_SECONDS };
  }

  async deleteDevice(request: UsersDevicesDeleteRequest, now: Date): Promise<UsersDevicesDeleteReply> {
    const { tenantId, userId, deviceId } = request;
    await this.requireTenant(tenantId, now, false);
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) => decideUser({ type: 'DeletePushDevice', data: { deviceId } }, state, now));
    await this.project(tenantId, userId, outcome);
    return { userId, deviceId, deleted: true };
  }

  /** A push provider refused the device's token (dispatch says): push skips it until it activates again. */
  async reregisterDevice(request: DeviceReregisterRequest, now: Date): Promise<{ recorded: boolean }> {
    const { tenantId, userId, deviceId, provider, error } = request;
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) =>
      decideUser({ type: 'MarkDeviceForRegistration', data: { deviceId, provider, error } }, state, now),
    );
    if (outcome.appended) await this.project(tenantId, userId, outcome);
    return { recorded: outcome.appended };
  }

  private activationCodes(): ActivationCodes {
    if (!this.options.activationCodes) throw unavailable('push enrolment is not available');
    return this.options.activationCodes;
  }

  async activateTotp(request: TotpActivateRequest, now: Date): Promise<TotpActivateReply> {
    const { tenantId, userId, tokenId, code } = request;
    await this.requireTenant(tenantId, now, false);
    const attempts = this.options.activationAttempts;
    // Counted before the code is checked, atomically: concurrent guesses cannot pass the limit together.
    if (attempts && !(await this.store(() => attempts.reserve(tenantId, userId, tokenId)))) {
      throw rateLimited('too many codes tried for this token; try again in 10 minutes, or enroll it again');
    }
    let serialNumber: string | undefined;
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) => {
      const token = activationCandidate(state, tokenId, now);
      serialNumber = token.hardware?.serialNumber;
      const secret = open(this.options.keyring, token.sealedSecret, secretContext(tenantId, userId, token));
      try {
        return decideUser({ type: 'ActivateTotpToken', data: { tokenId, code, secret } }, state, now);
      } finally {
        secret.fill(0);
      }
    });
    if (!outcome.appended) return { tokenId, active: false };
    await this.project(tenantId, userId, outcome);
    await attempts?.clear(tenantId, userId, tokenId).catch(() => undefined);
    // A hardware token activated here (users.totp.activate) or through oath.tokens.activate: the
    // inventory says so too. Best effort: oath.tokens.activate completes it when it is cut short.
    const step = outcome.state.tokens.find((t) => t.tokenId === tokenId)?.activatedStep;
    if (serialNumber !== undefined && step !== undefined && this.hardwareActivated) {
      await this.hardwareActivated(tenantId, userId, { serialNumber, tokenId, step }, now).catch((error: unknown) =>
        this.options.log.warn('hardware token activated for the user, not yet in the inventory', { tenantId, error }),
      );
    }
    return { tokenId, active: true };
  }

  // ---- hardware tokens: the user's side of OathTokensService's steps ------------------------------

  private releaseHardware?: HardwareRelease;
  private hardwareActivated?: HardwareActivated;

  /** Who puts hardware tokens back into the inventory when a user loses them (OathTokensService). */
  onHardwareReleased(release: HardwareRelease): void {
    this.releaseHardware = release;
  }

  /** Who records a hardware token's activation in the inventory (OathTokensService). */
  onHardwareActivated(record: HardwareActivated): void {
    this.hardwareActivated = record;
  }

  /**
   * The command's part, after the user's change is stored: the hardware tokens the user lost go
   * back to the inventory. Best effort: the projector does it again when it handles the event
   * (completeRemovals), and so does a retry of the command.
   */
  private async releaseLostHardware(tenantId: string, userId: string, state: UserState, now: Date): Promise<void> {
    const lost = state.lostHardware ?? [];
    if (lost.length === 0 || !this.releaseHardware) return;
    try {
      await this.releaseHardware(tenantId, userId, lost, now);
    } catch (error) {
      this.options.log.warn('hardware tokens not released to the inventory yet', { tenantId, error });
    }
  }

  /**
   * No browser of the user remembered and no MFA completed: all of them when the reset's command does
   * it (`upTo` absent: auth-challenge stamps them with its own clock, which may run ahead of this
   * one), or those up to `upTo` when the projector does (UserProjector's RemovalsHandler).
   */
  private async forgetBrowsers(tenantId: string, userId: string, upTo?: Date): Promise<void> {
    const remembered = this.options.remembered;
    if (!remembered) return;
    const tag = this.options.projection.tagOf(tenantId, userId);
    try {
      await (upTo === undefined ? remembered.clear(tag) : remembered.forgetUpTo(tag, upTo.getTime()));
    } catch (error) {
      this.options.log.warn('remembered browsers not forgotten yet', { tenantId, error });
      throw unavailable('the change is stored, but the remembered browsers are not forgotten yet; try again', error);
    }
  }

  /**
   * The projector's part, when it handles an event that took something from the user (a token
   * deleted, a reset, an erasure), whoever recorded it and whether or not its command finished:
   * the hardware tokens the user lost go back to the inventory, and after a reset no browser of
   * theirs remembered up to `resetAt` stays (UserProjector's RemovalsHandler says how far that
   * reaches). Idempotent; a failure is thrown, so the event is delivered again.
   */
  async completeRemovals(tenantId: string, userId: string, options: { resetAt?: Date | undefined }, now: Date): Promise<void> {
    const { state } = await this.execute(userDecider, this.userRef(tenantId, userId), now, () => []);
    const lost = state.lostHardware ?? [];
    if (lost.length > 0 && this.releaseHardware) await this.releaseHardware(tenantId, userId, lost, now);
    if (options.resetAt) await this.forgetBrowsers(tenantId, userId, options.resetAt);
  }

  /** The step at which the user activated the token they hold, if they did. */
  async activatedStepOf(tenantId: string, userId: string, tokenId: string, now: Date): Promise<number | undefined> {
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, () => []);
    return outcome.state.registered ? outcome.state.tokens.find((t) => t.tokenId === tokenId)?.activatedStep : undefined;
  }

  /** Whether the user holds the token (a hardware token the inventory says they have). */
  async holdsToken(tenantId: string, userId: string, tokenId: string, now: Date): Promise<boolean> {
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, () => []);
    return outcome.state.registered && outcome.state.tokens.some((t) => t.tokenId === tokenId);
  }

  /** Throws what giving the user one more token would answer: unknown user, or at the token limit. */
  async checkCanTakeToken(tenantId: string, userId: string, tokenId: string, now: Date): Promise<void> {
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, () => []);
    if (!outcome.state.registered) throw notFound('unknown user');
    if (outcome.state.tokens.some((t) => t.tokenId === tokenId)) return;
    if (countedTokens(outcome.state, now) >= MAX_TOTP_TOKENS) throw conflict(`the user has ${MAX_TOTP_TOKENS} OATH tokens already (apps and hardware)`);
  }

  /**
   * Gives the user a token of the inventory (pending until its code is typed) under `claim`, whose
   * check runs right before the append (again on each retry of it); nothing when they have it.
   */
  async giveHardwareToken(tenantId: string, userId: string, token: ImportedToken, claim: HardwareClaim, now: Date): Promise<void> {
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, async (state) => {
      if (state.registered && !state.tokens.some((t) => t.tokenId === token.tokenId)) await claim.check();
      return decideUser({ type: 'AssignHardwareToken', data: token, claimedAtMs: claim.claimedAtMs }, state, now);
    });
    if (outcome.appended) await this.project(tenantId, userId, outcome);
  }

  /** Takes a token away from the user (its serial number was replaced by a new import); nothing when they do not have it. */
  async takeHardwareToken(tenantId: string, userId: string, tokenId: string, now: Date): Promise<void> {
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, (state) =>
      state.registered && state.tokens.some((t) => t.tokenId === tokenId) ? decideUser({ type: 'DeleteTotpToken', data: { tokenId } }, state, now) : [],
    );
    if (outcome.appended) await this.project(tenantId, userId, outcome);
  }

  /**
   * Activates the user's hardware token by the code it shows (±1 step of its own period), with the
   * same attempt limit as app tokens; the time step of the code when it matched, else undefined.
   */
  async activateHardwareToken(tenantId: string, userId: string, tokenId: string, code: string, now: Date): Promise<number | undefined> {
    const reply = await this.activateTotp({ tenantId, userId, tokenId, code }, now);
    if (!reply.active) return undefined;
    const outcome = await this.execute(userDecider, this.userRef(tenantId, userId), now, () => []);
    return outcome.state.tokens.find((t) => t.tokenId === tokenId)?.activatedStep;
  }

  /** Throws `not_found` when the tenant does not exist. */
  async requireExistingTenant(tenantId: string, now: Date): Promise<void> {
    await this.requireTenant(tenantId, now, false);
  }

  /** Every user command checks its tenant first: a user of an unknown tenant is not found. */
  private async requireTenant(tenantId: string, now: Date, provision: boolean): Promise<void> {
    const outcome = provision
      ? await this.executeTenant(tenantId, { type: 'ProvisionTenant', data: {} }, now)
      : await this.execute(tenantDecider, this.tenantRef(tenantId), now, () => []);
    if (!outcome.state.exists) throw notFound('unknown tenant');
  }

  private executeTenant(tenantId: string, command: TenantCommand, now: Date): Promise<Outcome<TenantState>> {
    return this.execute(tenantDecider, this.tenantRef(tenantId), now, (state) => tenantDecider.decide(command, state, now));
  }

  /**
   * `personalData: false` loads a user without opening their personal data (see
   * AggregateLoader.loadUser): only for a decision that needs none, and that seals none.
   */
  private async execute<C, S, E extends UserEvent | TenantEvent>(
    decider: Decider<C, S, E>,
    ref: AggregateRef,
    now: Date,
    decide: (state: S, loaded: LoadedState<S>) => E[] | Promise<E[]>,
    options: { personalData?: boolean } = {},
  ): Promise<Outcome<S>> {
    let keyGoneMeanwhile: UserDataKeyGoneError | undefined;
    for (let attempt = 1; attempt <= MAX_APPEND_ATTEMPTS; attempt++) {
      const loaded =
        ref.kind === 'tenant'
          ? await this.store(() => this.loader.loadTenant(decider as Decider<unknown, S, TenantEvent>, ref.subject))
          : ((await this.loadUser(ref, options.personalData !== false)) as LoadedState<unknown> as LoadedState<S> | UserDataKeyGoneError);
      if (loaded instanceof UserDataKeyGoneError) {
        keyGoneMeanwhile = loaded;
        continue;
      }
      keyGoneMeanwhile = undefined;
      const state = loaded.state;
      const decided = await decide(state, loaded);
      if (decided.length === 0) {
        if (ref.kind === 'user') await this.loader.rememberUser(ref, loaded as LoadedState<unknown> as LoadedState<UserState>, state as UserState, loaded.lastSeq);
        return { state, appended: false, seq: loaded.lastSeq };
      }
      // A registration after an erasure seals under a later generation than the one destroyed.
      const minGen = ref.kind === 'user' ? ((state as UserState).erasedGen ?? 0) + 1 : 1;
      const envelopes = await this.orKeyGone(ref, () => this.store(() => this.codec.seal(ref, decided, now, minGen)));
      try {
        const seq = await this.store(() => this.options.store.append(ref.subject, envelopes, loaded.lastSeq));
        const next = decided.reduce(decider.evolve, state);
        if (ref.kind === 'user') await this.loader.rememberUser(ref, loaded as LoadedState<unknown> as LoadedState<UserState>, next as UserState, seq);
        return { state: next, appended: true, seq };
      } catch (error) {
        if (!(error instanceof ConcurrencyError)) throw error;
      }
    }
    if (keyGoneMeanwhile) throw unavailable('the user’s data key changed concurrently too often; try again', keyGoneMeanwhile);
    throw conflict('the record changed concurrently too often; try again');
  }

  /**
   * The user's state, or the key read that found a key of the events gone for a moment (an
   * erasure racing this load: load again); KeyStoreDisagreementError when it is gone for good.
   */
  private async loadUser(ref: AggregateRef, personalData: boolean): Promise<LoadedState<UserState> | UserDataKeyGoneError> {
    const loaded = await this.store(() =>
      this.loader.loadUser(ref, { personalData }).catch((error: unknown) => {
        if (error instanceof UserDataKeyGoneError) return error;
        throw error;
      }),
    );
    if (loaded instanceof UserDataKeyGoneError) await this.confirmKeyGone(ref, loaded.state, loaded.gen);
    return loaded;
  }

  /**
   * After a key read found generation `gen` of the user's personal data erased or missing: throws
   * KeyStoreDisagreementError when the log, read again now (from the stream leader), still holds
   * that data unerased. An erasure records UserErased before it destroys the key, so one that raced
   * the first read shows here. A key is stored before anything is sealed under it, so one missing
   * after its event was read is lost; the key store is read again (from its leader) all the same.
   * Returns when it was only a race (the caller loads again).
   */
  private async confirmKeyGone(ref: AggregateRef, state: 'erased' | 'missing', gen: number): Promise<void> {
    const again = await this.store(() => this.loader.loadUser(ref, { personalData: false }));
    if (!again.state.registered) return;
    if (state === 'erased') {
      if ((again.state.erasedGen ?? 0) >= gen) return;
    } else {
      if (!again.sealedGens?.has(gen)) return;
      const entry = await this.store(() => this.options.keys.current(ref.tenantId, ref.aggregateId));
      // There now, or erased meanwhile: the next load tells.
      if (entry && entry.gen >= gen) return;
    }
    this.options.log.warn('the user’s events and their data key disagree (MFA_USER_KEYS restored from another moment than the event log?)', { tenantId: ref.tenantId, key: state, gen });
    throw new KeyStoreDisagreementError(state, gen);
  }

  /** `call` on the user's data key: an erasure it found that the log never records is KeyStoreDisagreementError. */
  private async orKeyGone<T>(ref: AggregateRef, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (ref.kind === 'user' && error instanceof UserErasedMeanwhileError && error.gen !== undefined) await this.confirmKeyGone(ref, 'erased', error.gen);
      throw error;
    }
  }

  /** Infrastructure failures answer `unavailable`; conflicts and corrupt events pass through. */
  private store<T>(call: () => Promise<T>): Promise<T> {
    return storeCall(this.options.log, call);
  }

  private async project(tenantId: string, userId: string, outcome: Outcome<UserState>): Promise<void> {
    if (outcome.seq === 0) return;
    // The wrapped data key travels with the snapshot: auth-challenge seals challenge events with it.
    const key = await this.orKeyGone(this.userRef(tenantId, userId), () =>
      this.store(() => this.options.keys.getOrCreate(tenantId, userId, { minGen: (outcome.state.erasedGen ?? 0) + 1 })),
    );
    const snapshot = userSnapshot(this.options.keyring, tenantId, userId, outcome.state, outcome.seq, key);
    try {
      // After a loss of Redis, a user with TOTP tokens is written only once the rebuild has put
      // back the steps accepted before it (a second or two): waited for here, then `unavailable`.
      await this.options.projection.apply(snapshot, { waitForStepsMs: STEPS_RESTORE_WAIT_MS });
    } catch (error) {
      // The events are stored; the projector consumer will write them. Until it does, the caller
      // cannot rely on the change, so it hears about the failure.
      this.options.log.warn('user projection write failed', { tenantId, error });
      throw unavailable('user projection unavailable; the change is stored and will be projected shortly', error);
    }
  }

  private userRef(tenantId: string, userId: string): AggregateRef {
    return { kind: 'user', subject: EventSubjects.user(tenantId, userId), tenantId, aggregateId: userId };
  }

  private tenantRef(tenantId: string): AggregateRef {
    return { kind: 'tenant', subject: EventSubjects.tenant(tenantId), tenantId, aggregateId: tenantId };
  }
}
