import calculateSlot from 'cluster-key-slot';

/**
 * The layout of the user projection this code writes (see RedisKeys.userProjectionMarker). Each
 * user hash holds it (UserFields.layout): a snapshot is written again over the same snapshot of
 * another layout, so a rebuild to a new layout reaches users whose events did not change.
 */
export const PROJECTION_LAYOUT = 9;

/**
 * Redis layout. Every key of one user carries the user's hash tag `{tag}` (a keyed hash of
 * tenant and user, see @mfa/crypto userTag), so on Redis Cluster they share a slot and one Lua
 * script can read and change them together. A challenge id embeds the tag, which is how any
 * instance finds the slot of a challenge from its id alone.
 *
 *   mfa:{tag}:user         HASH  projection of the user aggregate (written by user-settings); only
 *                                `seq` once the user is erased (a tombstone older snapshots cannot pass),
 *                                or `seq` 0 for a while, when the event log holds nothing of the user
 *                                (looked up during a rebuild: markUnregistered)
 *   mfa:{tag}:totp         HASH  tokenId -> "digits:period:nonceHex:maskedSecretHex" (active tokens)
 *   mfa:{tag}:totp:step    HASH  tokenId -> last accepted RFC 6238 time step (replay guard)
 *   mfa:{tag}:ch:<nonce>   HASH  one challenge (written by auth-challenge), expires by TTL; dispatch adds
 *                                `delivery` (failed) and, for an SMS no provider took, `smsSeq` (where its start is);
 *                                `vf` the user's validFrom at its start (a reset or erasure since voids it); fraud
 *                                adds `fraudAlert` (the MFA_FRAUD sequence of the alert that reported it),
 *                                `fraudPending` (denied by a report whose alert may not be recorded yet),
 *                                `fraudAfter` (its report's alert is recorded after this MFA_FRAUD sequence) and
 *                                `fraudRecorded` (its ChallengeFraudReported is published)
 *   mfa:{tag}:otp:sends    ZSET  SMS and voice challenges of the user in the sliding window (challenge id, or
 *                                `<challenge id>:r<n>` for a resend -> ms; throttling)
 *   mfa:{tag}:sms:send:<nonce>[:r<n>] STRING dispatch's claim on one challenge's SMS (or on its resend n):
 *                          `sending` during a provider call, then `sent <provider> <message id> <seq>`, seq
 *                          being where the challenge's ChallengeStarted is in MFA_CHALLENGES (written by dispatch;
 *                          the message id, which may hold spaces, is everything between provider and seq)
 *   mfa:{tag}:push:send:<nonce>:<device nonce> STRING dispatch's claim on one challenge's push to one device:
 *                          `sending` during a provider call, then `sent <provider> <message id> -` (written by dispatch)
 *   mfa:{tag}:fails        STRING wrong codes in the current window, across challenges (lockout)
 *   mfa:{tag}:fails:consecutive STRING wrong codes since the last success, across challenges and
 *                          windows; no TTL: at the cap only an admin unlock (DEL of this key and
 *                          `fails`) lets the user in again (NIST SP 800-63B)
 *   mfa:{tag}:failed       HASH  method -> until ms: a method that failed the user lately (dispatch); a start without
 *                          a method takes another one meanwhile, and challenge.status names the others
 *   mfa:{tag}:remember     HASH  rememberId -> `<until ms>:<created ms>`: the user's remembered browsers (rememberMfa;
 *                          auth-challenge writes on an approval that asked for it, user-settings revokes)
 *   mfa:{tag}:lastmfa      STRING when the user last completed MFA (ms), for tenants that remember (rememberMfa.days)
 *   mfa:{tag}:throttle:phone STRING the user's phone number took its share of SMS and voice sends across
 *                          users until <ms> (dispatch's copy into every slot whose user has that number);
 *                          expires then: an SMS or voice start answers rate_limited meanwhile
 *   mfa:{phone:<tenant>:<hash>}:sends ZSET sends to one phone number of a tenant in the sliding window
 *                          (challenge id -> ms; dispatch), the number as a keyed hash (phoneTag)
 *   mfa:{tag}:call:<nonce> HASH one voice challenge's call (dispatch): tenant, user, language, PIN mode, fraud
 *                          code, CallSid, each prompt's answer (once), the outcome (once)
 *   mfa:{prefix:<tenant or *>:<hash>}:sends ZSET sends to one block of 10,000 numbers (the number without its last
 *                          4 digits), per tenant and across tenants (dispatch; SMS pumping)
 *   mfa:{sms:<provider>:<message id>}:route STRING `{tenantId, challengeId}` of an SMS whose receipts
 *                          name only the provider's message id (SMPP), one key per message (dispatch)
 *   mfa:{tag}:blocked      STRING the user is blocked until <ms> (fraud's projection of UserBlocked);
 *                          expires at that time, deleted by an unblock: start answers denied
 *   mfa:{tag}:activate:<tokenId> STRING wrong activation codes of a pending token (user-settings)
 *   mfa:{tag}:fraud:reports ZSET the user's fraud alerts of the last hour (alert id -> ms; fraud.report's limit)
 *   mfa:{fraud:block-ends:<n>} ZSET one of 16 shards: `<tenant>.<user>` (base64url) -> when their block ends,
 *                          and a member marking the set complete (fraud's automatic-unblock pass)
 *   mfa:{users:<tenant>}:index ZSET users.list's search terms of one tenant, `<kind>\0<term>\0<userId>`
 *   mfa:{users:<tenant>}:terms HASH userId -> the sequence of the snapshot the user's terms come from, then
 *                          those terms (replaced by a newer snapshot, never by an older one); an erased
 *                          user's: the erasure's sequence alone (so a late write cannot put them back)
 *   mfa:{s}:outbox         HASH  one per hash slot: "<challengeId>:<decision>[:<attempt>]" -> the
 *                          decision's record (request context and script reply) until JetStream
 *                          acknowledged its event; the relay publishes what stays (auth-challenge)
 *   mfa:{s}:projection     STRING one per hash slot (`s` a short string of that slot): set once the
 *                          projection of every user of the slot is in this Redis (complete). A user
 *                          missing while it is missing may exist: auth-challenge answers
 *                          `unavailable` instead of `registration_required`.
 *   mfa:{s}:steps          STRING one per hash slot: a rebuild has put back the TOTP steps accepted
 *                          before a loss of Redis (and the blocks and lockout counters) for the
 *                          slot. Gone with the slot's data: until a rebuild writes it again (or the
 *                          slot's projection marker), a snapshot that would make a TOTP token
 *                          usable without its replay guard is not written (see the apply script).
 */
