import { createHash } from 'node:crypto';
import { subjectIds, subjectToken } from '@mfa/contracts';
import type { RedisClient } from '@mfa/projection';

/**
 * When users' blocks end, for the automatic unblock's pass: sorted sets of `<b64url tenant>.<b64url
 * user>` -> the end of the user's last block projected (ms), so the pass reads the blocks due
 * instead of every user ever blocked. SHARDS of them, each its own key (its own slot on a cluster:
 * `mfa:{fraud:block-ends:<n>}`), a user's in the shard its member hashes to. The member BUILT
 * (score +inf) of every shard says the sets hold every block of the log: without it (a new
 * deployment, a Redis that lost its data) the pass fills them from the log first. A shard lives 91
 * days from its last write (a block lasts 90): one that goes is filled again with the others.
 */
const SHARDS = 16;
const BUILT = '*';
const KEPT_MS = 91 * 86_400_000;

const shardKey = (n: number) => `mfa:{fraud:block-ends:${n}}`;
const memberOf = (tenantId: string, userId: string) => `${subjectToken(tenantId)}.${subjectToken(userId)}`;
const keyOf = (member: string) => shardKey(createHash('sha256').update(member).digest()[0]! % SHARDS);
const shards = Array.from({ length: SHARDS }, (_, n) => shardKey(n));
/** The shard that holds the user's block end, and the user's member in it. */
export const blockEndOf = (tenantId: string, userId: string) => {
  const member = memberOf(tenantId, userId);
  return { key: keyOf(member), member };
};

/** Removes a member whose end has passed; a later block of the user (a later end) stays. KEYS: the shard. ARGV: member, now ms. */
const REMOVE_ENDED_SCRIPT = `
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
`;

export class BlockEnds {
  private readonly removeEndedScript: (...args: Array<string | number>) => Promise<number>;

  constructor(private readonly redis: RedisClient) {
    redis.defineCommand('mfaFraudRemoveEndedBlock', { numberOfKeys: 1, lua: REMOVE_ENDED_SCRIPT });
    this.removeEndedScript = (redis as unknown as { mfaFraudRemoveEndedBlock: (...a: Array<string | number>) => Promise<number> }).mfaFraudRemoveEndedBlock.bind(redis);
  }

  /** The user's block ends at `untilMs` (replacing an earlier end of theirs). */
  async add(tenantId: string, userId: string, untilMs: number): Promise<void> {
    const { key, member } = blockEndOf(tenantId, userId);
    await this.redis.multi().zadd(key, untilMs, member).pexpire(key, KEPT_MS).exec();
  }

  /** Whether the sets hold every block of the log (see BUILT). */
  async built(): Promise<boolean> {
    const marks = await Promise.all(shards.map((key) => this.redis.zscore(key, BUILT)));
    return marks.every((mark) => mark !== null);
  }

  /** Declares the sets filled from the log. */
  async markBuilt(): Promise<void> {
    await Promise.all(shards.map((key) => this.redis.multi().zadd(key, '+inf', BUILT).pexpire(key, KEPT_MS).exec()));
  }

  /** Up to `limit` users per shard whose block has ended by `now`, earliest first. */
  async due(now: Date, limit: number): Promise<Array<{ tenantId: string; userId: string }>> {
    const members = await Promise.all(shards.map((key) => this.redis.zrangebyscore(key, '-inf', now.getTime(), 'LIMIT', 0, limit)));
    return members.flat().flatMap((member) => {
      const ids = subjectIds('', member);
      return ids ? [{ tenantId: ids[0], userId: ids[1] }] : [];
    });
  }

  /** Forgets the user's block if it has ended by `now`. */
  async removeEnded(tenantId: string, userId: string, now: Date): Promise<void> {
    const { key, member } = blockEndOf(tenantId, userId);
    await this.removeEndedScript(key, member, now.getTime());
  }
}
