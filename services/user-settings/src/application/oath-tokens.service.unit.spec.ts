import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AnyEvent } from '@mfa/contracts';
import { loadKeyring } from '@mfa/crypto';
import type { Logger } from '@mfa/telemetry';
import type { EventStore } from '../adapters/event-store.js';
import type { OathInventory } from '../adapters/oath-inventory.js';
import { OathTokensService } from './oath-tokens.service.js';
import type { UserSettingsService } from './user-settings.service.js';

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
  const store = {
    load: async () => ({ events: [...stored], lastSeq: stored.length }),
    append: async (_subject: string, events: readonly AnyEvent[]) => {
      stored.push(...events);
      return stored.length;
    },
  } as unknown as EventStore;
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
