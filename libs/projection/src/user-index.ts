import type { RedisClient } from '@mfa/projection';
import { userTag, type Keyring } from '@mfa/crypto';
import { RedisKeys, UserFields } from './keys.js';

/**
 * users.list's search: per tenant, a sorted set of search terms (all scores 0, so ordered by the
 * term's bytes and searched by prefix with ZRANGEBYLEX), one per user id, display name and phone
 * number, each `<kind>\0<term, lower case>\0<user id>`, and a hash of each user's current terms so
 * a change replaces them. Both keys share the tenant's hash tag (one slot on Redis Cluster). The
 * index follows the user projection (written with it, rebuilt with it, emptied on erasure), in
 * the order of the snapshots' stream sequences; it holds what the projection already holds in clear.
 */
const KIND = { id: 'i', name: 'n', phone: 'p' } as const;
const SEP = '\u0000';
/** Candidates read per term kind for one search page: bounds what a short prefix costs. */
const SEARCH_WINDOW = 1_000;

// KEYS: index, terms. ARGV: user id, the sequence of the snapshot (or erasure) they come from,
// then the user's terms (none: the user is gone). The terms hash keeps `<seq>\n<term>\n...` per
// user. The index is written after the user's projection script, in another slot, so two writers
// may reach it in the other order: an entry older than the stored one is refused (-1), which also
// keeps an erased user (an entry of the erasure's sequence alone) from coming back with a late
// write of an earlier snapshot. Entries of layouts before v6 hold no sequence (-1: any replaces them).
const REPLACE_TERMS = `
local seq = tonumber(ARGV[2])
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  local stored = tonumber(string.match(old, '^(%d+)\\n') or string.match(old, '^(%d+)$') or '-1')
  if stored > seq then return -1 end
  for term in string.gmatch(old, '[^\\n]+') do
    if not string.match(term, '^%d+$') then redis.call('ZREM', KEYS[1], term) end
  end
end
local entry = {ARGV[2]}
for n = 3, #ARGV do redis.call('ZADD', KEYS[1], 0, ARGV[n]); entry[#entry + 1] = ARGV[n] end
redis.call('HSET', KEYS[2], ARGV[1], table.concat(entry, '\\n'))
return #entry - 1
`;

/** An entry of the terms hash: the sequence it was written at (-1 before v6), and whether it holds terms (not an erasure's). */
function parseEntry(value: string | null): { seq: number; terms: boolean } | undefined {
  if (value === null) return undefined;
  const lines = value.split('\n');
  const seq = /^\d+$/.test(lines[0]!) ? Number(lines.shift()) : -1;
  return { seq, terms: lines.length > 0 };
}

const normalized = (text: string) => text.normalize('NFKC').toLowerCase().replace(/[\n\u0000]/g, ' ').trim();

export interface UserListItem {
  userId: string;
  displayName: string | null;
  blocked: boolean;
  methods: string[];
}

export class UserIndex {
  constructor(
    private readonly redis: RedisClient,
    private readonly keyring: Keyring,
  ) {
    redis.defineCommand('mfaReplaceUserTerms', { numberOfKeys: 2, lua: REPLACE_TERMS });
  }

  /**
   * The user's terms as of the snapshot at stream sequence `seq` (none once erased: the erasure's
   * sequence); replaces what the index held for them unless that is newer. False when it was.
   * `seq` 0 (tests, tools) is replaced by any snapshot.
   */
  async put(
    tenantId: string,
    userId: string,
    profile: { displayName?: string | undefined; phoneNumber?: string | undefined } | undefined,
    seq = 0,
  ): Promise<boolean> {
    const terms = profile
      ? [
          `${KIND.id}${SEP}${normalized(userId)}${SEP}${userId}`,
          ...(profile.displayName ? [`${KIND.name}${SEP}${normalized(profile.displayName)}${SEP}${userId}`] : []),
          ...(profile.phoneNumber ? [`${KIND.phone}${SEP}${normalized(profile.phoneNumber)}${SEP}${userId}`] : []),
        ]
      : [];
    const written = await (this.redis as unknown as { mfaReplaceUserTerms: (...a: Array<string | number>) => Promise<number> }).mfaReplaceUserTerms(
      RedisKeys.userIndex(tenantId),
      RedisKeys.userIndexTerms(tenantId),
      userId,
      seq,
      ...terms,
    );
    return written >= 0;
  }

  /** Whether the index holds the user's terms (written with their projection; an erased user's entry holds none). */
  async has(tenantId: string, userId: string): Promise<boolean> {
    return (await this.entry(tenantId, userId))?.terms === true;
  }

