import type { RedisClient } from '@mfa/projection';
import { maskSecret, projectionUserKey, userTag, type Keyring } from '@mfa/crypto';
import { unavailable } from '@mfa/contracts';
import { HASH_SLOTS, parseDeviceId, PROJECTION_LAYOUT, RedisKeys, slotMarkerKey, slotStepsMarkerKey, UserFields } from './keys.js';
import { UserIndex } from './user-index.js';
import { randomBytes } from 'node:crypto';

/** What auth-challenge needs of a user, as user-settings rebuilt it from the events. */
export interface UserSnapshot {
  tenantId: string;
  userId: string;
  /** Stream sequence of the last event folded in: projections never go backwards. */
  seq: number;
  displayName?: string | undefined;
  email?: string | undefined;
  phoneNumber?: string | undefined;
  language?: string | undefined;
  methods: string[];
  defaultMethod?: string | undefined;
  /** The user's data key, wrapped with the master keyring, as `<gen>:<wrapped>` (see UserFields.dataKey). */
  dataKey?: string | undefined;
  /** The personal data sealed for challenge events (purpose `challenge`), copied by start as it is. */
  challengePii?: string | undefined;
  /** The country of the user's phone number (ISO 3166-1 alpha-2), when known: the tenant's SMS country rules. */
  phoneCountry?: string | undefined;
  /** Only an app password signs the user's legacy clients in (they have one, or once used one). */
  appPasswordRequired?: boolean | undefined;
  /** When the user's current methods began (ms: registration as a new user, or the last reset); see UserFields.validFrom. */
  validFrom?: number | undefined;
  /** Active TOTP tokens with their plaintext secret (masked before it reaches Redis). */
  totpTokens: Array<{ tokenId: string; secret: Uint8Array; digits: number; period: number; algorithm?: 'SHA1' | 'SHA256' | undefined; activatedStep: number }>;
  /** The user's authenticator apps: device nonce -> what the device API and dispatch need (RedisKeys.devices). */
  devices?: Array<{ nonce: string; device: ProjectedDevice }>;
}

/** One device in `mfa:{tag}:devices` (JSON). */
export interface ProjectedDevice {
  state: 'active' | 'reregister';
  algorithm: 'ES256' | 'Ed25519';
  /** DER SubjectPublicKeyInfo, base64url. */
  publicKey: string;
  platform: 'ios' | 'android' | 'none';
  name: string;
  /** The push token sealed with SealContext.pushToken (dispatch opens it). */
  sealedPushToken?: string | undefined;
  activatedAt: string;
  /**
   * The device's id, when it is not `<the user's current tag>.<nonce>`: an app activated under an
   * earlier master key keeps the id it was given, which carries the user's tag of then (the device
   * API checks that a request names it; dispatch opens the push token with it). Absent otherwise.
   */
  id?: string | undefined;
}

/**
 * How long the step of a token no longer in the snapshot stays in `totpSteps`: while a code of it
 * could still be accepted, were the token back. A hardware token keeps its id when it is assigned
 * again (to the same user), and its new activatedStep is the step of the activation code, which
 * the drift window lets be up to two steps older than the last code accepted before (a step is
 * accepted up to one step after its own time): without the old step, that code would be good
 * again for a minute or two. Once a step is older than this, no code of it is accepted any more.
 * As the rebuild's STEP_HISTORY_MS (user-settings): three periods of a 60-second token, with room
 * for clocks apart between hosts.
 */
const STEP_KEPT_MS = 10 * 60_000;
/**
 * The periods TOTP tokens have (ms): apps 30 s, hardware tokens 30 or 60 s. A step whose token is
 * gone is read as a step of each: the one it is of puts it near now, the other at twice or half the
 * time since 1970.
 */
const TOTP_PERIODS_MS = [30_000, 60_000] as const;

