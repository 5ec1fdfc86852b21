import { z } from 'zod';
import { ContractError, EventSubjects, Streams } from '@mfa/contracts';
import { generateDataKey, rewrapDataKey, unwrapDataKey, userTag, type DataKey, type Keyring } from '@mfa/crypto';
import { deleteMessageIfPresent, isWrongLastSequence, type NatsClients } from '@mfa/messaging';
import { counter } from '@mfa/telemetry';

const lookups = counter('mfa_data_key_lookups_total', 'Reads of users’ data keys from MFA_USER_KEYS (cache misses), by outcome', ['outcome']);

/** A user's data key as the services hold it: usable, and as stored (wrapped with the master keyring). */
export interface UserDataKey extends DataKey {
  readonly wrapped: string;
}

/** What the user's key subject holds: the current key, or the tombstone of an erased one. */
export type DataKeyEntry =
  | { kind: 'key'; gen: number; seq: number; dataKey: UserDataKey }
  | { kind: 'erased'; gen: number; seq: number; erasedAt: string };

const StoredKey = z.object({ gen: z.int().positive(), wrappedKey: z.string().min(1).max(1024) });
const StoredTombstone = z.object({ gen: z.int().positive(), erasedAt: z.string().max(64) });

/** A record of MFA_USER_KEYS as stored: a wrapped data key, or an erasure's tombstone. */
export type StoredDataKey = { kind: 'key'; gen: number; wrappedKey: string } | { kind: 'erased'; gen: number; erasedAt: string };

/** The record a message of MFA_USER_KEYS holds, or undefined when it is neither a key nor a tombstone. */
export function parseStoredDataKey(body: unknown): StoredDataKey | undefined {
  const key = StoredKey.safeParse(body);
  if (key.success) return { kind: 'key', ...key.data };
  const tombstone = StoredTombstone.safeParse(body);
  return tombstone.success ? { kind: 'erased', ...tombstone.data } : undefined;
}

/**
 * Of a user's records under previous master keys' tags, the one to move: the latest generation, a
 * tombstone winning a tie. After two rotations and an interrupted move, an older record must not
 * take the newer key's place (the newer key would be left, while a new one is made for its generation).
 */
export function latestDataKeyRecord<R extends { stored: StoredDataKey }>(records: readonly R[]): R | undefined {
  return records.reduce<R | undefined>(
    (best, record) => (!best || record.stored.gen > best.stored.gen || (record.stored.gen === best.stored.gen && record.stored.kind === 'erased') ? record : best),
    undefined,
  );
}

/**
 * The user was erased after the caller loaded them (the data key's subject holds the erasure's
 * tombstone): the caller's view is stale, and trying again (a fresh load sees the erasure) answers.
 * `unavailable`, so a consumer redelivers and a command's caller retries.
 */
export class UserErasedMeanwhileError extends ContractError {
  // Its name stays ContractError's: what is transient is told by name and code (isTransientDependencyError).
  /**
   * `gen`: the tombstone's generation. A caller that reads the user's events again afterwards and
   * finds no erasure of it there knows the log and the key store disagree for good (a restore of
   * the two from different moments): an erasure records its event before it destroys the key.
   */
  constructor(readonly gen?: number) {
    super('unavailable', 'the user was erased meanwhile; try again');
  }
}

export class DataKeyStoreError extends Error {
  override name = 'DataKeyStoreError';
}

interface UserDataKeysOptions {
  /** How long a key read from the stream is used without reading it again (default 5 minutes). */
  ttlMs?: number;
  /** Users whose keys are held at most; the oldest entry goes first (default 10,000). */
  maxEntries?: number;
  now?: () => number;
}

/** Tries of a conditional write that lost to a concurrent writer before giving up. */
const MAX_WRITE_ATTEMPTS = 5;

/**
 * The users' data keys (crypto-shredding), in MFA_USER_KEYS: one subject per user, named by the
 * user's keyed hash tag, holding one message (`maxMsgsPerSubject` 1): `{gen, wrappedKey}`, or once
 * the user is erased the tombstone `{gen, erasedAt}`. Keys are written with
 * `expect.lastSubjectSequence`, so concurrent registrations agree on one key. Erasing deletes the
 * key's message with `erase` (the server overwrites the stored bytes) before the tombstone
 * replaces it.
 *
 * Generations: a key created after a tombstone of generation n is generation n + 1; a value
 * sealed under generation g is unreadable for good once the subject holds a tombstone ≥ g or a
 * key > g. Keys read are cached for a few minutes (bounded); a service that handles UserErased
 * evicts the user at once.
 *
 * The tag is keyed by the master key, so a rotation renames every user's subject: a user found
 * only under a previous key's tag is moved over on first read (the key wrapped again with the
 * current master key, the old message deleted with erase).
 */
