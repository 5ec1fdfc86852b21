import { randomUUID } from 'node:crypto';
import type { RedisClient } from '@mfa/projection';

/** How long a slot is held at most: an upload of the largest file at a slow client's pace; then it is free again. */
const SLOT_MS = 30 * 60_000;

/**
 * Uploads of token files under way, per tenant, across every console instance: the check "fewer
 * than N files of this tenant waiting or under import" counts the stored ones, which a dozen uploads
 * started at once would all pass. Each upload takes a slot first, atomically with the count of the
 * others under way (one key per tenant: one slot of Redis Cluster), and gives it back when the file
 * is stored or refused. A slot a crashed console never gave back is free again after SLOT_MS.
 */
export class UploadSlots {
  constructor(private readonly redis: RedisClient) {
    redis.defineCommand('mfaTakeUploadSlot', { numberOfKeys: 1, lua: TAKE_SCRIPT });
  }

  /** A slot for one upload of `tenantId`, `stored` of whose files are there already, or undefined when `max` are taken. */
  async take(tenantId: string, stored: number, max: number, now: number): Promise<string | undefined> {
    const id = randomUUID();
    const taken = await (this.redis as unknown as TakeScript).mfaTakeUploadSlot(keyOf(tenantId), now, SLOT_MS, stored, max, id);
    return taken === 1 ? id : undefined;
  }

  async give(tenantId: string, slot: string): Promise<void> {
    await this.redis.zrem(keyOf(tenantId), slot);
  }
}

type TakeScript = { mfaTakeUploadSlot: (key: string, now: number, slotMs: number, stored: number, max: number, id: string) => Promise<number> };

const keyOf = (tenantId: string) => `mfa:{uploads:${tenantId}}:slots`;

/** KEYS: the tenant's slots (id → taken at, ms). ARGV: now ms, slot lifetime ms, files stored, most files, the new slot's id. */
const TAKE_SCRIPT = `
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
if redis.call('ZCARD', KEYS[1]) + tonumber(ARGV[3]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`;