// KEYS: user, totp, totpSteps, devices, the slot's projection marker, the slot's steps marker, the
// pending push, devicesUsed.
// ARGV: seq, data key ('' = none), layout, now (ms), then n profile field/value pairs count,
// pairs..., then token count, per token: id, spec, step, then device count, per device: nonce, JSON.
// Applies only when seq is newer than the stored one, or the same snapshot now brings the data key
// or the layout the stored one lacks (a rebuild to a new layout must reach users whose events did
// not change since the last one); keeps the larger of stored and new step.
// A token's step guard (totp:step) is only as good as the steps Redis still holds: after a loss of
// Redis, a code accepted just before it is refused again only once the rebuild has put the steps of
// the last minutes back. Until then (neither of the slot's markers is there: both are gone with
// its data, and come back only after that restore), a snapshot whose tokens are not all guarded
// already is not written at all (-2): written, it would make a code accepted before the loss good
// again. A user without tokens, or whose every token has its step, is written as usual.
// What the snapshot no longer holds goes with it: the steps of tokens it has not (deleted, reset,
// or pending again), unless the step is recent (STEP_KEPT_MS, read as a step of each period: a
// 30-second step counts twice as high as a 60-second one of the same time), and when each device
// it has not last answered (devicesUsed).
// Returns {1, nonce, id, ...} applied, with the devices it removed whose JSON names an `id` (their
// pointers under that id's tag go too: see pointMovedDevices), {0} the same snapshot again
// (nothing to change), {-1} an older one (ignored), {-2} not yet (the slot's steps are not restored).
/**
 * Lua, shared by the writes that drop devices (APPLY_SNAPSHOT, ERASE_USER): appends to `out` the
 * nonce and `id` of each device in the hash `key` whose JSON names an `id` (activated under an
 * earlier master key: its pointer under that id's tag goes too), but those `keep` holds.
 */
const MOVED_DEVICES = `
local function moved(key, keep, out)
  local was = redis.call('HGETALL', key)
  for n = 1, #was, 2 do
    if not keep[was[n]] then
      local ok, device = pcall(cjson.decode, was[n + 1])
      if ok and type(device) == 'table' and type(device.id) == 'string' then out[#out + 1] = was[n]; out[#out + 1] = device.id end
    end
  end
  return out
end
`;

const APPLY_SNAPSHOT = `${MOVED_DEVICES}
local stored = tonumber(redis.call('HGET', KEYS[1], 'seq') or '-1')
local seq = tonumber(ARGV[1])
if stored > seq then return {-1} end
if stored == seq and redis.call('HGET', KEYS[1], 'layout') == ARGV[3] and (ARGV[2] == '' or redis.call('HEXISTS', KEYS[1], 'dataKey') == 1) then return {0} end
local now = tonumber(ARGV[4])
local i = 5
local nfields = tonumber(ARGV[i]); i = i + 1
local fields = {'seq', ARGV[1], 'layout', ARGV[3]}
for _ = 1, nfields do
  fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = ARGV[i + 1]; i = i + 2
end
local ntokens = tonumber(ARGV[i]); i = i + 1
if ntokens > 0 and redis.call('EXISTS', KEYS[5], KEYS[6]) == 0 then
  for t = 0, ntokens - 1 do
    if redis.call('HEXISTS', KEYS[3], ARGV[i + 3 * t]) == 0 then return {-2} end
  end
end
-- The snapshot's token ids and device nonces.
local tokens, devices = {}, {}
for t = 0, ntokens - 1 do tokens[ARGV[i + 3 * t]] = true end
local d0 = i + 3 * ntokens
for d = 1, tonumber(ARGV[d0] or '0') do devices[ARGV[d0 + 2 * d - 1]] = true end
-- A reset (the user's methods begin anew: another validFrom) voids the challenges started before
-- it, a pending push included: its marker no longer holds the user's next push back (KEYS[7]).
local vf = redis.call('HGET', KEYS[1], '${UserFields.validFrom}')
if vf then
  for f = 5, #fields, 2 do
    if fields[f] == '${UserFields.validFrom}' and fields[f + 1] ~= vf then redis.call('DEL', KEYS[7]) end
  end
end
local steps = redis.call('HGETALL', KEYS[3])
for n = 1, #steps, 2 do
  if not tokens[steps[n]] then
    local step, recent = tonumber(steps[n + 1]), false
    for _, period in ipairs({${TOTP_PERIODS_MS.join(', ')}}) do
      if step and math.abs(step * period - now) <= ${STEP_KEPT_MS} then recent = true end
    end
    if not recent then redis.call('HDEL', KEYS[3], steps[n]) end
  end
end
local gone = moved(KEYS[4], devices, {1})
for _, nonce in ipairs(redis.call('HKEYS', KEYS[8])) do
  if not devices[nonce] then redis.call('HDEL', KEYS[8], nonce) end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('HSET', KEYS[1], unpack(fields))
for _ = 1, ntokens do
  local id, spec, step = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]); i = i + 3
  redis.call('HSET', KEYS[2], id, spec)
  local current = tonumber(redis.call('HGET', KEYS[3], id) or '-1')
  if step > current then redis.call('HSET', KEYS[3], id, step) end
end
local ndevices = tonumber(ARGV[i] or '0'); i = i + 1
for _ = 1, ndevices do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]); i = i + 2
end
return gone
`;

