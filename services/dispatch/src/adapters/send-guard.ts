import type { RedisClient } from '@mfa/projection';
import { parseChallengeId, RedisKeys } from '@mfa/projection';

export type SendClaim =
  /** This instance may call the provider now. */
  | { kind: 'claimed' }
  /**
   * A provider accepted this challenge's SMS already: never again. `seq`: the stream sequence of
   * the challenge's ChallengeStarted, which a resend reads the code from (absent in records
   * written before resends existed, and for calls).
   */
  | { kind: 'sent'; provider: string; providerMessageId: string; seq?: number }
  /** Another delivery of the same request is calling a provider right now (or died doing it). */
  | { kind: 'in_progress' }
  /**
   * The challenge is no longer in Redis (Redis was replaced or emptied since it started, or it
   * ended long ago) and no send of it is recorded: nothing may be sent. Its code could not be
   * verified anyway, and the claim that recorded an earlier send may have gone with it.
   */
  | { kind: 'gone' };

/** A claim as read without looking at the challenge: what a claim key holds (`sendsBefore`: a resend's earlier sends), or taken. */
export type ClaimState = Exclude<SendClaim, { kind: 'gone' }>;

const SENDING = 'sending';
const GONE = 'gone';
/** The last word of a `sent` claim without a stream sequence (a call's, a push's). */
const NO_SEQ = '-';

/**
 * Send claims (`SET NX`: an SMS's or a call's one, a push's one per device), taken only while the
 * challenge exists. KEYS: the challenge, then each claim (one slot). ARGV: the claims' lifetime in
 * ms. Answers, per claim, what was claimed before (`sending`, `sent …`), `gone` (nothing recorded
 * and no challenge), or '' when this call claimed.
 */
const CLAIM = `
local alive = redis.call('EXISTS', KEYS[1]) == 1
local answers = {}
for n = 2, #KEYS do
  local previous = redis.call('GET', KEYS[n])
  if previous then answers[#answers + 1] = previous
  elseif not alive then answers[#answers + 1] = '${GONE}'
  else
    redis.call('SET', KEYS[n], '${SENDING}', 'PX', ARGV[1])
    answers[#answers + 1] = ''
  end
end
return answers
`;

/** The most SMS one challenge can have sent: the start and its resends (SMS_MAX_SENDS_PER_CHALLENGE at most). */
const MAX_SMS_SENDS = 10;

/** How long a start without a method avoids a method that just failed the user (an SMS undelivered, a call unanswered). */
export const FAILED_METHOD_MS = 10 * 60_000;

/**
 * No provider delivered the challenge's SMS: the challenge says so (status answers
 * `delivery_failed` and the user's other methods) and the user's method (SMS, voice for an unanswered call, push when no device could be reached) is marked failed until `ARGV[2]`
 * (a start without a method takes another one meanwhile). A push no device got no longer waits
 * for the user (the pending push marker, `<challenge id>|<expires at>`, goes if it still names
 * this challenge): a start naming push may try again at once rather than answer `rate_limited`,
 * and auth-challenge's next start does not count it as ignored once it expires (three undelivered
 * pushes, an APNs or FCM outage, would otherwise suspend push for the user). The device API finds
 * the push the app should show by that marker too: the app no longer lists this one, though an
 * answer to it (by its id) still counts while it is open. KEYS: challenge, the user's failed
 * methods, the user's pending push (one slot). ARGV: now ms, until ms, the method, the challenge
 * id, and for an SMS the stream sequence of the challenge's ChallengeStarted (`smsSeq` on the
 * challenge: a resend reads the code from it when no send succeeded).
 */
// The user's method marked failed until ARGV[2] (KEYS[2], kept at least that long; ARGV[1] now).
const MARK_FAILED = `local function mark_failed(method)
  redis.call('HSET', KEYS[2], method, ARGV[2])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) - tonumber(ARGV[1]) then redis.call('PEXPIREAT', KEYS[2], ARGV[2]) end
end
`;
const UNDELIVERABLE = `${MARK_FAILED}
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'delivery', 'failed')
  if ARGV[5] then redis.call('HSET', KEYS[1], 'smsSeq', ARGV[5]) end
end
mark_failed(ARGV[3])
if ARGV[3] == 'push' then
  local pending = redis.call('GET', KEYS[3])
  if pending and string.sub(pending, 1, #ARGV[4] + 1) == ARGV[4] .. '|' then redis.call('DEL', KEYS[3]) end
end
return 1
`;

