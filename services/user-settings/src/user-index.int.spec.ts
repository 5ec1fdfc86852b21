import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';
import { Redis } from 'ioredis';
import { loadKeyring } from '@mfa/crypto';
import { RedisKeys, UserIndex } from '@mfa/projection';
import { itWith, testEnv, uniqueTenant } from '@mfa/testing';

/** users.list's index against the real Redis: prefixes sort by UTF-8 bytes, whatever the script. */
describe("users.list's index (real Redis)", () => {
  let redis: Redis;
  let index: UserIndex;
  const tenantId = uniqueTenant('index');

  before(() => {
    redis = new Redis(testEnv.redisUrl);
    index = new UserIndex(redis, loadKeyring({}).keyring);
  });

  after(async () => {
    await redis.del(RedisKeys.userIndex(tenantId), RedisKeys.userIndexTerms(tenantId));
    await redis.quit();
  });

  itWith({ real: ['redis'] }, 'finds ids and names in any script, by prefix and in the full listing', async () => {
    const users = [
      { userId: 'anna@contoso.example', displayName: 'Anna Ek' },
      { userId: 'łukasz@contoso.example', displayName: 'Łukasz Nowak' },
      { userId: 'иван@contoso.example', displayName: 'Иван Петров' },
      { userId: 'ÿvonne@contoso.example', displayName: 'Ÿvonne' },
      { userId: '李@contoso.example', displayName: '李小龍' },
      { userId: 'emoji@contoso.example', displayName: '😀 Smile' },
    ];
    for (const { userId, displayName } of users) await index.put(tenantId, userId, { displayName });
    const all = await index.list(tenantId, { limit: 50 });
    assert.deepEqual(all.items.map((i) => i.userId).sort(), users.map((u) => u.userId).sort());
    const found = async (query: string) => (await index.list(tenantId, { query, limit: 50 })).items.map((i) => i.userId);
    assert.deepEqual(await found('и'), ['иван@contoso.example']);
    assert.deepEqual(await found('Иван П'), ['иван@contoso.example'], 'a name by its start, any case');
    assert.deepEqual(await found('ł'), ['łukasz@contoso.example']);
    assert.deepEqual(await found('ÿ'), ['ÿvonne@contoso.example']);
    assert.deepEqual(await found('李'), ['李@contoso.example']);
    assert.deepEqual(await found('😀'), ['emoji@contoso.example']);
    assert.deepEqual(await found('a'), ['anna@contoso.example']);
    // Paged by id: every user once, none skipped.
    const seen: string[] = [];
    let after: string | undefined;
    do {
      const page = await index.list(tenantId, { limit: 2, ...(after !== undefined ? { after } : {}) });
      seen.push(...page.items.map((i) => i.userId));
      after = page.next;
    } while (after !== undefined);
    assert.deepEqual(seen.sort(), users.map((u) => u.userId).sort());
  });
});
