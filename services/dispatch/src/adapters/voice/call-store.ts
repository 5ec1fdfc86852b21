import type { RedisClient } from '@mfa/projection';
import { parseChallengeId, RedisKeys } from '@mfa/projection';

/** What the webhooks of a call need to know, written when the call is placed. */
export interface CallState {
  tenantId: string;
  userId: string;
  language?: string | undefined;
  pinMode: boolean;
  fraudCode: string | null;
  /** The extension dialled after connecting: the call first asks to be put through to it. */
  extension?: string | undefined;
  /** Twilio's CallSid, once Twilio accepted the call. */
  callSid?: string | undefined;
  /** How the call ended for the challenge, once it did: approved, denied (wrong PINs), fraud, unanswered. */
  outcome?: string | undefined;
  /** Twilio got the request to place the call and never answered: the call may ring; it is never placed again. */
  placementUnknown?: boolean | undefined;
}

/**
 * One key, so one slot: HSETNX of one field, only while the call's hash exists. A write that
 * follows a read by seconds (the webhooks wait for other services in between) finds the hash
 * expired at times; HSETNX alone would make it again without a TTL, for good.
 * ARGV: field, value. 1 when written, 0 when the field was set or the call is gone.
 */
const RECORD_ONCE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
`;

/**
 * The state of each voice challenge's call in Redis, in the challenge's slot
 * (`mfa:{tag}:call:<nonce>`, a hash), kept until well after the challenge can no longer be used.
 * Each prompt's answer is recorded once per call and prompt (HSETNX), so a webhook Twilio sends
 * again (a retry, a replay) gets the same TwiML and changes nothing twice; the outcome too. Only
 * create (and placementUnknown, which sets the TTL again) makes the hash: every other write leaves
 * a call that expired gone.
 */
export class CallStore {
  constructor(private readonly redis: RedisClient) {
    redis.defineCommand('mfaCallRecordOnce', { numberOfKeys: 1, lua: RECORD_ONCE });
  }

  /** Sets `field` unless it is set or the call is gone: true when this call set it. */
  private async recordOnce(key: string, field: string, value: string): Promise<boolean> {
    const redis = this.redis as unknown as { mfaCallRecordOnce: (key: string, field: string, value: string) => Promise<number> };
    return (await redis.mfaCallRecordOnce(key, field, value)) === 1;
  }

  private key(challengeId: string): string | undefined {
    const id = parseChallengeId(challengeId);
    return id ? RedisKeys.call(id.tag, id.nonce) : undefined;
  }

  async create(challengeId: string, state: CallState, ttlMs: number): Promise<void> {
    const key = this.key(challengeId);
    if (!key) throw new Error('a call for a malformed challenge id');
    await this.redis
      .multi()
      .hset(key, { t: state.tenantId, u: state.userId, l: state.language ?? '', p: state.pinMode ? '1' : '0', f: state.fraudCode ?? '', x: state.extension ?? '' })
      .pexpire(key, Math.max(1, Math.ceil(ttlMs)))
      .exec();
  }

  async read(challengeId: string): Promise<CallState | undefined> {
    const key = this.key(challengeId);
    if (!key) return undefined;
    const [t, u, l, p, f, sid, o, x, pu] = await this.redis.hmget(key, 't', 'u', 'l', 'p', 'f', 'sid', 'o', 'x', 'pu');
    if (!t || !u) return undefined;
    return {
      tenantId: t,
      userId: u,
      language: l || undefined,
      pinMode: p === '1',
      fraudCode: f ? f : null,
      extension: x || undefined,
      callSid: sid ?? undefined,
      outcome: o ?? undefined,
      ...(pu ? { placementUnknown: true } : {}),
    };
  }

  /**
   * Twilio got the request to place the call and did not answer: the call may be ringing. Recorded
   * in the call's hash, so a redelivery of the request places no other; `ttlMs` as at create.
   */
  async placementUnknown(challengeId: string, ttlMs: number): Promise<void> {
    const key = this.key(challengeId);
    if (key) await this.redis.multi().hset(key, 'pu', '1').pexpire(key, Math.max(1, Math.ceil(ttlMs))).exec();
  }

  /** The call's CallSid, as Twilio answered the placement (or as its first webhook names it); nothing once the call is gone. */
  async setCallSid(challengeId: string, callSid: string): Promise<void> {
    const key = this.key(challengeId);
    if (key) await this.recordOnce(key, 'sid', callSid);
  }

  /**
   * Records the answer to one prompt; false when that prompt was answered before (a webhook
   * delivered again), or when the call is gone (expired: nothing is recorded).
   */
  async answerOnce(challengeId: string, prompt: number, answer: string): Promise<boolean> {
    const key = this.key(challengeId);
    return key ? this.recordOnce(key, `g${prompt}`, answer) : false;
  }

  /** Records how the call ended for the challenge, once; true the first time, false too when the call is gone (expired). */
  async finish(challengeId: string, outcome: string): Promise<boolean> {
    const key = this.key(challengeId);
    return key ? this.recordOnce(key, 'o', outcome) : false;
  }
}