/**
 * A receipt says an SMS was not delivered: like UNDELIVERABLE for SMS, but only while the challenge
 * is open (pending, not expired). A receipt can come hours late (an SMSC's EXPIRED after its own
 * validity, a retry queue): one of a challenge long decided, expired or gone says nothing of the
 * user's next sign-in and must not turn SMS away from it. KEYS: challenge, the user's failed
 * methods (one slot). ARGV: now ms, until ms. 1 when recorded.
 */
const UNDELIVERED_RECEIPT = `${MARK_FAILED}
local ch = redis.call('HMGET', KEYS[1], 'status', 'expiresAt')
local expiresAt = tonumber(ch[2])
if ch[1] ~= 'pending' or (expiresAt and expiresAt <= tonumber(ARGV[1])) then return 0 end
redis.call('HSET', KEYS[1], 'delivery', 'failed')
mark_failed('sms')
return 1
`;

/**
 * At most one SMS per request, whatever JetStream redelivers. A delivery claims the challenge's
 * send in Redis (`SET NX`) before each provider call and records the provider's message id once
 * the provider accepted it; a redelivered request then finds `sent` and sends nothing. The claim
 * lives in Redis, not in the consumer's ack state, because a nats-server that dies right after a
 * send can lose the acks of its last moments and deliver the request again once it is back.
 */
export class SendGuard {
  constructor(private readonly redis: RedisClient) {
    redis.defineCommand('mfaSmsUndeliverable', { numberOfKeys: 3, lua: UNDELIVERABLE });
    redis.defineCommand('mfaSendClaims', { lua: CLAIM });
    redis.defineCommand('mfaSmsUndeliveredReceipt', { numberOfKeys: 2, lua: UNDELIVERED_RECEIPT });
  }

  /**
   * A receipt of the challenge's SMS said undelivered: recorded as undeliverable() records a failed
   * send, but only while the challenge is pending and unexpired; false when it was not (nothing changed).
   */
  async undeliveredReceipt(challengeId: string, now: number): Promise<boolean> {
    const id = parseChallengeId(challengeId);
    if (!id) return false;
    const recorded = await (this.redis as unknown as { mfaSmsUndeliveredReceipt: (...a: Array<string | number>) => Promise<number> }).mfaSmsUndeliveredReceipt(
      RedisKeys.challenge(id.tag, id.nonce),
      RedisKeys.failedMethods(id.tag),
      now,
      now + FAILED_METHOD_MS,
    );
    return recorded === 1;
  }

  /**
   * The challenge's SMS (or call, or push) did not reach the user: recorded on the challenge, and the method
   * marked failed for the user for FAILED_METHOD_MS (or until `untilMs`, if sooner); a push no
   * longer waits for the user (UNDELIVERABLE). `startedSeq`: where the challenge's ChallengeStarted
   * is in its stream, for resends.
   */
  async undeliverable(challengeId: string, now: number, method: 'sms' | 'voice' | 'push' = 'sms', untilMs = now + FAILED_METHOD_MS, startedSeq?: number): Promise<void> {
    const id = parseChallengeId(challengeId);
    if (!id) return;
    await (this.redis as unknown as { mfaSmsUndeliverable: (...a: Array<string | number>) => Promise<number> }).mfaSmsUndeliverable(
      RedisKeys.challenge(id.tag, id.nonce),
      RedisKeys.failedMethods(id.tag),
      RedisKeys.pendingPush(id.tag),
      now,
      Math.min(untilMs, now + FAILED_METHOD_MS),
      method,
      challengeId,
      ...(startedSeq === undefined ? [] : [startedSeq]),
    );
  }

