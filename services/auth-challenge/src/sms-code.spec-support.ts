import type { JetStreamManager } from '@nats-io/jetstream';
import { EventSubjects, Streams } from '@mfa/contracts';
import { open, SealContext, type Keyring } from '@mfa/crypto';
import { eventually } from '@mfa/testing';

/** Tests only: the SMS code of a challenge, opened from its SMS request event as dispatch would. */
export function smsCodeFromLog(jsm: JetStreamManager, keyring: Keyring, challengeId: string): Promise<string> {
  return eventually(async () => {
    const msg = await jsm.direct.getMessage(Streams.challenges.name, { last_by_subj: EventSubjects.smsRequested });
    const event = msg?.json<{ tenantId: string; data: { challengeId: string; delivery: { sealedCode: string } } }>();
    if (event?.data.challengeId !== challengeId) return undefined;
    return open(keyring, event.data.delivery.sealedCode, SealContext.smsCode(event.tenantId, challengeId)).toString('utf8');
  }, 5000, 'the SMS request event');
}
