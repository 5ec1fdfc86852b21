import type { RedisClient } from '@mfa/projection';
import { OATH_TOKEN_STATES, type OathTokenItem, type OathTokenState } from '@mfa/contracts';

/**
 * The tenant's hardware token inventory as oath.tokens.list reads it: a Redis index kept from the
 * token aggregates (written after each append, and again by the projector consumer from the events,
 * so a crash between the two only delays it). All keys of one tenant share the hash tag
 * `{oath:<tenant>}`, so the one script that changes them runs in one slot on Redis Cluster.
 *
 *   mfa:{oath:<tenant>}:tokens        HASH serial number -> the item (JSON, with the aggregate's seq)
 *   mfa:{oath:<tenant>}:by:all        ZSET serial numbers, all scores 0: ordered by serial (ZRANGEBYLEX)
 *   mfa:{oath:<tenant>}:by:<state>    ZSET the same, per inventory state (unassigned, assigned, active)
 *
 * No secret is in the index: only what an administrator sees.
 */
const keysOf = (tenantId: string) => {
  const base = `mfa:{oath:${tenantId}}`;
  return {
    tokens: `${base}:tokens`,
    all: `${base}:by:all`,
    state: (state: OathTokenState) => `${base}:by:${state}`,
  };
};

// KEYS: tokens, all, by:unassigned, by:assigned, by:active. ARGV: serial, seq, state, item JSON.
// Applies only an item newer than the stored one (by the aggregate's stream sequence).
const PUT = `
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then
  local seq = tonumber(string.match(stored, '"seq":(%d+)') or '-1')
  if seq >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
for i = 3, 5 do redis.call('ZREM', KEYS[i], ARGV[1]) end
local target = ({unassigned = 3, assigned = 4, active = 5})[ARGV[3]]
redis.call('ZADD', KEYS[target], 0, ARGV[1])
return 1
`;

interface StoredItem extends OathTokenItem {
  seq: number;
}

export class OathInventory {
  constructor(private readonly redis: RedisClient) {
    redis.defineCommand('mfaPutOathToken', { numberOfKeys: 5, lua: PUT });
  }

  /** A deleted tenant's inventory gone (its offboarding): every key of the tenant, one slot. */
  async dropTenant(tenantId: string): Promise<void> {
    const k = keysOf(tenantId);
    await this.redis.del(k.tokens, k.all, ...OATH_TOKEN_STATES.map(k.state));
  }

  /** Records the token as of its aggregate's sequence `seq`; false when a newer one is there already. */
  async put(tenantId: string, item: OathTokenItem, seq: number): Promise<boolean> {
    const k = keysOf(tenantId);
    const stored: StoredItem = { seq, ...item };
    const applied = await (this.redis as unknown as { mfaPutOathToken: (...a: Array<string | number>) => Promise<number> }).mfaPutOathToken(
      k.tokens,
      k.all,
      ...OATH_TOKEN_STATES.map(k.state),
      item.serialNumber,
      seq,
      item.state,
      JSON.stringify(stored),
    );
    return applied === 1;
  }

  /** A page of the inventory in serial number order, after `after` (exclusive); `next` when more follow. */
  async list(tenantId: string, options: { state?: OathTokenState | undefined; after?: string | undefined; limit: number }): Promise<{ items: OathTokenItem[]; next?: string }> {
    const k = keysOf(tenantId);
    const index = options.state ? k.state(options.state) : k.all;
    const serials = await this.redis.zrangebylex(index, options.after === undefined ? '-' : `(${options.after}`, '+', 'LIMIT', 0, options.limit + 1);
    const page = serials.slice(0, options.limit);
    if (page.length === 0) return { items: [] };
    const raw = await this.redis.hmget(k.tokens, ...page);
    const items = raw.flatMap((json) => {
      if (!json) return [];
      const { seq: _seq, ...item } = JSON.parse(json) as StoredItem;
      return [item];
    });
    return { items, ...(serials.length > options.limit ? { next: page.at(-1)! } : {}) };
  }

  async get(tenantId: string, serialNumber: string): Promise<OathTokenItem | undefined> {
    const json = await this.redis.hget(keysOf(tenantId).tokens, serialNumber);
    if (!json) return undefined;
    const { seq: _seq, ...item } = JSON.parse(json) as StoredItem;
    return item;
  }
}
