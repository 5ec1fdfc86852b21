import { conflict, notFound, rateLimited, USER_EVENT_TYPES, type Method } from '@mfa/contracts';
import { matchTotpStep } from '@mfa/crypto';
import { domainEvent, type Decider, type DomainEvent } from './events.js';

/** Up to 5 OATH hardware tokens or authenticator apps per user. */
export const MAX_TOTP_TOKENS = 5;
/** An enrollment not activated within this time is abandoned: it no longer counts nor activates. */
export const PENDING_TOKEN_LIFETIME_MS = 10 * 60 * 1000;
/**
 * Enrolments a user may start per day. Abandoned enrolments expire and stop counting towards
 * the token limit, but each is an event of the user aggregate: without a cap, a caller could
 * grow the aggregate (and every later read of it) without bound.
 */
export const MAX_ENROLMENTS_PER_DAY = 10;
const DAY_MS = 24 * 60 * 60 * 1000;
/** Lost hardware tokens a user's state remembers, the newest (see UserState.lostHardware). */
export const MAX_LOST_HARDWARE = 10;

const PROFILE_FIELDS = ['displayName', 'email', 'phoneNumber', 'phoneExtension', 'language'] as const;
type ProfileField = (typeof PROFILE_FIELDS)[number];
type Profile = Partial<Record<ProfileField, string>>;

export interface TotpToken {
  tokenId: string;
  label: string;
  /** App tokens: sealed with SealContext.totpSecret (tenant, user, token); hardware: SealContext.hardwareSecret (tenant, token). */
  sealedSecret: string;
  digits: 6 | 8;
  period: 30 | 60;
  /** Hardware tokens may use SHA-256; apps always SHA-1. */
  algorithm?: 'SHA1' | 'SHA256' | undefined;
  /** Set for a hardware token of the tenant's inventory (oath.import): it never expires while pending. */
  hardware?: { serialNumber: string; manufacturer?: string | undefined; model?: string | undefined } | undefined;
  /** When it was enrolled (app) or assigned (hardware). */
  enrolledAtMs: number;
  /** Set once activated: the time step of the activation code, never to be accepted again. */
  activatedStep?: number | undefined;
}

/** A hardware token the user no longer holds, which the inventory must not name them for any more. */
export interface LostHardwareToken {
  tokenId: string;
  serialNumber: string;
  /** When it went (the time of the event that took it). */
  lostAtMs: number;
  how: 'deleted' | 'reset' | 'erased';
}

export interface UserState {
  registered: boolean;
  userId?: string | undefined;
  profile: Profile;
  /** In enrollment order. */
  tokens: readonly TotpToken[];
  /**
   * Set once the user was erased: the generation of the data key destroyed last. A registration
   * after it is a new user, whose personal data is sealed under a later generation.
   */
  erasedGen?: number | undefined;
  /** users.methods.default: used while the user still has that method. */
  chosenDefault?: Method | undefined;
  /** App passwords (their slow salted hashes), in creation order; when each was created (absent in a state folded before it was kept). */
  appPasswords?: ReadonlyArray<{ appPasswordId: string; name?: string | undefined; hash: string; createdAtMs?: number }>;
  /** The user signed a legacy client in with an app password once: app passwords stay required for them (until a reset). */
  appPasswordUsed?: boolean | undefined;
  /** The voice PIN's scrypt hash, sealed (users.pin.set); a reset clears it. */
  sealedPinHash?: string | undefined;
  /** Authenticator apps activated for push, in activation order; a reset clears them. */
  devices?: readonly PushDevice[];
  /**
   * When the app tokens of the last 24 hours were enrolled (ms), deleted ones included: what the
   * daily enrolment cap counts, so that enrolling and deleting in turn does not get round it.
   */
  recentEnrolmentsMs?: readonly number[];
  /**
   * Push activation codes issued before this time (ms) activate nothing: when the user was
   * registered (a new user, not a registration again) or last reset. A code outlives neither.
   */
  codesValidFromMs?: number | undefined;
  /**
   * Hardware tokens the user lost (deleted, reset, erased; kept through an erasure), newest last,
   * until given back: what returns them to the inventory, again until it is done (the command,
   * its retry, the projector), and what refuses to give one back under a claim older than its loss.
   */
  lostHardware?: readonly LostHardwareToken[];
}