export const RedisKeys = {
  /**
   * Set once the user projection exists in this Redis. Missing at boot means Redis lost its data
   * (or is new), or holds an older layout: user-settings then replays the whole event log into it.
   * The version suffix is that layout (v2: snapshots carry the user's wrapped data key; v3: with
   * users.list's search index, which a first boot of v3 fills by replaying the log; v4: with the
   * appPassword field of users who have or once used an app password; v5: the phone's country;
   * v6: each user hash names its layout (UserFields.layout) and each index entry its snapshot's
   * sequence, so a rebuild to a new layout rewrites users whose events did not change, and the
   * slots' steps markers; v7: when the user's current methods began, UserFields.validFrom).
   */
  userProjectionMarker: `mfa:projection:users:v${PROJECTION_LAYOUT}`,
  user: (tag: string) => `mfa:{${tag}}:user`,
  totp: (tag: string) => `mfa:{${tag}}:totp`,
  totpSteps: (tag: string) => `mfa:{${tag}}:totp:step`,
  challenge: (tag: string, nonce: string) => `mfa:{${tag}}:ch:${nonce}`,
  /** The user's SMS and voice challenges in the sliding send window (a sorted set by time). */
  smsSends: (tag: string) => `mfa:{${tag}}:otp:sends`,
  /** dispatch's claim on sending the SMS of one challenge, or (`resend` ≥ 1) of its resend (see dispatch's SendGuard). */
  smsSend: (tag: string, nonce: string, resend?: number) => `mfa:{${tag}}:sms:send:${nonce}${resend ? `:r${resend}` : ''}`,
  /** dispatch's claim on pushing one challenge to one of the user's devices (see dispatch's SendGuard). */
  pushSend: (tag: string, nonce: string, deviceNonce: string) => `mfa:{${tag}}:push:send:${nonce}:${deviceNonce}`,
  failures: (tag: string) => `mfa:{${tag}}:fails`,
  consecutiveFailures: (tag: string) => `mfa:{${tag}}:fails:consecutive`,
  /** Methods that failed the user lately (an SMS no provider delivered): method -> until ms. */
  failedMethods: (tag: string) => `mfa:{${tag}}:failed`,
  /** Wrong app passwords of the user in the last 15 minutes (apppasswords.verify's rate limit). */
  appPasswordFailures: (tag: string) => `mfa:{${tag}}:apppw:fails`,
  /** The user's remembered browsers (rememberMfa): rememberId -> `<until ms>:<created ms>`. */
  remembered: (tag: string) => `mfa:{${tag}}:remember`,
  /** When the user last completed MFA (ms): legacy clients within rememberMfa.days need none. */
  lastMfa: (tag: string) => `mfa:{${tag}}:lastmfa`,
  /** The user's phone number is throttled across users until `<ms>` (written by dispatch, see PhoneThrottle). */
  phoneThrottle: (tag: string) => `mfa:{${tag}}:throttle:phone`,
  /** Sends to one phone number of a tenant in the sliding window (dispatch); `phone` is phoneTag's keyed hash. */
  phoneSends: (tenantId: string, phone: string) => `mfa:{phone:${Buffer.from(tenantId, 'utf8').toString('base64url')}:${phone}}:sends`,
  /** The call of one voice challenge (dispatch): what its webhooks need (extension among them), the CallSid, each prompt's answer, the outcome, `pu` for a placement Twilio never confirmed; until 10 min past the challenge's expiry, never written once gone (CallStore). */
  call: (tag: string, nonce: string) => `mfa:{${tag}}:call:${nonce}`,
  /** Sends to one block of 10,000 numbers (dispatch), per tenant or ('*') across tenants; `block` is phoneTag's keyed hash of it. */
  prefixSends: (tenantId: string, block: string) => `mfa:{prefix:${tenantId === '*' ? '*' : Buffer.from(tenantId, 'utf8').toString('base64url')}:${block}}:sends`,
  /** The user's block (written by fraud): `<until ms>`, expiring at the block's end. */
  /** Which challenge an SMS a provider accepted belongs to, by the provider's message id (base64url: SMSCs choose its characters). */
  smsReceiptRoute: (provider: string, messageId: string) => `mfa:{sms:${provider}:${Buffer.from(messageId, 'utf8').toString('base64url')}}:route`,
  blocked: (tag: string) => `mfa:{${tag}}:blocked`,
  /** The MFA_FRAUD stream sequence of the block or unblock last projected into `blocked` (fraud): an older one that arrives later changes nothing. */
  blockedSeq: (tag: string) => `mfa:{${tag}}:blocked-seq`,
  /**
   * The user's authenticator apps (user-settings): device nonce -> JSON {state (active or reregister),
   * algorithm, publicKey, platform, name, sealedPushToken?, activatedAt}. dispatch reads the push
   * tokens, the device API the keys.
   */
  devices: (tag: string) => `mfa:{${tag}}:devices`,
  /**
   * The user's authenticator apps activated under an earlier master key, found by the tag their id
   * carries (user-settings): device nonce -> the user's current tag, where `devices` holds the
   * device. An app keeps the id it was given at activation (its push token is sealed bound to it):
   * after a rotation changed the user's tag, the device API follows this to the device. A pointer
   * whose device is gone finds nothing there, so none is ever trusted on its own.
   */
  devicesMoved: (tag: string) => `mfa:{${tag}}:devices:moved`,
  /** Nonces of signed device requests seen in the last 150 s: twice the clock skew allowed, and 30 s (the device API's replay guard). */
  deviceNonce: (tag: string, deviceNonce: string, nonce: string) => `mfa:{${tag}}:dn:${deviceNonce}:${nonce}`,
  /** An activation code's pending enrolment (user-settings): {tenantId, userId, issuedAtMs}, for the code's lifetime; taken once. */
  activation: (codeHash: string) => `mfa:{act:${codeHash}}:activation`,
  /**
   * The user has push activation codes that may still be good: the last one's issue time (ms),
   * expiring with it (user-settings; a reset with nothing else to clear is recorded all the same).
   */
  activationIssued: (tag: string) => `mfa:{${tag}}:push:codes`,
  /** The user's pending push challenge (one at a time): `<challenge id>|<expiry ms>`, kept PUSH_WINDOW_SECONDS past its expiry (an unanswered one counts as ignored). */
  pendingPush: (tag: string) => `mfa:{${tag}}:push:pending`,
  /** The user's push challenges in the sliding window (push rate limit): challenge id -> ms. */
  pushStarts: (tag: string) => `mfa:{${tag}}:push:starts`,
  /** Push denials and ignored pushes of the user in the window: challenge id -> ms (fatigue). */
  pushRefusals: (tag: string) => `mfa:{${tag}}:push:refusals`,
  /** When each of the user's devices last answered a push: device nonce -> ms (auth-challenge). */
  devicesUsed: (tag: string) => `mfa:{${tag}}:devices:used`,
  /** Push is suspended for the user until <ms> (too many denials or ignored pushes: MFA fatigue). */
  pushSuspended: (tag: string) => `mfa:{${tag}}:push:suspended`,
  activationFailures: (tag: string, tokenId: string) => `mfa:{${tag}}:activate:${tokenId}`,
  /** users.list's search terms of one tenant (see UserIndex), and each user's current terms. */
  userIndex: (tenantId: string) => `mfa:{users:${Buffer.from(tenantId, 'utf8').toString('base64url')}}:index`,
  userIndexTerms: (tenantId: string) => `mfa:{users:${Buffer.from(tenantId, 'utf8').toString('base64url')}}:terms`,
  /** The completeness marker of the user's hash slot (see the layout above). */
  slotMarker: (tag: string) => slotMarkerKey(calculateSlot(tag)),
  /** The steps marker of the user's hash slot: the accepted TOTP steps are back after a loss (see the layout above). */
  slotStepsMarker: (tag: string) => slotStepsMarkerKey(calculateSlot(tag)),
  /** The outbox of the user's hash slot: decisions whose event JetStream has not acknowledged yet. */
  slotOutbox: (tag: string) => slotOutboxKey(calculateSlot(tag)),
} as const;