  /**
   * What became of the sends of a challenge before its resend `resend`: the start's (index 0) and
   * the earlier resends' claims, and the sequence of its ChallengeStarted that a failed send left on
   * the challenge. One round trip (one slot).
   */
  async sendsBefore(challengeId: string, resend: number): Promise<{ sends: Array<ClaimState | undefined>; failedSeq: number | undefined }> {
    const id = this.idOf(challengeId);
    const keys = Array.from({ length: resend }, (_, n) => RedisKeys.smsSend(id.tag, id.nonce, n));
    const [[claimsError, claims], [seqError, seq]] = (await this.redis.pipeline().mget(...keys).hget(RedisKeys.challenge(id.tag, id.nonce), 'smsSeq').exec()) as [
      [Error | null, Array<string | null>],
      [Error | null, string | null],
    ];
    if (claimsError || seqError) throw claimsError ?? seqError;
    return { sends: claims.map((value) => (value === null ? undefined : claimOf(value))), failedSeq: seq === null ? undefined : Number(seq) };
  }

  /**
   * Which of a challenge's SMS sends a provider's message id is (0 the start's, n resend n; undefined
   * when no claim records it as sent), and the latest send the challenge has accepted (its
   * `resends`, counted by auth-challenge when it accepts a resend, before dispatch sends it). A
   * receipt of a send older than the latest says nothing of the code the user holds now.
   * One round trip (one slot).
   */
  async smsSendOf(challengeId: string, provider: string, providerMessageId: string): Promise<{ index: number | undefined; latest: number }> {
    const id = parseChallengeId(challengeId);
    if (!id) return { index: undefined, latest: 0 };
    const keys = Array.from({ length: MAX_SMS_SENDS }, (_, n) => RedisKeys.smsSend(id.tag, id.nonce, n));
    const [[claimsError, claims], [resendsError, resends]] = (await this.redis.pipeline().mget(...keys).hget(RedisKeys.challenge(id.tag, id.nonce), 'resends').exec()) as [
      [Error | null, Array<string | null>],
      [Error | null, string | null],
    ];
    if (claimsError || resendsError) throw claimsError ?? resendsError;
    const index = claims.findIndex((value) => {
      const claim = value === null ? undefined : claimOf(value);
      return claim?.kind === 'sent' && claim.provider === provider && claim.providerMessageId === providerMessageId;
    });
    return { index: index === -1 ? undefined : index, latest: Number(resends ?? 0) || 0 };
  }

  /** The tenant of a challenge still in Redis (a receipt names only the challenge). */
  async tenantOf(challengeId: string): Promise<string | undefined> {
    const id = parseChallengeId(challengeId);
    if (!id) return undefined;
    return (await this.redis.hget(RedisKeys.challenge(id.tag, id.nonce), 'tenantId')) ?? undefined;
  }

  private idOf(challengeId: string): { tag: string; nonce: string } {
    const id = parseChallengeId(challengeId);
    if (!id) throw new Error('an SMS request for a malformed challenge id');
    return id;
  }

  /** The claim on the start's send, or on resend `resend` of the challenge (each is sent once). */
  private keyOf(challengeId: string, resend?: number): string {
    const id = this.idOf(challengeId);
    return RedisKeys.smsSend(id.tag, id.nonce, resend);
  }

  /**
   * One round trip (one script, one slot): claims the send unless it was claimed before (answered
   * as it stands) or its challenge no longer exists in Redis (`gone`: never sent).
   */
  async claim(challengeId: string, ttlMs: number, resend?: number): Promise<SendClaim> {
    const [claim] = await this.claims(challengeId, [this.keyOf(challengeId, resend)], ttlMs);
    return claim!;
  }

  /**
   * What the claim on the start's send (or on resend `resend`) holds, without claiming it: whether
   * a request delivered after its challenge expired had been sent before (undefined: no claim).
   */
  async recorded(challengeId: string, resend?: number): Promise<ClaimState | undefined> {
    const value = await this.redis.get(this.keyOf(challengeId, resend));
    return value === null ? undefined : claimOf(value);
  }

  /**
   * The provider accepted the message: kept until well after the challenge can no longer be used,
   * with the stream sequence of the challenge's ChallengeStarted (`source.seq`) for its resends.
   */
  async sent(challengeId: string, provider: string, providerMessageId: string, ttlMs: number, source?: { seq: number; resend?: number | undefined }): Promise<void> {
    await this.redis.set(this.keyOf(challengeId, source?.resend), sentValue(provider, providerMessageId, source?.seq), 'PX', Math.max(1, Math.ceil(ttlMs)));
  }