export interface PushDevice {
  deviceId: string;
  name: string;
  platform: 'ios' | 'android' | 'none';
  algorithm: 'ES256' | 'Ed25519';
  publicKey: string;
  sealedPushToken?: string | undefined;
  activatedAtMs: number;
  /** reregister: its push provider refused its token; push does not reach it until it activates again. */
  state: 'active' | 'reregister';
}

/** Authenticator apps per user at most (the seeds: five apps or tokens). */
export const MAX_PUSH_DEVICES = 5;

/** Whether only an app password signs the user's legacy clients in: they have one, or once used one. */
export const appPasswordRequired = (state: UserState): boolean => (state.appPasswords ?? []).length > 0 || state.appPasswordUsed === true;

export type UserEvent = DomainEvent<(typeof USER_EVENT_TYPES)[number]>;

type UserCommand =
  | { type: 'RegisterUser'; data: { userId: string } & Profile }
  /** The caller draws the token id and secret (randomness and keys stay out of the decider). */
  | { type: 'EnrollTotpToken'; data: { tokenId: string; label: string; sealedSecret: string } }
  /** `secret` is the opened secret of the token named by `tokenId` (see `activationCandidate`). */
  | { type: 'ActivateTotpToken'; data: { tokenId: string; code: string; secret: Uint8Array } }
  /** `gen` is the generation of the user's data key, which the caller destroys after recording this. */
  | { type: 'EraseUser'; data: { userId: string; gen: number } }
  /** `codesOutstanding`: push activation codes issued lately may still activate (the reset revokes them). */
  | { type: 'ResetMfa'; data: { userId: string }; codesOutstanding?: boolean }
  | { type: 'DeleteTotpToken'; data: { tokenId: string } }
  /**
   * A token of the inventory given to the user (its aggregate was claimed for them first, at
   * `claimedAtMs`: a token the user lost after that claim is not given back under it).
   */
  | {
      type: 'AssignHardwareToken';
      claimedAtMs?: number | undefined;
      data: {
        tokenId: string;
        serialNumber: string;
        sealedSecret: string;
        digits: 6 | 8;
        period: 30 | 60;
        algorithm: 'SHA1' | 'SHA256';
        manufacturer?: string | undefined;
        model?: string | undefined;
      };
    }
  | { type: 'ChooseDefaultMethod'; data: { method: Method } }
  /** The caller draws the id and the password and hashes it (randomness and scrypt stay out of the decider). */
  | { type: 'CreateAppPassword'; data: { appPasswordId: string; name?: string | undefined; hash: string } }
  | { type: 'DeleteAppPasswords'; data: { appPasswordId?: string | undefined } }
  /** apppasswords.verify found this app password: the first use is recorded, later ones are not. */
  | { type: 'RecordAppPasswordUse'; data: { appPasswordId: string } }
  /** The caller hashes (scrypt) and seals the PIN: randomness and keys stay out of the decider. */
  | { type: 'SetPin'; data: { sealedHash: string } }
  /**
   * The caller took the activation code (issued at `codeIssuedAtMs`) and checked the key's proof;
   * the device id is drawn by it.
   */
  | { type: 'ActivatePushDevice'; data: Omit<PushDevice, 'activatedAtMs' | 'state'>; codeIssuedAtMs: number }
  | { type: 'DeletePushDevice'; data: { deviceId: string } }
  | { type: 'MarkDeviceForRegistration'; data: { deviceId: string; provider: string; error: string } }
  /**
   * After a master key rotation: secrets sealed again by the caller (the keys stay out of the
   * decider), each with the value it replaces (`from`): one changed meanwhile (enrolled, set or
   * activated again) keeps its new value.
   */
  | { type: 'ResealSecrets'; data: ResealSecrets };

export interface ResealSecrets {
  tokens?: ReadonlyArray<{ tokenId: string; from: string; sealedSecret: string }>;
  pinHash?: { from: string; sealedHash: string } | undefined;
  devices?: ReadonlyArray<{ deviceId: string; from: string; sealedPushToken: string }>;
}

const USER_EVENTS: ReadonlySet<string> = new Set(USER_EVENT_TYPES);

export function isUserEvent(event: { type: string }): event is UserEvent {
  return USER_EVENTS.has(event.type);
}

export const initialUserState = (): UserState => ({ registered: false, profile: {}, tokens: [] });

/** App passwords per user at most: a legacy mail client or two per device, not a bank of guesses. */
export const MAX_APP_PASSWORDS = 10;

const isActive = (token: TotpToken): boolean => token.activatedStep !== undefined;