export class UserDataKeys {
  private readonly cache = new Map<string, { entry: DataKeyEntry; expiresAt: number }>();
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;

  constructor(
    private readonly nats: Pick<NatsClients, 'js' | 'jsm'>,
    private readonly keyring: Keyring,
    options: UserDataKeysOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 5 * 60_000;
    this.maxEntries = options.maxEntries ?? 10_000;
    this.now = options.now ?? Date.now;
    Object.defineProperty(this, 'cache', { enumerable: false });
  }

  /**
   * The user's current key, created when the user has none (or only a tombstone). `minGen` is the
   * lowest generation the caller may use: one more than the last erasure its aggregate recorded,
   * so a key the erasure has not destroyed yet is never handed out again.
   */
  async getOrCreate(tenantId: string, userId: string, options: { minGen?: number } = {}): Promise<UserDataKey> {
    const minGen = options.minGen ?? 1;
    const tag = userTag(this.keyring, tenantId, userId);
    for (let attempt = 1; attempt <= MAX_WRITE_ATTEMPTS; attempt++) {
      // After a lost race, read from the stream leader: a replica answering direct gets may lag.
      const entry = (attempt === 1 ? this.cached(tag) : undefined) ?? (await this.read(tag, tenantId, userId, attempt > 1));
      if (entry?.kind === 'key' && entry.gen >= minGen) return entry.dataKey;
      if (entry?.kind === 'key') {
        // The aggregate says this generation was erased: finish that erasure first.
        await this.erase(tenantId, userId, minGen - 1, new Date(this.now()));
        continue;
      }
      // Only a caller that has seen the erasure (its aggregate's minGen is past the tombstone) may
      // create the next generation: a caller that loaded the user before the erasure would create
      // a key that the erasure, already done, never destroys, and seal the erased user's data in it.
      if (entry?.kind === 'erased' && entry.gen >= minGen) throw new UserErasedMeanwhileError(entry.gen);
      const gen = Math.max(minGen, entry ? entry.gen + 1 : 1);
      const { dataKey, wrapped } = generateDataKey(this.keyring, tenantId, userId, gen);
      try {
        const ack = await this.nats.js.publish(EventSubjects.userDataKey(tag), JSON.stringify({ gen, wrappedKey: wrapped }), {
          expect: { lastSubjectSequence: entry?.seq ?? 0 },
        });
        const created: DataKeyEntry = { kind: 'key', gen, seq: ack.seq, dataKey: { ...dataKey, wrapped } };
        this.remember(tag, created);
        return created.dataKey;
      } catch (error) {
        if (!isWrongLastSequence(error)) throw error;
        this.cache.delete(tag);
      }
    }
    throw new DataKeyStoreError('the user’s data key changed concurrently too often');
  }

  /**
   * The key of generation `gen`: the key, `'erased'` when that generation was destroyed, or
   * undefined when the stream knows no such key (not created, or not visible yet).
   */
  async get(tenantId: string, userId: string, gen: number): Promise<UserDataKey | 'erased' | undefined> {
    const tag = userTag(this.keyring, tenantId, userId);
    const hit = this.cached(tag);
    if (hit && hit.gen >= gen) return answer(hit, gen);
    let entry = await this.read(tag, tenantId, userId, false);
    if (!entry || entry.gen < gen) entry = await this.read(tag, tenantId, userId, true);
    return entry && entry.gen >= gen ? answer(entry, gen) : undefined;
  }

  /** What the user's subject holds now, read from the stream (not the cache). */
  current(tenantId: string, userId: string): Promise<DataKeyEntry | undefined> {
    return this.read(userTag(this.keyring, tenantId, userId), tenantId, userId, true);
  }

  /**
   * Destroys the user's key of generation `gen` and any older one: its message is deleted with
   * erase (overwritten on disk, on every replica), then a tombstone takes its place. Idempotent;
   * a key of a later generation (the user registered again) is left alone.
   */
  async erase(tenantId: string, userId: string, gen: number, erasedAt: Date): Promise<void> {
    const tag = userTag(this.keyring, tenantId, userId);
    this.cache.delete(tag);
    // A copy left under a previous master key's tag (a move interrupted) goes too.
    for (const previous of this.previousTags(tag, tenantId, userId)) {
      const old = await this.last(previous, true);
      if (old && StoredKey.safeParse(old.json()).success) await this.deleteErasing(old.seq);
    }
    for (let attempt = 1; attempt <= MAX_WRITE_ATTEMPTS; attempt++) {
      const entry = await this.read(tag, tenantId, userId, true);
      if (entry && entry.gen > gen) return;
      if (entry?.kind === 'erased' && entry.gen === gen) return;
      if (entry?.kind === 'key') await this.deleteErasing(entry.seq);
      try {
        // With the key's message gone, the subject is empty; a tombstone replaces an older tombstone.
        await this.nats.js.publish(EventSubjects.userDataKey(tag), JSON.stringify({ gen, erasedAt: erasedAt.toISOString() }), {
          expect: { lastSubjectSequence: entry?.kind === 'erased' ? entry.seq : 0 },
        });
        this.cache.delete(tag);
        return;
      } catch (error) {
        if (!isWrongLastSequence(error)) throw error;
      }
    }
    throw new DataKeyStoreError('the user’s data key changed concurrently too often');
  }

