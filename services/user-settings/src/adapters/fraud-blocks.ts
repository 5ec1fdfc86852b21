import { JetStreamApiCodes, JetStreamApiError, type JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, parseEvent, Streams } from '@mfa/contracts';

/**
 * The user's block as the fraud service recorded it (MFA_FRAUD, the user's subject: its last event
 * carries the whole state), for users.get: one direct get.
 */
export class FraudBlocks {
  constructor(private readonly jsm: JetStreamManager) {}

  async of(tenantId: string, userId: string, now: Date): Promise<{ until: string; reason: string } | null> {
    const last = await this.jsm.streams.getMessage(Streams.fraud.name, { last_by_subj: EventSubjects.fraudUser(tenantId, userId) }).catch((error: unknown) => {
      // A deployment whose fraud service never ran has no MFA_FRAUD stream: nobody is blocked.
      if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return null;
      throw error;
    });
    if (!last) return null;
    const event = parseEvent(last.json());
    if (event.type !== 'UserBlocked' || Date.parse(event.data.until) <= now.getTime()) return null;
    return { until: event.data.until, reason: event.data.reason };
  }
}