// A hardware token waits for its first code as long as it takes: the device is in the user's hands.
const isPendingExpired = (token: TotpToken, now: Date): boolean =>
  !isActive(token) && token.hardware === undefined && now.getTime() - token.enrolledAtMs >= PENDING_TOKEN_LIFETIME_MS;

/** Tokens that count towards MAX_TOTP_TOKENS: active ones, and pending ones not abandoned. */
export const countedTokens = (state: UserState, now: Date): number => state.tokens.filter((t) => isActive(t) || !isPendingExpired(t, now)).length;

const tooManyTokens = () => conflict(`a user may have at most ${MAX_TOTP_TOKENS} OATH tokens (apps and hardware, active or pending)`);

export const activeTokens = (state: UserState): TotpToken[] => state.tokens.filter(isActive);

/** Methods the user has registered, strongest first: what register replies and challenges offer. */
export function methodsOf(state: UserState): Method[] {
  const methods: Method[] = [];
  // Push needs a device it can reach or that polls: one whose token was refused does not count.
  if ((state.devices ?? []).some((d) => d.state === 'active')) methods.push('push');
  if (activeTokens(state).length > 0) methods.push('totp');
  // A phone number gives both phone methods, a code by SMS and a call to answer (MISSION.md,
  // Telephony), also a number the phone-number library takes for a fixed line: many carriers
  // deliver SMS to landlines (read out by a voice), the library's types are guesses in countries
  // whose ranges mix both, and the IdP offers the call when an SMS does not arrive.
  if (state.profile.phoneNumber) methods.push('sms', 'voice');
  return methods;
}

/** The user's chosen default while they still have it, else their strongest method. */
export function defaultMethodOf(state: UserState): Method | undefined {
  const methods = methodsOf(state);
  return state.chosenDefault && methods.includes(state.chosenDefault) ? state.chosenDefault : methods[0];
}

function requireRegistered(state: UserState): void {
  if (!state.registered) throw notFound('unknown user');
}

/** The pending token that `ActivateTotpToken` may activate; throws what activation would answer. */
export function activationCandidate(state: UserState, tokenId: string, now: Date): TotpToken {
  requireRegistered(state);
  const token = state.tokens.find((t) => t.tokenId === tokenId);
  if (!token) throw notFound('unknown token');
  if (isActive(token)) throw conflict('token is already active');
  if (isPendingExpired(token, now)) throw notFound('token enrollment expired; enroll again');
  return token;
}

