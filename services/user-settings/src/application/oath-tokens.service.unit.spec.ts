import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AnyEvent } from '@mfa/contracts';
import { loadKeyring } from '@mfa/crypto';
import type { Logger } from '@mfa/telemetry';
import type { EventStore } from '../adapters/event-store.js';
import type { OathInventory } from '../adapters/oath-inventory.js';
import { OathTokensService } from './oath-tokens.service.js';
import type { UserSettingsService } from './user-settings.service.js';

/** An event store over `stored`: every aggregate is the whole list, and an append adds to it. */
function memoryEventStore(stored: AnyEvent[]): EventStore {
  return {
    load: async () => ({ events: [...stored], lastSeq: stored.length }),
    append: async (_subject: string, events: readonly AnyEvent[]) => {
      stored.push(...events);
      return stored.length;
    },
  } as unknown as EventStore;
}

/**
 * The inventory index (oath.tokens.list) is written by the command that changed a token, best
 * effort, and by the projector from the events (reindex), which must not lose a failed write: it
 * throws, so the consumer tries the event again instead of acknowledging it with the token
 * missing from the index until the next full rebuild.
 */
describe('hardware token inventory writes', () => {
  const { keyring } = loadKeyring({});
  const warnings: string[] = [];
  const log: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: (msg) => void warnings.push(msg),
    error: () => undefined,
    child: () => log,
  };
  const stored: AnyEvent[] = [];
  const store = memoryEventStore(stored);
  const users = { onHardwareReleased: () => undefined, onHardwareActivated: () => undefined } as unknown as UserSettingsService;
  let failing = true;
  const written: string[] = [];
  const inventory = {
    put: async (_tenantId: string, item: { serialNumber: string }) => {
      if (failing) throw Object.assign(new Error('WRONGTYPE Operation against a key holding the wrong kind of value'), { name: 'ReplyError' });
      written.push(item.serialNumber);
      return true;
    },
  } as unknown as OathInventory;
  const service = new OathTokensService({ store, users, inventory, keyring, log });
  const job = { tenantId: 'contoso', jobId: 'job-1', replace: false };
  const parsed = { row: 1, serialNumber: 'SN-1', secret: Buffer.alloc(20, 7), algorithm: 'SHA1' as const, digits: 6 as const, period: 30 as const };

  it('a command stores its events and answers, its index write left to the projector', async () => {
    assert.deepEqual(await service.importToken(job, parsed, new Date()), { imported: true });
    assert.deepEqual(stored.map((e) => e.type), ['OathTokenImported']);
    assert.deepEqual(warnings, ['oath inventory write failed']);
  });

  it('the projector’s reindex throws a failed write, and writes the entry once it can', async () => {
    await assert.rejects(service.reindex('contoso', 'SN-1', new Date()), /WRONGTYPE/);
    assert.deepEqual(written, []);
    failing = false;
    await service.reindex('contoso', 'SN-1', new Date());
    assert.deepEqual(written, ['SN-1']);
  });
});

/**
 * An import job's worker may lose its job mid-row (its tenant's offboarding ended it, its lease is
 * running out): every write of a row is asked for right before it is made, so that nothing of the
 * row lands once the worker may no longer write.
 */
describe('an import row asks before each of its writes', () => {
  const { keyring } = loadKeyring({});
  const log: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined, child: () => log };
  const job = { tenantId: 'contoso', jobId: 'job-1', replace: false };
  const parsed = { row: 1, serialNumber: 'SN-1', userId: 'helga@contoso.com', secret: Buffer.alloc(20, 7), algorithm: 'SHA1' as const, digits: 6 as const, period: 30 as const };

  /** A row imported with `allowed` writes allowed: what was stored and given. */
  async function importWith(allowed: number) {
    const stored: AnyEvent[] = [];
    const given: string[] = [];
    const store = memoryEventStore(stored);
    const users = {
      onHardwareReleased: () => undefined,
      onHardwareActivated: () => undefined,
      checkCanTakeToken: async () => undefined,
      holdsToken: async () => false,
      giveHardwareToken: async (_tenantId: string, userId: string, _token: unknown, claim: { check: () => Promise<void> }) => {
        await claim.check();
        given.push(userId);
      },
    } as unknown as UserSettingsService;
    const inventory = { put: async () => true } as unknown as OathInventory;
    const service = new OathTokensService({ store, users, inventory, keyring, log });
    let asked = 0;
    const mayWrite = () => {
      if (++asked > allowed) throw new Error('the worker may no longer write');
    };
    const outcome = await service.importToken(job, { ...parsed, secret: Buffer.from(parsed.secret) }, new Date(), mayWrite).catch((error: Error) => error.message);
    return { outcome, stored: stored.map((e) => e.type), given, asked };
  }

  it('refused its first write, the row stores nothing', async () => {
    assert.deepEqual(await importWith(0), { outcome: 'the worker may no longer write', stored: [], given: [], asked: 1 });
  });

  it('refused its second, the token is imported but not assigned; refused its third, assigned but not given to the user', async () => {
    const second = await importWith(1);
    assert.equal(second.outcome, 'the worker may no longer write');
    assert.equal(second.stored.length, 1);
    assert.deepEqual(second.given, []);
    const third = await importWith(2);
    assert.equal(third.outcome, 'the worker may no longer write');
    assert.equal(third.stored.length, 2);
    assert.deepEqual(third.given, []);
  });

  it('allowed every write, the row is imported, assigned and given, each write asked for once', async () => {
    const all = await importWith(10);
    assert.deepEqual([all.outcome, all.stored.length, all.given, all.asked], [{ imported: true }, 2, ['helga@contoso.com'], 3]);
  });
});
