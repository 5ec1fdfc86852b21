import type { JetStreamManager } from '@nats-io/jetstream';
import { parseEvent, Streams, unavailable, type EventOf } from '@mfa/contracts';
import { PoisonMessageError } from '@mfa/messaging';

/**
 * Challenge starts read back from MFA_CHALLENGES by stream sequence: a resend's code is sealed in
 * its challenge's ChallengeStarted and nowhere else. A stream get, which the stream's leader
 * answers, not a direct get, which a replica may answer before it has the message.
 */
export class ChallengeStarts {
  constructor(private readonly jsm: Pick<JetStreamManager, 'streams'>) {}

  /** The ChallengeStarted at `seq`, which must be this tenant's challenge's. */
  async read(seq: number, tenantId: string, challengeId: string): Promise<EventOf<'ChallengeStarted'>> {
    let msg: Awaited<ReturnType<JetStreamManager['streams']['getMessage']>>;
    try {
      msg = await this.jsm.streams.getMessage(Streams.challenges.name, { seq });
    } catch (error) {
      throw unavailable('the challenge stream could not be read; trying again later', error);
    }
    if (!msg) throw new PoisonMessageError(`no message at sequence ${seq} of ${Streams.challenges.name}`);
    let event: ReturnType<typeof parseEvent>;
    try {
      event = parseEvent(msg.json());
    } catch (cause) {
      throw new PoisonMessageError(`the message at sequence ${seq} is not an event`, { cause });
    }
    if (event.type !== 'ChallengeStarted' || event.tenantId !== tenantId || event.data.challengeId !== challengeId) {
      throw new PoisonMessageError(`the message at sequence ${seq} is not the start of this challenge`);
    }
    return event;
  }
}