export function decideUser(command: UserCommand, state: UserState, now: Date): UserEvent[] {
  switch (command.type) {
    case 'RegisterUser': {
      const { userId, ...requested } = command.data;
      const provided = PROFILE_FIELDS.filter((f) => requested[f] !== undefined);
      if (!state.registered) {
        const profile: Profile = {};
        for (const f of provided) profile[f] = requested[f];
        return [domainEvent('UserRegistered', { userId, ...profile }, now)];
      }
      // Fields left out of a request keep their value; registering again with the same values
      // changes nothing, so retries by an IdP are free.
      const changed: Profile = {};
      for (const f of provided) if (requested[f] !== state.profile[f]) changed[f] = requested[f];
      return Object.keys(changed).length === 0 ? [] : [domainEvent('UserProfileChanged', changed, now)];
    }
    case 'EnrollTotpToken': {
      requireRegistered(state);
      const { tokenId, label, sealedSecret } = command.data;
      if (state.tokens.some((t) => t.tokenId === tokenId)) throw conflict('token id already in use');
      if (countedTokens(state, now) >= MAX_TOTP_TOKENS) throw tooManyTokens();
      const today = (state.recentEnrolmentsMs ?? []).filter((at) => now.getTime() - at < DAY_MS).length;
      if (today >= MAX_ENROLMENTS_PER_DAY) {
        throw rateLimited(`at most ${MAX_ENROLMENTS_PER_DAY} TOTP enrolments per user per day`);
      }
      return [
        domainEvent('TotpTokenEnrolled', { tokenId, label, sealedSecret, digits: 6, period: 30, algorithm: 'SHA1' }, now),
      ];
    }
    case 'AssignHardwareToken': {
      requireRegistered(state);
      const { manufacturer, model, ...token } = command.data;
      const held = state.tokens.find((t) => t.tokenId === token.tokenId);
      // Given already (an assignment retried, or resumed after a crash): nothing more to record.
      if (held) return [];
      const lost = state.lostHardware?.find((t) => t.tokenId === token.tokenId);
      if (lost && command.claimedAtMs !== undefined && lost.lostAtMs >= command.claimedAtMs) {
        throw conflict('the token was taken from the user after it was assigned to them; assign it again');
      }
      if (countedTokens(state, now) >= MAX_TOTP_TOKENS) throw tooManyTokens();
      return [domainEvent('HardwareTokenAssigned', { ...token, ...(manufacturer ? { manufacturer } : {}), ...(model ? { model } : {}) }, now)];
    }
    case 'ActivateTotpToken': {
      const token = activationCandidate(state, command.data.tokenId, now);
      const step = matchTotpStep(command.data.secret, command.data.code, now.getTime(), { digits: token.digits, period: token.period, algorithm: token.algorithm ?? 'SHA1' });
      // A wrong code is an ordinary outcome, not a state change: the caller answers active=false.
      if (step === undefined) return [];
      return [domainEvent('TotpTokenActivated', { tokenId: token.tokenId, step }, now)];
    }
    case 'EraseUser': {
      if (!state.registered) {
        // Erased already: nothing more to record (the caller shreds again, which changes nothing).
        if (state.erasedGen !== undefined) return [];
        throw notFound('unknown user');
      }
      const { userId, gen } = command.data;
      if (gen <= (state.erasedGen ?? 0)) throw new Error(`data key generation ${gen} was erased before`);
      return [domainEvent('UserErased', { userId, gen }, now)];
    }
    case 'ResetMfa': {
      requireRegistered(state);
      // Nothing to clear: nothing to record (a repeated reset is free).
      const nothing = state.tokens.length === 0 && !state.profile.phoneNumber && !state.profile.phoneExtension && !appPasswordRequired(state) && !state.sealedPinHash && (state.devices ?? []).length === 0;
      if (nothing && command.codesOutstanding !== true) return [];
      return [domainEvent('UserMfaReset', { userId: command.data.userId }, now)];
    }
    case 'DeleteTotpToken': {
      requireRegistered(state);
      if (!state.tokens.some((t) => t.tokenId === command.data.tokenId)) throw notFound('unknown token');
      return [domainEvent('TotpTokenDeleted', { tokenId: command.data.tokenId }, now)];
    }
    case 'ChooseDefaultMethod': {
      requireRegistered(state);
      const { method } = command.data;
      if (!methodsOf(state).includes(method)) throw conflict(`the user has not registered ${method}`);
      if (defaultMethodOf(state) === method && state.chosenDefault === method) return [];
      return [domainEvent('DefaultMethodChosen', { method }, now)];
    }
    case 'CreateAppPassword': {
      requireRegistered(state);
      if ((state.appPasswords ?? []).length >= MAX_APP_PASSWORDS) throw conflict(`a user may have at most ${MAX_APP_PASSWORDS} app passwords`);
      const { appPasswordId, name, hash } = command.data;
      return [domainEvent('AppPasswordCreated', { appPasswordId, ...(name ? { name } : {}), hash }, now)];
    }
    case 'DeleteAppPasswords': {
      requireRegistered(state);
      const { appPasswordId } = command.data;
      const all = state.appPasswords ?? [];
      if (appPasswordId === undefined) return all.length === 0 ? [] : [domainEvent('AppPasswordDeleted', {}, now)];
      if (!all.some((p) => p.appPasswordId === appPasswordId)) throw notFound('unknown app password');
      return [domainEvent('AppPasswordDeleted', { appPasswordId }, now)];
    }
    case 'RecordAppPasswordUse': {
      requireRegistered(state);
      if (state.appPasswordUsed) return [];
      if (!(state.appPasswords ?? []).some((p) => p.appPasswordId === command.data.appPasswordId)) return [];
      return [domainEvent('AppPasswordUsed', { appPasswordId: command.data.appPasswordId }, now)];
    }
    case 'SetPin': {
      requireRegistered(state);
      return [domainEvent('UserPinSet', { sealedHash: command.data.sealedHash }, now)];
    }
    case 'ActivatePushDevice': {
      requireRegistered(state);
      // A code of the user before a reset, or of an erased user whose id was registered again.
      if (command.codeIssuedAtMs < (state.codesValidFromMs ?? 0)) throw notFound('unknown or expired activation code');
      const devices = state.devices ?? [];
      if (devices.some((d) => d.deviceId === command.data.deviceId)) throw conflict('device id already in use');
      if (devices.length >= MAX_PUSH_DEVICES) throw conflict(`a user may have at most ${MAX_PUSH_DEVICES} authenticator apps; delete one first`);
      const { sealedPushToken, ...device } = command.data;
      return [domainEvent('PushDeviceActivated', { ...device, ...(sealedPushToken ? { sealedPushToken } : {}) }, now)];
    }
    case 'DeletePushDevice': {
      requireRegistered(state);
      if (!(state.devices ?? []).some((d) => d.deviceId === command.data.deviceId)) throw notFound('unknown device');
      return [domainEvent('PushDeviceDeleted', { deviceId: command.data.deviceId }, now)];
    }
    case 'MarkDeviceForRegistration': {
      const device = (state.devices ?? []).find((d) => d.deviceId === command.data.deviceId);
      // Deleted meanwhile, or marked already: nothing to record (providers report every send).
      if (!state.registered || !device || device.state === 'reregister') return [];
      return [domainEvent('PushDeviceNeedsRegistration', command.data, now)];
    }
    case 'ResealSecrets': {
      if (!state.registered) return [];
      const { data } = command;
      const tokens = (data.tokens ?? []).filter((r) => state.tokens.some((t) => t.tokenId === r.tokenId && t.sealedSecret === r.from));
      const pin = data.pinHash && state.sealedPinHash === data.pinHash.from ? data.pinHash.sealedHash : undefined;
      const devices = (data.devices ?? []).filter((r) => (state.devices ?? []).some((d) => d.deviceId === r.deviceId && d.sealedPushToken === r.from));
      if (tokens.length === 0 && !pin && devices.length === 0) return [];
      return [
        domainEvent(
          'SecretsResealed',
          {
            ...(tokens.length ? { tokens: tokens.map(({ tokenId, sealedSecret }) => ({ tokenId, sealedSecret })) } : {}),
            ...(pin ? { sealedPinHash: pin } : {}),
            ...(devices.length ? { devices: devices.map(({ deviceId, sealedPushToken }) => ({ deviceId, sealedPushToken })) } : {}),
          },
          now,
        ),
      ];
    }
    default: {
      const unknown: never = command;
      throw new Error(`unknown command ${(unknown as { type: string }).type}`);
    }
  }
}

