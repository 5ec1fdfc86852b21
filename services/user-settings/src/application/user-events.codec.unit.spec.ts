import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventSubjects, parseEvent, type AnyEvent } from '@mfa/contracts';
import { dataKeyGeneration, generateDataKey, keyringFromMasterKey } from '@mfa/crypto';
import { openPersonalData, type UserDataKey, type UserDataKeys } from '@mfa/service-kit';
import { testUser, userErased, userProfileChanged, userRegistered } from '@mfa/testing';
import { domainEvent } from '../domain/events.js';
import { UserEventCodec } from './user-events.codec.js';

const keyring = keyringFromMasterKey(Buffer.alloc(32, 9));
const helga = testUser();
const ref = { subject: EventSubjects.user(helga.tenantId, helga.userId), tenantId: helga.tenantId, aggregateId: helga.userId };
const now = new Date('2025-06-01T12:00:00.000Z');
const owner = { tenantId: helga.tenantId, userId: helga.userId, purpose: 'profile' as const };

/** The user's keys by generation, in memory; generations listed in `erased` are destroyed. */
class MemoryKeys {
  readonly keys = new Map<number, UserDataKey>();
  readonly erased = new Set<number>();
  readonly asked: number[] = [];
  async getOrCreate(_tenantId: string, _userId: string, options: { minGen?: number } = {}): Promise<UserDataKey> {
    const gen = Math.max(options.minGen ?? 1, ...this.keys.keys());
    if (!this.keys.has(gen)) {
      const { dataKey, wrapped } = generateDataKey(keyring, helga.tenantId, helga.userId, gen);
      this.keys.set(gen, { ...dataKey, wrapped });
    }
    return this.keys.get(gen)!;
  }
  async get(_tenantId: string, _userId: string, gen: number): Promise<UserDataKey | 'erased' | undefined> {
    this.asked.push(gen);
    return this.erased.has(gen) ? 'erased' : this.keys.get(gen);
  }
}

const codecWith = (keys: MemoryKeys) => new UserEventCodec(keys as unknown as UserDataKeys);
const piiOf = (event: AnyEvent) => (event.data as { pii?: string }).pii;

describe('user events: personal data sealed in the log, in clear for the deciders', () => {
  it('seals UserRegistered and UserProfileChanged into v2: personal fields in pii, the language plain', async () => {
    const keys = new MemoryKeys();
    const [registered, changed] = await codecWith(keys).seal(
      ref,
      [
        domainEvent('UserRegistered', { userId: helga.userId, ...helga.profile }, now),
        domainEvent('UserProfileChanged', { email: 'new@contoso.com', language: 'en-GB' }, now),
      ],
      now,
      1,
    );
    assert.deepEqual([registered!.type, registered!.version, changed!.type, changed!.version], ['UserRegistered', 2, 'UserProfileChanged', 2]);
    for (const event of [registered!, changed!]) {
      parseEvent(event);
      const text = JSON.stringify(event);
      for (const value of [helga.profile.displayName!, helga.profile.email!, helga.profile.phoneNumber!, 'new@contoso.com']) {
        assert.ok(!text.includes(value), `${value} in clear`);
      }
    }
    assert.deepEqual(registered!.data, { userId: helga.userId, language: 'sv-SE', pii: piiOf(registered!) });
    const key = keys.keys.get(1)!;
    assert.deepEqual(openPersonalData(key, owner, piiOf(registered!)!), {
      displayName: helga.profile.displayName,
      email: helga.profile.email,
      phoneNumber: helga.profile.phoneNumber,
    });
    assert.deepEqual(changed!.data, { language: 'en-GB', pii: piiOf(changed!) });
  });

  it('writes no pii when there is nothing personal, and keeps other events at version 1', async () => {
    const [bare, erased] = await codecWith(new MemoryKeys()).seal(
      ref,
      [domainEvent('UserRegistered', { userId: helga.userId }, now), domainEvent('UserErased', { userId: helga.userId, gen: 1 }, now)],
      now,
      1,
    );
    assert.deepEqual([bare!.version, bare!.data], [2, { userId: helga.userId }]);
    assert.deepEqual([erased!.type, erased!.version], ['UserErased', 1]);
  });

  it('seals under at least the generation after the last erasure', async () => {
    const keys = new MemoryKeys();
    const [event] = await codecWith(keys).seal(ref, [domainEvent('UserRegistered', { userId: helga.userId, ...helga.profile }, now)], now, 3);
    assert.equal(dataKeyGeneration(piiOf(event!)!), 3);
  });

  it('opens v2 into the v1 shape the deciders fold, and passes v1 (written before data keys) as it is', async () => {
    const keys = new MemoryKeys();
    const codec = codecWith(keys);
    const sealed = await codec.seal(ref, [domainEvent('UserRegistered', { userId: helga.userId, ...helga.profile }, now)], now, 1);
    const v1 = userProfileChanged(helga, { data: { displayName: 'Helga N.' } });
    const opened = await codec.open(ref, [...sealed, v1]);
    assert.deepEqual(opened[0]!.version, 1);
    assert.deepEqual(opened[0]!.data, { userId: helga.userId, ...helga.profile });
    assert.equal(opened[1], v1);
  });

  it('does not open what came before the last erasure (its key is gone), and refuses a missing key after it', async () => {
    const keys = new MemoryKeys();
    const codec = codecWith(keys);
    const first = await codec.seal(ref, [domainEvent('UserRegistered', { userId: helga.userId, ...helga.profile }, now)], now, 1);
    keys.erased.add(1);
    const erased = userErased(helga, 1);
    const second = await codec.seal(ref, [domainEvent('UserRegistered', { userId: helga.userId, displayName: 'Helga again' }, now)], now, 2);
    const opened = await codec.open(ref, [...first, erased, ...second]);
    assert.deepEqual(keys.asked, [2], 'only the key after the erasure is looked up');
    assert.deepEqual(opened[0]!.data, { userId: helga.userId, language: 'sv-SE' });
    assert.deepEqual(opened[2]!.data, { userId: helga.userId, displayName: 'Helga again' });
    keys.keys.delete(2);
    await assert.rejects(codec.open(ref, [...first, erased, ...second]), /generation 2\) of a user event is missing/);
    // A v1 registration before the erasure needs no key at all.
    assert.deepEqual((await codec.open(ref, [userRegistered(helga), erased]))[0]!.data, { userId: helga.userId, ...helga.profile });
  });
});