/**
 * Core NATS subject (services only, deploy/nats) on which auth-challenge says that it answered
 * `unavailable` for a user missing from a slot whose projection is not known complete. Body:
 * `{"tenantId","userId"}`. user-settings projects that user at once, ahead of the rebuild.
 */
export const PROJECTION_MISSING_SUBJECT = 'mfa.int.projection.missing';

/** The lease of the user-settings instance rebuilding the projection (one at a time; see RedisLease). */
export const PROJECTION_REBUILD_LEASE_KEY = 'mfa:projection:rebuild';

/** Set in Redis once a rebuild has restored the accepted TOTP steps: single users may be projected from then on. */
export const STEPS_RESTORED_KEY = 'mfa:projection:steps-restored';

/** Redis Cluster's hash slots. */
export const HASH_SLOTS = 16_384;

/** The hash slot of a user's keys (CRC16 of the tag, as Redis Cluster computes it). */
export function hashSlotOf(tag: string): number {
  return calculateSlot(tag);
}

/** The hash slot of a whole key (its `{tag}` when it has one), as Redis Cluster routes it. */
export function keySlotOf(key: string): number {
  return calculateSlot(key);
}

let slotTags: string[] | undefined;

/**
 * For each hash slot, the shortest base-36 counter string that hashes to it: the hash tag of the
 * slot's marker, so that a script of any user of the slot can read it (same slot, as Redis Cluster
 * requires). Built once, on first use (about 170,000 CRC16 of short strings).
 */