  /** The provider refused or failed: the next attempt (or delivery) may claim again. */
  async release(challengeId: string, resend?: number): Promise<void> {
    await this.redis.del(this.keyOf(challengeId, resend));
  }

  // A push goes to each of the user's devices: one claim per device, so a delivery that stopped
  // half-way sends, when redelivered, to the devices it had not reached and to no other.

  /**
   * Claims on pushing the challenge to each device (by its nonce), in one round trip (one script,
   * one slot); `gone` for each device with no recorded push once the challenge is no longer in Redis.
   */
  async claimPush(challengeId: string, deviceNonces: readonly string[], ttlMs: number): Promise<SendClaim[]> {
    if (deviceNonces.length === 0) return [];
    return this.claims(challengeId, deviceNonces.map((device) => this.pushKeyOf(challengeId, device)), ttlMs);
  }

  /** What the claims on pushing the challenge to each device hold, without claiming them (undefined: no claim). One round trip (one slot). */
  async recordedPushes(challengeId: string, deviceNonces: readonly string[]): Promise<Array<ClaimState | undefined>> {
    if (deviceNonces.length === 0) return [];
    const values = await this.redis.mget(...deviceNonces.map((device) => this.pushKeyOf(challengeId, device)));
    return values.map((value) => (value === null ? undefined : claimOf(value)));
  }

  /** The claims `keys` of one challenge (CLAIM). */
  private async claims(challengeId: string, keys: readonly string[], ttlMs: number): Promise<SendClaim[]> {
    const id = this.idOf(challengeId);
    const answers = await (this.redis as unknown as { mfaSendClaims: (keys: number, ...a: Array<string | number>) => Promise<string[]> }).mfaSendClaims(
      keys.length + 1,
      RedisKeys.challenge(id.tag, id.nonce),
      ...keys,
      Math.max(1, Math.ceil(ttlMs)),
    );
    return answers.map((previous) => (previous === '' ? { kind: 'claimed' } : previous === GONE ? { kind: 'gone' } : claimOf(previous)));
  }

  /** The provider accepted the push to the device: kept until well after the challenge can no longer be used. */
  async pushSent(challengeId: string, deviceNonce: string, provider: string, providerMessageId: string, ttlMs: number): Promise<void> {
    await this.redis.set(this.pushKeyOf(challengeId, deviceNonce), sentValue(provider, providerMessageId), 'PX', Math.max(1, Math.ceil(ttlMs)));
  }

  /** Not sent to the device (refused, failed, or claimed by a delivery that stops): the next delivery may claim again. */
  async releasePush(challengeId: string, deviceNonces: readonly string[]): Promise<void> {
    if (deviceNonces.length > 0) await this.redis.del(...deviceNonces.map((device) => this.pushKeyOf(challengeId, device)));
  }

  private pushKeyOf(challengeId: string, deviceNonce: string): string {
    const id = this.idOf(challengeId);
    return RedisKeys.pushSend(id.tag, id.nonce, deviceNonce);
  }
}

/**
 * A `sent` claim's value: `sent <provider> <message id> <seq>`, the last word `-` without a seq (a
 * call, a push). The last word is always written, so a message id may hold spaces and words of
 * digits (an SMPP id is the SMSC's free text) and still read back whole.
 */
function sentValue(provider: string, providerMessageId: string, seq?: number): string {
  return `sent ${provider} ${providerMessageId} ${seq ?? NO_SEQ}`;
}

/**
 * A claim's value: `sending`, or a `sent` one (sentValue). One written before the last word was
 * always there (`sent <provider> <message id>`, a call's or a push's, whose ids hold no spaces)
 * has one word after the provider, or a last word that is neither a seq nor `-`: all of it is the id.
 */
function claimOf(value: string): ClaimState {
  if (value === SENDING) return { kind: 'in_progress' };
  const [, provider = 'unknown', ...words] = value.split(' ');
  const last = words.length > 1 ? words.at(-1)! : undefined;
  const seq = last !== undefined && (last === NO_SEQ || /^\d+$/.test(last)) ? words.pop() : undefined;
  return { kind: 'sent', provider, providerMessageId: words.join(' '), ...(seq && seq !== NO_SEQ ? { seq: Number(seq) } : {}) };
}