/** The `{code, nonce, id, nonce, id, …}` a script that drops devices answers: its code, and the devices with an `id` it dropped. */
function droppedDevices(reply: [number, ...string[]]): { code: number; dropped: Array<{ nonce: string; device: Pick<ProjectedDevice, 'id'> }> } {
  const [code, ...flat] = reply;
  const dropped: Array<{ nonce: string; device: Pick<ProjectedDevice, 'id'> }> = [];
  for (let n = 0; n + 1 < flat.length; n += 2) dropped.push({ nonce: flat[n]!, device: { id: flat[n + 1]! } });
  return { code, dropped };
}

/** How often a write that waits for the slot's steps (apply's `waitForStepsMs`) tries again. */
const STEPS_POLL_MS = 100;

// KEYS: user, then the user's other keys that go with it (ERASED_WITH_USER). ARGV: seq of the
// erasure. The user hash keeps only the sequence: a snapshot from before the erasure can never
// bring the user back, one from a later registration can.
/**
 * What an erasure deletes besides the user's hash: the tokens, their replay guard and the devices,
 * and what the user's sign-ins left that would otherwise pass to a user registered later under the
 * same id (a recycled UPN): remembered browsers and the last MFA (each would let that user skip
 * MFA), when each device last answered, the methods that failed lately, and the push waiting for
 * an answer (its challenge is void; its marker would hold that user's first push back). The
 * brute-force counters, a block and a push suspension stay: they protect the account, not the person.
 */
const ERASED_WITH_USER = [RedisKeys.totp, RedisKeys.totpSteps, RedisKeys.devices, RedisKeys.remembered, RedisKeys.lastMfa, RedisKeys.devicesUsed, RedisKeys.failedMethods, RedisKeys.pendingPush] as const;
/** Where the devices are among ERASED_WITH_USER (ERASE_USER's KEYS: the user, then those). */
const ERASED_WITH_USER_DEVICES = ERASED_WITH_USER.indexOf(RedisKeys.devices);

// KEYS: the user's block, the sequence last projected into it. ARGV: the event's stream sequence,
// the block's end in ms ('' = unblocked), how long the sequence is kept (ms). An event older than
// the one projected last changes nothing: the consumer's instances and its retries after a
// back-off do not apply a user's events in stream order.
const PROJECT_BLOCK = `
if tonumber(ARGV[1]) <= tonumber(redis.call('GET', KEYS[2]) or '0') then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[2]) end
return 1
`;
/** How long the sequence of a user's last projected block or unblock is kept: far longer than any redelivery waits. */
const BLOCK_SEQ_TTL_MS = 7 * 24 * 3600_000;

// Returns {1, nonce, id, ...} erased, with its devices activated under an earlier master key (their
// pointers go too), or {0}: a later snapshot is there.
const ERASE_USER = `${MOVED_DEVICES}
local stored = tonumber(redis.call('HGET', KEYS[1], 'seq') or '-1')
local seq = tonumber(ARGV[1])
if stored > seq then return {0} end
local gone = moved(KEYS[${2 + ERASED_WITH_USER_DEVICES}], {}, {1})
redis.call('DEL', unpack(KEYS))
redis.call('HSET', KEYS[1], 'seq', ARGV[1])
return gone
`;