  /** The user's entry: the sequence of the snapshot its terms come from (-1: written before v6), and whether it holds terms. */
  async entry(tenantId: string, userId: string): Promise<{ seq: number; terms: boolean } | undefined> {
    return parseEntry(await this.redis.hget(RedisKeys.userIndexTerms(tenantId), userId));
  }

  /** The users of the tenant whose phone number is exactly `phoneNumber` (E.164), at most `limit` of them. */
  async usersWithPhone(tenantId: string, phoneNumber: string, limit: number): Promise<string[]> {
    const prefix = `${KIND.phone}${SEP}${normalized(phoneNumber)}${SEP}`;
    // Every term of this number sorts between the prefix and the prefix with its separator raised by one.
    const members = await this.redis.zrangebylex(RedisKeys.userIndex(tenantId), `[${prefix}`, `(${prefix.slice(0, -1)}\u0001`, 'LIMIT', 0, limit);
    return members.map((m) => m.slice(prefix.length));
  }

  /**
   * One page of the tenant's users, ordered by user id, after `after` (a user id): those whose id,
   * display name or phone number starts with `query` (case-insensitive), or all of them; with
   * `blocked`, only users blocked (or not) now; with `method`, only users who have it now (as the
   * projection's methods list them), or, with `none`, users who have no method.
   */
  async list(tenantId: string, options: { query?: string; blocked?: boolean; method?: string; limit: number; after?: string }): Promise<{ items: UserListItem[]; next?: string }> {
    const index = RedisKeys.userIndex(tenantId);
    let ids: string[];
    let more: boolean;
    if (options.query === undefined) {
      // Every user, by id: the id terms from the cursor on.
      const from = options.after === undefined ? `[${KIND.id}${SEP}` : `(${KIND.id}${SEP}${normalized(options.after)}${SEP}${options.after}`;
      const members = await this.redis.zrangebylex(index, from, above(`${KIND.id}${SEP}`), 'LIMIT', 0, options.limit + 1);
      ids = members.map((m) => m.slice(m.lastIndexOf(SEP) + 1));
      more = ids.length > options.limit;
    } else {
      const q = normalized(options.query);
      const windows = await Promise.all(
        Object.values(KIND).map((kind) => this.redis.zrangebylex(index, `[${kind}${SEP}${q}`, above(`${kind}${SEP}${q}`), 'LIMIT', 0, SEARCH_WINDOW)),
      );
      const matched = [...new Set(windows.flat().map((m) => m.slice(m.lastIndexOf(SEP) + 1)))]
        .filter((id) => options.after === undefined || id > options.after)
        .sort();
      ids = matched;
      more = matched.length > options.limit;
    }
    // Profiles and blocks of the candidates, each user's keys in its own slot, all at once. A
    // filter examines every candidate read: a page may hold fewer items than asked.
    const filtered = options.blocked !== undefined || options.method !== undefined;
    const candidates = ids.slice(0, filtered ? ids.length : options.limit);
    const rows = await Promise.all(
      candidates.map(async (userId) => {
        const tag = userTag(this.keyring, tenantId, userId);
        const [[, fields], [, blockedCount]] = (await this.redis
          .multi()
          .hmget(RedisKeys.user(tag), UserFields.displayName, UserFields.methods)
          .exists(RedisKeys.blocked(tag))
          .exec()) as [[null, Array<string | null>], [null, number]];
        return { userId, displayName: fields[0] ?? null, blocked: blockedCount === 1, methods: fields[1] ? fields[1].split(',').filter(Boolean) : [] };
      }),
    );
    const items: UserListItem[] = [];
    let last: string | undefined;
    for (const row of rows) {
      if (items.length === options.limit) break;
      last = row.userId;
      if (options.blocked !== undefined && options.blocked !== row.blocked) continue;
      if (options.method !== undefined && !(options.method === 'none' ? row.methods.length === 0 : row.methods.includes(options.method))) continue;
      items.push(row);
    }
    // More may follow when candidates were left unexamined, or the window had more than a page.
    const examinedAll = last === undefined || last === ids.at(-1);
    return { items, next: more || !examinedAll ? last : undefined };
  }
}

/**
 * The bound just above every term that starts with `prefix`: the prefix and a 0xFF byte, which
 * UTF-8 never holds (the character U+00FF is two bytes, C3 BF, below every letter after it).
 */
function above(prefix: string): Buffer {
  return Buffer.concat([Buffer.from(`[${prefix}`, 'utf8'), Buffer.from([0xff])]);
}