function slotTagOf(slot: number): string {
  if (!slotTags) {
    const table = new Array<string>(HASH_SLOTS);
    for (let i = 0, found = 0; found < HASH_SLOTS; i++) {
      const candidate = i.toString(36);
      const s = calculateSlot(candidate);
      if (table[s] === undefined) {
        table[s] = candidate;
        found++;
      }
    }
    slotTags = table;
  }
  return slotTags[slot]!;
}

/** The marker key of one hash slot. */
export function slotMarkerKey(slot: number): string {
  return `mfa:{${slotTagOf(slot)}}:projection`;
}

/** The steps marker of one hash slot (see the layout above). */
export function slotStepsMarkerKey(slot: number): string {
  return `mfa:{${slotTagOf(slot)}}:steps`;
}

/**
 * The outbox of one hash slot: HASH field -> record, one field per challenge decision whose event
 * JetStream has not acknowledged yet (written by the script that takes the decision, removed
 * once the event is stored; see auth-challenge's outbox).
 */
export function slotOutboxKey(slot: number): string {
  return `mfa:{${slotTagOf(slot)}}:outbox`;
}

/** Fields of `mfa:{tag}:user`. */
export const UserFields = {
  seq: 'seq',
  tenantId: 'tenantId',
  userId: 'userId',
  displayName: 'displayName',
  email: 'email',
  phoneNumber: 'phoneNumber',
  language: 'language',
  /** Comma-separated methods the user can use now, e.g. "sms,totp". */
  methods: 'methods',
  defaultMethod: 'defaultMethod',
  /**
   * The user's data key as `<gen>:<wrapped>`, still sealed with the master keyring (@mfa/crypto
   * data-keys.ts): auth-challenge unwraps it to seal the personal data of challenge events.
   */
  dataKey: 'dataKey',
  /** Display name, e-mail and phone sealed under the data key for challenge events, ready to copy. */
  challengePii: 'challengePii',
  /** '1': only an app password signs the user's legacy clients in (appPasswords); absent otherwise. */
  appPassword: 'appPassword',
  /** The country of the user's phone number (ISO 3166-1 alpha-2; absent when none or unknown): the tenant's SMS country rules. */
  phoneCountry: 'phoneCountry',
  /**
   * When the user's current methods began (ms): their registration as a new user, or their last
   * reset (users.reset). A challenge keeps the value it started with (its `vf` field) and is void
   * once it differs: the user was reset, or erased (a tombstone has none), since it started.
   * Absent in hashes of layouts before v7.
   */
  validFrom: 'validFrom',
  /** The layout the hash was written in (PROJECTION_LAYOUT); absent in a tombstone and in hashes of layouts before v6. */
  layout: 'layout',
} as const;