// KEYS: user. ARGV: seconds to keep it. A user the event log holds nothing of, looked up while the
// slot's marker is missing: the hash holds `seq` 0 and nothing else (like a tombstone, which any
// snapshot or erasure replaces, taking the expiry with it). Never over a hash that is there.
const MARK_UNREGISTERED = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'seq', '0')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
`;

/**
 * How long the mark of a user the log holds nothing of stays (markUnregistered). It answers the
 * retries of a sign-in during a rebuild; a later one is looked up again.
 */
export const UNREGISTERED_MARK_SECONDS = 120;

// KEYS: totpSteps. ARGV: tokenId, step. Keeps the larger of stored and given step.
const RESTORE_STEP = `
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return 1 end
return 0
`;

/**
 * A user's brute-force counters as the last wrong code left them (see ChallengeCodeRejected's
 * guard), put back after a loss of Redis. Never lowers what is there (live traffic may have
 * counted more since). KEYS: failures (window), consecutive. ARGV: failures, resetAt ms,
 * consecutive, now ms.
 */
const RESTORE_GUARD = `
local applied = 0
local ttl = tonumber(ARGV[2]) - tonumber(ARGV[4])
if tonumber(ARGV[1]) > 0 and ttl > 0 and tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl); applied = 1
end
if tonumber(ARGV[3]) > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], ARGV[3]); applied = 1
end
return applied
`;

/** Slot markers written at once: enough to fill pipelines, not so many that Redis stalls. */
const MARKERS_IN_FLIGHT = 1_024;

/**
 * Writes user snapshots into Redis for auth-challenge. Idempotent and monotonic (a snapshot older
 * than the stored one is ignored), so the synchronous write after a command and the projector
 * consumer replaying the same events can race harmlessly. TOTP secrets are stored masked with a
 * keystream from a per-user key that only the services hold (see @mfa/crypto).
 */
export class UserProjectionWriter {
  private readonly index: UserIndex;

  constructor(
    private readonly redis: RedisClient,
    private readonly keyring: Keyring,
  ) {
    this.index = new UserIndex(redis, keyring);
    redis.defineCommand('mfaApplyUserSnapshot', { numberOfKeys: 8, lua: APPLY_SNAPSHOT });
    redis.defineCommand('mfaEraseUser', { numberOfKeys: 1 + ERASED_WITH_USER.length, lua: ERASE_USER });
    redis.defineCommand('mfaRestoreTotpStep', { numberOfKeys: 1, lua: RESTORE_STEP });
    redis.defineCommand('mfaMarkUnregistered', { numberOfKeys: 1, lua: MARK_UNREGISTERED });
    redis.defineCommand('mfaRestoreFailureGuard', { numberOfKeys: 2, lua: RESTORE_GUARD });
    redis.defineCommand('mfaProjectBlock', { numberOfKeys: 2, lua: PROJECT_BLOCK });
  }

  /** The user's hash tag under this writer's keyring. */
  tagOf(tenantId: string, userId: string): string {
    return userTag(this.keyring, tenantId, userId);
  }

  /** Whether this Redis holds the complete user projection (the global marker of the current layout). */
  async isComplete(): Promise<boolean> {
    return (await this.redis.exists(RedisKeys.userProjectionMarker)) === 1;
  }

  /**
   * Declares the projection complete: every slot's marker, then the global one. Only after a full
   * rebuild (or on a Redis that never held users): a user missing from a slot with its marker is
   * then a user that does not exist.
   */
  async markComplete(): Promise<void> {
    await this.setSlotKeys(slotMarkerKey);
    await this.redis.set(RedisKeys.userProjectionMarker, new Date().toISOString());
  }

  /**
   * Declares the TOTP steps accepted before a loss of Redis (and the blocks and lockout counters)
   * restored: every slot's steps marker. Only after a rebuild restored them (or on a Redis that
   * never held users): from then on a snapshot may make a token usable again (see APPLY_SNAPSHOT).
   */
  async markStepsRestored(): Promise<void> {
    await this.setSlotKeys(slotStepsMarkerKey);
  }

  private async setSlotKeys(keyOf: (slot: number) => string): Promise<void> {
    for (let slot = 0; slot < HASH_SLOTS; slot += MARKERS_IN_FLIGHT) {
      const batch: Promise<unknown>[] = [];
      for (let s = slot; s < Math.min(HASH_SLOTS, slot + MARKERS_IN_FLIGHT); s++) batch.push(this.redis.set(keyOf(s), '1'));
      await Promise.all(batch);
    }
  }

  /** A TOTP time step accepted for the token (from a ChallengeApproved event): never accepted again. */
  async restoreTotpStep(tenantId: string, userId: string, tokenId: string, step: number): Promise<boolean> {
    const tag = userTag(this.keyring, tenantId, userId);
    const applied = await (
      this.redis as unknown as { mfaRestoreTotpStep: (...a: Array<string | number>) => Promise<number> }
    ).mfaRestoreTotpStep(RedisKeys.totpSteps(tag), tokenId, step);
    return applied === 1;
  }

  /**
   * The user is blocked until `untilMs` (UserBlocked, at MFA_FRAUD sequence `seq`): the key expires
   * at that time by itself. Only if no later block or unblock was projected (false then).
   */
  async block(tenantId: string, userId: string, untilMs: number, seq: number): Promise<boolean> {
    return this.projectBlock(userTag(this.keyring, tenantId, userId), seq, String(untilMs));
  }

  /** The user's block is lifted (UserUnblocked, at sequence `seq`), or was never there; as block(). */
  async unblock(tenantId: string, userId: string, seq: number): Promise<boolean> {
    return this.projectBlock(userTag(this.keyring, tenantId, userId), seq, '');
  }

  private async projectBlock(tag: string, seq: number, until: string): Promise<boolean> {
    const script = (this.redis as unknown as { mfaProjectBlock: (...a: Array<string | number>) => Promise<number> }).mfaProjectBlock;
    return (await script.call(this.redis, RedisKeys.blocked(tag), RedisKeys.blockedSeq(tag), seq, until, BLOCK_SEQ_TTL_MS)) === 1;
  }

  /** Lifts the user's lockouts: the window counter and the count of wrong codes in a row (one DEL, one slot). */
  async clearLockouts(tenantId: string, userId: string): Promise<number> {
    const tag = userTag(this.keyring, tenantId, userId);
    return this.redis.del(RedisKeys.failures(tag), RedisKeys.consecutiveFailures(tag));
  }

  /** Whether the user has lockout counters (an unblock has something to lift). */
  async hasLockouts(tenantId: string, userId: string): Promise<boolean> {
    const tag = userTag(this.keyring, tenantId, userId);
    return (await this.redis.exists(RedisKeys.failures(tag), RedisKeys.consecutiveFailures(tag))) > 0;
  }

  /** Restores the user's failure counters as a wrong code recorded them (never lowers them); true if changed. */
  async restoreFailureGuard(
    tenantId: string,
    userId: string,
    guard: { failures: number; resetAt: number; consecutive: number },
    now: Date,
  ): Promise<boolean> {
    const tag = userTag(this.keyring, tenantId, userId);
    const applied = await (
      this.redis as unknown as { mfaRestoreFailureGuard: (...a: Array<string | number>) => Promise<number> }
    ).mfaRestoreFailureGuard(RedisKeys.failures(tag), RedisKeys.consecutiveFailures(tag), guard.failures, guard.resetAt, guard.consecutive, now.getTime());
    return applied === 1;
  }

  /**
   * Where each user's projection stands, for a projector deciding whom to rebuild: the stream
   * sequence it was written at (-1: none), and whether it is whole at that sequence, as `apply`
   * leaves it: the data key there, in this layout, and the user's terms in the search index from
   * that snapshot or a later one (an erased user's tombstone, a projection of an older layout, or
   * an index a write did not reach, is not). One pipelined round trip for the lot.
   */
  async standing(users: ReadonlyArray<{ tenantId: string; userId: string }>): Promise<Array<{ seq: number; whole: boolean }>> {
    return Promise.all(
      users.map(async ({ tenantId, userId }) => {
        const tag = userTag(this.keyring, tenantId, userId);
        const [[seq, dataKey, layout], indexed] = await Promise.all([
          this.redis.hmget(RedisKeys.user(tag), UserFields.seq, UserFields.dataKey, UserFields.layout),
          this.index.entry(tenantId, userId),
        ]);
        const at = seq == null ? -1 : Number(seq);
        const whole = dataKey != null && layout === String(PROJECTION_LAYOUT) && indexed?.terms === true && indexed.seq >= at;
        return { seq: at, whole };
      }),
    );
  }

  /**
   * Writes the snapshot unless a newer one (or the same one, in this layout) is there; true if
   * written. Until a rebuild has restored the accepted TOTP steps of the user's slot (a Redis that
   * lost its data), a snapshot with a token not guarded yet is not written: this waits up to
   * `waitForStepsMs` for the restore (a command answering its caller), then throws `unavailable`
   * (transient: a consumer tries the event again later; the rebuild writes the user anyway).
   */
  async apply(snapshot: UserSnapshot, options: { waitForStepsMs?: number } = {}): Promise<boolean> {
    const tag = userTag(this.keyring, snapshot.tenantId, snapshot.userId);
    const userKey = projectionUserKey(this.keyring, tag);
    const profile: Array<[string, string | undefined]> = [
      [UserFields.tenantId, snapshot.tenantId],
      [UserFields.userId, snapshot.userId],
      [UserFields.displayName, snapshot.displayName],
      [UserFields.email, snapshot.email],
      [UserFields.phoneNumber, snapshot.phoneNumber],
      [UserFields.language, snapshot.language],
      [UserFields.methods, snapshot.methods.join(',')],
      [UserFields.defaultMethod, snapshot.defaultMethod],
      [UserFields.dataKey, snapshot.dataKey],
      [UserFields.challengePii, snapshot.challengePii],
      [UserFields.appPassword, snapshot.appPasswordRequired ? '1' : undefined],
      [UserFields.phoneCountry, snapshot.phoneCountry],
      [UserFields.validFrom, snapshot.validFrom === undefined ? undefined : String(snapshot.validFrom)],
    ];
    const present = profile.filter((p): p is [string, string] => p[1] !== undefined && p[1] !== '');
    const args: Array<string | number> = [snapshot.seq, snapshot.dataKey ?? '', PROJECTION_LAYOUT, Date.now(), present.length];
    for (const [k, v] of present) args.push(k, v);
    args.push(snapshot.totpTokens.length);
    for (const t of snapshot.totpTokens) {
      const nonce = randomBytes(12);
      const masked = maskSecret(userKey, nonce, t.secret);
      // SHA-1 tokens keep the original spec; SHA-256 ones add a suffix that older readers skip.
      const hash = t.algorithm === 'SHA256' ? ':sha256' : '';
      args.push(t.tokenId, `${t.digits}:${t.period}:${nonce.toString('hex')}:${masked.toString('hex')}${hash}`, t.activatedStep);
    }
    const devices = snapshot.devices ?? [];
    args.push(devices.length);
    for (const d of devices) args.push(d.nonce, JSON.stringify(d.device));
    const keys = [
      RedisKeys.user(tag),
      RedisKeys.totp(tag),
      RedisKeys.totpSteps(tag),
      RedisKeys.devices(tag),
      RedisKeys.slotMarker(tag),
      RedisKeys.slotStepsMarker(tag),
      RedisKeys.pendingPush(tag),
      RedisKeys.devicesUsed(tag),
    ];
    /** The devices the write removed whose JSON names an `id` (none unless applied). */
    let removed: Array<{ nonce: string; device: Pick<ProjectedDevice, 'id'> }> = [];
    const run = async (): Promise<number> => {
      const { code, dropped } = droppedDevices(
        await (this.redis as unknown as { mfaApplyUserSnapshot: (...a: Array<string | number>) => Promise<[number, ...string[]]> }).mfaApplyUserSnapshot(...keys, ...args),
      );
      removed = dropped;
      return code;
    };
    let applied = await run();
    // The slot lost its markers while the projection's own (global) one still stands, as when one
    // node of a cluster came back empty: nothing would start the rebuild that writes them back
    // until a sign-in there asked for it. Dropping the global marker starts it now (within a second).
    if (applied === -2) await this.redis.del(RedisKeys.userProjectionMarker);
    for (const until = Date.now() + (options.waitForStepsMs ?? 0); applied === -2 && Date.now() < until; applied = await run()) {
      await new Promise((resolve) => setTimeout(resolve, STEPS_POLL_MS));
    }
    if (applied === -2) throw unavailable('Redis is being rebuilt: the user is projected once the accepted TOTP steps are restored');
    // The search index follows the current snapshot (also when it was already there: a rebuild
    // into a Redis that has the projection but not the index fills it). It is another slot, so
    // another writer may get there first: the index keeps the terms of the newest sequence.
    if (applied >= 0) await this.index.put(snapshot.tenantId, snapshot.userId, snapshot, snapshot.seq);
    // Apps activated under an earlier master key are found by the tag their id carries: a pointer
    // there, in that tag's slot (another command). Also when the snapshot was already there: a
    // rebuild writes them again. Not for an older snapshot: a device deleted since would get one.
    if (applied >= 0) await this.pointMovedDevices(tag, devices, 'set');
    // The pointers of such apps the snapshot no longer has (deleted, reset): only this write saw
    // them go (a pointer left would find nothing, but stay in Redis).
    if (applied === 1) await this.pointMovedDevices(tag, removed, 'remove');
    return applied === 1;
  }

  /**
   * Writes (or removes) the pointers of the user's devices activated under earlier master keys:
   * `devicesMoved(old tag)` nonce -> current tag. One command per earlier tag (each its own slot).
   */
  private async pointMovedDevices(tag: string, devices: ReadonlyArray<{ nonce: string; device: Pick<ProjectedDevice, 'id'> }>, how: 'set' | 'remove'): Promise<void> {
    const moved = new Map<string, string[]>();
    for (const { nonce, device } of devices) {
      const from = device.id === undefined ? undefined : parseDeviceId(device.id);
      if (!from || from.tag === tag || from.nonce !== nonce) continue;
      moved.set(from.tag, [...(moved.get(from.tag) ?? []), nonce]);
    }
    await Promise.all(
      [...moved].map(([from, nonces]) =>
        how === 'set' ? this.redis.hset(RedisKeys.devicesMoved(from), Object.fromEntries(nonces.map((n) => [n, tag]))) : this.redis.hdel(RedisKeys.devicesMoved(from), ...nonces),
      ),
    );
  }

  /**
   * The event log holds nothing of the user (no event on the user's subject): the user hash says
   * so, with `seq` 0, for UNREGISTERED_MARK_SECONDS, unless it holds anything already. While its
   * slot's marker is missing (Redis being rebuilt), the start script answers
   * `registration_required` for such a user instead of `unavailable`: a user it knows nothing of
   * could be a registered one not rebuilt yet, a marked one is known not to be. True if written.
   */
  async markUnregistered(tenantId: string, userId: string): Promise<boolean> {
    const tag = userTag(this.keyring, tenantId, userId);
    const marked = await (this.redis as unknown as { mfaMarkUnregistered: (...a: Array<string | number>) => Promise<number> }).mfaMarkUnregistered(
      RedisKeys.user(tag),
      UNREGISTERED_MARK_SECONDS,
    );
    return marked === 1;
  }

  /**
   * Erases the user's projection (users.delete): profile, methods, TOTP tokens and their steps
   * go; the user hash keeps only `seq`, the stream sequence of the erasure, so a snapshot taken
   * before it cannot resurrect the user. False when a later snapshot is already there.
   */
  async erase(tenantId: string, userId: string, seq: number): Promise<boolean> {
    const tag = userTag(this.keyring, tenantId, userId);
    const { code: erased, dropped } = droppedDevices(
      await (this.redis as unknown as { mfaEraseUser: (...a: Array<string | number>) => Promise<[number, ...string[]]> }).mfaEraseUser(
        RedisKeys.user(tag),
        ...ERASED_WITH_USER.map((keyOf) => keyOf(tag)),
        seq,
      ),
    );
    // An entry of the erasure's sequence: a late write of an earlier snapshot cannot put the user back.
    if (erased === 1) await this.index.put(tenantId, userId, undefined, seq);
    // The pointers to the user's devices activated under earlier master keys go with them (a
    // pointer to devices no longer there finds nothing; this keeps Redis from holding it).
    if (erased === 1) await this.pointMovedDevices(tag, dropped, 'remove');
    return erased === 1;
  }
}
