import { randomUUID } from 'node:crypto';
import type { RedisClient } from '@mfa/projection';

/** How long a slot is held at most: an upload of the largest file at a slow client's pace; then it is free again. */
const SLOT_MS = 30 * 60_000;

/**
 * Uploads of token files under way, per tenant, across every console instance: the check "fewer
 * than N files of this tenant waiting or under import" counts the stored ones, which a dozen uploads
 * started at once would all pass. Each upload takes a slot first (one key per tenant: one slot of
 * Redis Cluster) and learns how many are under way with it; it then counts the stored files, and
 * gives its slot back when its file is stored or refused. An upload that ends between the two is in
 * one count or the other (its file is stored before its slot is given back), so the sum never falls
 * short. A slot a crashed console never gave back is free again after SLOT_MS.
 */
export class UploadSlots {
  constructor(private readonly redis: RedisClient) {
    redis.defineCommand('mfaTakeUploadSlot', { numberOfKeys: 1, lua: TAKE_SCRIPT });
  }

  /** A slot for one upload of `tenantId` and the uploads under way with it, or undefined when `max` are under way. */
  async take(tenantId: string, max: number, now: number): Promise<{ slot: string; underWay: number } | undefined> {
    const slot = randomUUID();
    const underWay = await (this.redis as unknown as TakeScript).mfaTakeUploadSlot(keyOf(tenantId), now, SLOT_MS, max, slot);
    return underWay > 0 ? { slot, underWay } : undefined;
  }

  async give(tenantId: string, slot: string): Promise<void> {
    await this.redis.zrem(keyOf(tenantId), slot);
  }
}

type TakeScript = { mfaTakeUploadSlot: (key: string, now: number, slotMs: number, max: number, id: string) => Promise<number> };

const keyOf = (tenantId: string) => `mfa:{uploads:${tenantId}}:slots`;

/** KEYS: the tenant's slots (id → taken at, ms). ARGV: now ms, slot lifetime ms, most uploads, the new slot's id. Returns those under way with it, or 0. */
const TAKE_SCRIPT = `
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
`;