const TAG = /^[A-Za-z0-9_-]{22}$/;
const NONCE = /^[A-Za-z0-9_-]{22}$/;

/** Whether `value` has a user tag's form (22 base64url characters). */
export const isUserTag = (value: string): boolean => TAG.test(value);

/** Device ids have the challenge ids' form, `<tag>.<nonce>`: a device request finds its user's slot. */
export const deviceId = (tag: string, nonce: string): string => challengeId(tag, nonce);
export const parseDeviceId = (id: string): { tag: string; nonce: string } | undefined => parseChallengeId(id);

/**
 * The id of the device `RedisKeys.devices(tag)` holds under `nonce` (its parsed JSON): its own `id`
 * (activated under an earlier master key, whose tag the id carries), else `<tag>.<nonce>`;
 * undefined when its `id` names another nonce or is no string (not the device its field says).
 */
export function projectedDeviceId(tag: string, nonce: string, device: { id?: unknown }): string | undefined {
  if (device.id === undefined) return deviceId(tag, nonce);
  return typeof device.id === 'string' && parseDeviceId(device.id)?.nonce === nonce ? device.id : undefined;
}

/** Challenge ids are `<tag>.<nonce>`: the slot and a 128-bit CSPRNG nonce. */
export function challengeId(tag: string, nonce: string): string {
  return `${tag}.${nonce}`;
}

export function parseChallengeId(id: string): { tag: string; nonce: string } | undefined {
  const dot = id.indexOf('.');
  if (dot < 0) return undefined;
  const tag = id.slice(0, dot);
  const nonce = id.slice(dot + 1);
  return TAG.test(tag) && NONCE.test(nonce) ? { tag, nonce } : undefined;
}
