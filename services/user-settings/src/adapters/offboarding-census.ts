import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, Streams } from '@mfa/contracts';
import { isNoMessageFound, isWrongLastSequence } from '@mfa/messaging';

/**
 * What a deleted tenant's offboarding found of the things it purges, recorded before it purges
 * them: each purge consumes its own count, so an offboarding resumed after an attempt that failed
 * or stopped midway reads the counts here instead (TenantOffboarding). Only counts, nothing of the
 * tenant's data. `deletedAt` names the deletion: a census of an earlier deletion of the same id is
 * not this one's.
 */
export interface OffboardingCensus {
  deletedAt: string;
  /** Hardware tokens (their subjects in MFA_USER_SETTINGS) before their events were purged. */
  hardwareTokens?: number;
  /** Objects of the tenant in each bucket before they were deleted, by bucket. */
  objects?: Record<string, number>;
}

/** Tries of a conditional write that lost to a concurrent writer before giving up. */
const MAX_WRITE_ATTEMPTS = 5;

/**
 * The census of each offboarding in MFA_STATE (one message per subject,
 * `EventSubjects.offboardingCensus`), written with compare-and-set, read from the stream
 * leader (a replica a little behind could miss what the attempt before wrote). Removed once
 * TenantErased holds the counts; one left by an instance that stopped in between is harmless.
 */
export class OffboardingCensusStore {
  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly stream: string = Streams.state.name,
  ) {}

  /**
   * Records what `add` adds to the deletion's census unless `has` says the census has it already
   * (an earlier attempt counted before it purged): the census as it stands afterwards.
   */
  async record(tenantId: string, deletedAt: string, has: (census: OffboardingCensus) => boolean, add: (census: OffboardingCensus) => OffboardingCensus): Promise<OffboardingCensus> {
    for (let attempt = 1; attempt <= MAX_WRITE_ATTEMPTS; attempt++) {
      const { census, seq } = await this.read(tenantId, deletedAt);
      if (has(census)) return census;
      const next = add(census);
      try {
        await this.js.publish(EventSubjects.offboardingCensus(tenantId), JSON.stringify(next), { expect: { lastSubjectSequence: seq } });
        return next;
      } catch (error) {
        if (!isWrongLastSequence(error)) throw error;
      }
    }
    throw new Error('the offboarding census changed concurrently too often');
  }

  /** The census is no longer needed (TenantErased recorded the counts). */
  async remove(tenantId: string): Promise<void> {
    await this.jsm.streams.purge(this.stream, { filter: EventSubjects.offboardingCensus(tenantId) });
  }

  private async read(tenantId: string, deletedAt: string): Promise<{ census: OffboardingCensus; seq: number }> {
    const msg = await this.jsm.streams.getMessage(this.stream, { last_by_subj: EventSubjects.offboardingCensus(tenantId) }).catch((error: unknown) => {
      if (isNoMessageFound(error)) return null;
      throw error;
    });
    if (!msg) return { census: { deletedAt }, seq: 0 };
    const stored = parse(msg.string());
    return { census: stored?.deletedAt === deletedAt ? stored : { deletedAt }, seq: msg.seq };
  }
}


function parse(body: string): OffboardingCensus | undefined {
  try {
    const value = JSON.parse(body) as Partial<OffboardingCensus>;
    if (typeof value.deletedAt !== 'string') return undefined;
    return {
      deletedAt: value.deletedAt,
      ...(typeof value.hardwareTokens === 'number' ? { hardwareTokens: value.hardwareTokens } : {}),
      ...(value.objects && typeof value.objects === 'object' ? { objects: value.objects } : {}),
    };
  } catch {
    return undefined;
  }
}