export function evolveUser(state: UserState, event: UserEvent): UserState {
  switch (event.type) {
    case 'UserRegistered': {
      const { userId, ...fields } = event.data;
      const registeredAtMs = state.registered ? {} : { codesValidFromMs: Date.parse(event.occurredAt) };
      return { ...state, ...registeredAtMs, registered: true, userId, profile: pickProfile(fields) };
    }
    case 'UserProfileChanged':
      return { ...state, profile: { ...state.profile, ...pickProfile(event.data) } };
    case 'UserErased':
      // Everything of the user goes: profile, tokens; a register after it starts a new user.
      return { ...initialUserState(), erasedGen: event.data.gen, ...withLost(losing(state, state.tokens, event.occurredAt, 'erased')) };
    case 'TotpTokenEnrolled': {
      const { tokenId, label, sealedSecret, digits, period } = event.data;
      const enrolledAtMs = Date.parse(event.occurredAt);
      const token: TotpToken = { tokenId, label, sealedSecret, digits, period, enrolledAtMs };
      const recentEnrolmentsMs = [...(state.recentEnrolmentsMs ?? []).filter((at) => enrolledAtMs - at < DAY_MS), enrolledAtMs];
      return { ...state, tokens: [...state.tokens, token], recentEnrolmentsMs };
    }
    case 'HardwareTokenAssigned': {
      const { tokenId, serialNumber, sealedSecret, digits, period, algorithm, manufacturer, model } = event.data;
      const token: TotpToken = {
        tokenId,
        label: [manufacturer, model].filter(Boolean).join(' ') || `Hardware token ${serialNumber}`,
        sealedSecret,
        digits,
        period,
        algorithm,
        hardware: { serialNumber, ...(manufacturer ? { manufacturer } : {}), ...(model ? { model } : {}) },
        enrolledAtMs: Date.parse(event.occurredAt),
      };
      const lostHardware = state.lostHardware?.filter((t) => t.tokenId !== tokenId);
      return { ...state, tokens: [...state.tokens, token], ...(lostHardware ? { lostHardware } : {}) };
    }
    case 'TotpTokenActivated':
      return {
        ...state,
        tokens: state.tokens.map((t) => (t.tokenId === event.data.tokenId ? { ...t, activatedStep: event.data.step } : t)),
      };
    case 'TotpTokenDeleted': {
      const gone = state.tokens.filter((t) => t.tokenId === event.data.tokenId);
      return { ...state, tokens: state.tokens.filter((t) => t.tokenId !== event.data.tokenId), ...withLost(losing(state, gone, event.occurredAt, 'deleted')) };
    }
    case 'UserMfaReset': {
      // Every method goes: tokens and the phone with its extension; name, e-mail and language stay.
      const { phoneNumber: _phone, phoneExtension: _extension, ...profile } = state.profile;
      return {
        ...state,
        ...withLost(losing(state, state.tokens, event.occurredAt, 'reset')),
        profile,
        tokens: [],
        chosenDefault: undefined,
        appPasswords: [],
        appPasswordUsed: undefined,
        sealedPinHash: undefined,
        devices: [],
        // The push activation codes issued until now go too.
        codesValidFromMs: Date.parse(event.occurredAt),
      };
    }
    case 'DefaultMethodChosen':
      return { ...state, chosenDefault: event.data.method };
    case 'AppPasswordCreated': {
      const { appPasswordId, name, hash } = event.data;
      return { ...state, appPasswords: [...(state.appPasswords ?? []), { appPasswordId, ...(name ? { name } : {}), hash, createdAtMs: Date.parse(event.occurredAt) }] };
    }
    case 'AppPasswordDeleted': {
      const id = event.data.appPasswordId;
      return { ...state, appPasswords: id === undefined ? [] : (state.appPasswords ?? []).filter((p) => p.appPasswordId !== id) };
    }
    case 'AppPasswordUsed':
      return { ...state, appPasswordUsed: true };
    case 'UserPinSet':
      return { ...state, sealedPinHash: event.data.sealedHash };
    case 'PushDeviceActivated': {
      const device: PushDevice = { ...event.data, activatedAtMs: Date.parse(event.occurredAt), state: 'active' };
      return { ...state, devices: [...(state.devices ?? []), device] };
    }
    case 'PushDeviceDeleted':
      return { ...state, devices: (state.devices ?? []).filter((d) => d.deviceId !== event.data.deviceId) };
    case 'PushDeviceNeedsRegistration':
      return { ...state, devices: (state.devices ?? []).map((d) => (d.deviceId === event.data.deviceId ? { ...d, state: 'reregister' as const } : d)) };
    case 'SecretsResealed': {
      // The same secrets under another key: only the sealed values change, of what is still there.
      const tokens = new Map((event.data.tokens ?? []).map((t) => [t.tokenId, t.sealedSecret]));
      const devices = new Map((event.data.devices ?? []).map((d) => [d.deviceId, d.sealedPushToken]));
      return {
        ...state,
        tokens: state.tokens.map((t) => (tokens.has(t.tokenId) ? { ...t, sealedSecret: tokens.get(t.tokenId)! } : t)),
        ...(event.data.sealedPinHash && state.sealedPinHash ? { sealedPinHash: event.data.sealedPinHash } : {}),
        ...(state.devices ? { devices: state.devices.map((d) => (devices.has(d.deviceId) && d.sealedPushToken ? { ...d, sealedPushToken: devices.get(d.deviceId)! } : d)) } : {}),
      };
    }
    default: {
      const unknown: never = event;
      throw new Error(`unknown event ${(unknown as { type: string }).type}`);
    }
  }
}

/** The user's lost hardware tokens with the hardware ones among `tokens` added, lost at `at`. */
function losing(state: UserState, tokens: readonly TotpToken[], at: string, how: LostHardwareToken['how']): readonly LostHardwareToken[] {
  const lostAtMs = Date.parse(at);
  const added = tokens.flatMap((t) => (t.hardware ? [{ tokenId: t.tokenId, serialNumber: t.hardware.serialNumber, lostAtMs, how }] : []));
  const kept = (state.lostHardware ?? []).filter((t) => !added.some((a) => a.tokenId === t.tokenId));
  return [...kept, ...added].slice(-MAX_LOST_HARDWARE);
}

const withLost = (lostHardware: readonly LostHardwareToken[]) => (lostHardware.length > 0 ? { lostHardware } : {});

function pickProfile(fields: Profile): Profile {
  const profile: Profile = {};
  for (const f of PROFILE_FIELDS) if (fields[f] !== undefined) profile[f] = fields[f];
  return profile;
}

export const userDecider: Decider<UserCommand, UserState, UserEvent> = {
  decide: decideUser,
  evolve: evolveUser,
  initialState: initialUserState,
  accepts: isUserEvent,
};