  /** Forgets the user's cached key (on UserErased). */
  evict(tenantId: string, userId: string): void {
    this.cache.delete(userTag(this.keyring, tenantId, userId));
  }

  private cached(tag: string): DataKeyEntry | undefined {
    const hit = this.cache.get(tag);
    if (!hit) return undefined;
    if (hit.expiresAt <= this.now()) {
      this.cache.delete(tag);
      return undefined;
    }
    return hit.entry;
  }

  private remember(tag: string, entry: DataKeyEntry): void {
    this.cache.delete(tag);
    this.cache.set(tag, { entry, expiresAt: this.now() + this.ttlMs });
    while (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
  }

  /** Deletes a message so that the server overwrites its stored bytes; one already gone is fine. */
  private async deleteErasing(seq: number): Promise<void> {
    await deleteMessageIfPresent(this.nats.jsm, Streams.userKeys.name, seq, true);
  }

  private last(tag: string, fromLeader: boolean) {
    const query = { last_by_subj: EventSubjects.userDataKey(tag) };
    return fromLeader
      ? this.nats.jsm.streams.getMessage(Streams.userKeys.name, query)
      : this.nats.jsm.direct.getMessage(Streams.userKeys.name, query);
  }

  private previousTags(tag: string, tenantId: string, userId: string): string[] {
    return this.keyring.previous.map((k) => userTag(k, tenantId, userId)).filter((t) => t !== tag);
  }

  /** Brings the user's entry over from a previous master key's tag, if there is one there. */
  private async moveFromPreviousTag(tag: string, tenantId: string, userId: string): Promise<boolean> {
    const records: Array<{ seq: number; body: unknown; stored: StoredDataKey }> = [];
    for (const previous of this.previousTags(tag, tenantId, userId)) {
      const msg = await this.last(previous, true);
      const body: unknown = msg?.json();
      const stored = parseStoredDataKey(body);
      // Unreadable: left for the operator (rewrap.js counts it).
      if (msg && stored) records.push({ seq: msg.seq, body, stored });
    }
    const old = latestDataKeyRecord(records);
    if (!old) return false;
    const { stored } = old;
    const moved = stored.kind === 'key' ? { gen: stored.gen, wrappedKey: rewrapDataKey(this.keyring, tenantId, userId, stored.gen, stored.wrappedKey) } : old.body;
    try {
      await this.nats.js.publish(EventSubjects.userDataKey(tag), JSON.stringify(moved), { expect: { lastSubjectSequence: 0 } });
      await this.deleteErasing(old.seq);
    } catch (error) {
      // Another instance moved it first, or the user got a key meanwhile: theirs stands, and the old
      // copy stays (it may be the only one of its key; rewrap.js deletes it once it is superseded).
      if (!isWrongLastSequence(error)) throw error;
    }
    lookups.inc({ outcome: 'moved' });
    return true;
  }

  private async read(tag: string, tenantId: string, userId: string, fromLeader: boolean): Promise<DataKeyEntry | undefined> {
    let msg = await this.last(tag, fromLeader);
    if (!msg && (await this.moveFromPreviousTag(tag, tenantId, userId))) msg = await this.last(tag, true);
    if (!msg) {
      lookups.inc({ outcome: 'absent' });
      this.cache.delete(tag);
      return undefined;
    }
    const body: unknown = msg.json();
    const key = StoredKey.safeParse(body);
    let entry: DataKeyEntry;
    if (key.success) {
      const { gen, wrappedKey } = key.data;
      entry = { kind: 'key', gen, seq: msg.seq, dataKey: { ...unwrapDataKey(this.keyring, tenantId, userId, gen, wrappedKey), wrapped: wrappedKey } };
      lookups.inc({ outcome: 'key' });
    } else {
      const tombstone = StoredTombstone.safeParse(body);
      if (!tombstone.success) throw new DataKeyStoreError(`unreadable data key record at sequence ${msg.seq}`);
      entry = { kind: 'erased', gen: tombstone.data.gen, seq: msg.seq, erasedAt: tombstone.data.erasedAt };
      lookups.inc({ outcome: 'erased' });
    }
    this.remember(tag, entry);
    return entry;
  }
}

function answer(entry: DataKeyEntry, gen: number): UserDataKey | 'erased' {
  return entry.kind === 'key' && entry.gen === gen ? entry.dataKey : 'erased';
}
