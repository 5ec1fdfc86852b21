import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateDataKey, loadKeyring } from '@mfa/crypto';
import type { Delivery, EventPublisher } from '@mfa/messaging';
import { sealPersonalData } from '@mfa/service-kit';
import { createLogger } from '@mfa/telemetry';
import { challengeStartedV2, testChallenge, testUser } from '@mfa/testing';
import type { SendClaim } from '../adapters/send-guard.js';
import { VoiceCallService, type VoiceOptions } from './voice-call.service.js';

const { keyring } = loadKeyring({ NODE_ENV: 'test' });

/**
 * Placing a call, with what surrounds Twilio failing after it accepted the call: the claim on the
 * call must stand (a redelivery would otherwise call the user a second time) and voice must not be
 * marked failed while the phone rings. Stand-ins record what the service did.
 */
describe('placing a voice call', () => {
  function setUp(failing: { setCallSid?: boolean; guardSent?: boolean; publishes?: number }) {
    const user = testUser({ profile: { phoneNumber: '+14155550142' } });
    const now = new Date();
    const challenge = testChallenge(user, { method: 'voice', startedAt: now.toISOString(), expiresAt: new Date(now.getTime() + 180_000).toISOString() });
    const { dataKey, wrapped } = generateDataKey(keyring, user.tenantId, user.userId, 1);
    const event = challengeStartedV2(challenge, sealPersonalData(dataKey, { tenantId: user.tenantId, userId: user.userId, purpose: 'challenge' }, user.profile));
    event.data.delivery = { channel: 'voice', callerId: '+15005550006', pinMode: false, fraudCode: null };
    const did: string[] = [];
    let claim: SendClaim = { kind: 'claimed' };
    let publishFailures = failing.publishes ?? 0;
    let callSid: string | undefined;
    const options: VoiceOptions = {
      keys: { get: async () => ({ ...dataKey, wrapped }) },
      provider: {
        name: 'twilio',
        placeCall: async () => {
          did.push('call placed');
          return { callSid: `CA${did.length}` };
        },
      },
      webhookBaseUrl: 'https://mfa.example.com',
      authToken: 'token',
      ringSeconds: 30,
      publisher: {
        publish: async (_subject: string, published: { type: string }) => {
          if (publishFailures-- > 0) throw new Error('no JetStream ack');
          did.push(`published ${published.type}`);
          return { seq: 1, duplicate: false };
        },
      } as unknown as EventPublisher,
      guard: {
        claim: async () => claim,
        recorded: async () => undefined,
        sent: async (_id, provider, callSid) => {
          if (failing.guardSent) throw new Error('Redis down');
          claim = { kind: 'sent', provider, providerMessageId: callSid };
        },
        release: async () => {
          did.push('claim released');
          claim = { kind: 'claimed' };
        },
        undeliverable: async () => {
          did.push('voice marked failed');
        },
      },
      phoneThrottle: { admit: async () => ({ admitted: true }) as never },
      calls: {
        create: async () => undefined,
        setCallSid: async (_id: string, sid: string) => {
          if (failing.setCallSid) throw new Error('Redis down');
          callSid = sid;
        },
        read: async () => (callSid ? { callSid } : undefined),
      } as unknown as VoiceOptions['calls'],
      recordings: {} as VoiceOptions['recordings'],
      internal: {} as VoiceOptions['internal'],
      log: createLogger('voice-test', { level: 'error' }),
    };
    const msg = { working: () => undefined } as unknown as Delivery['msg'];
    const lapse = () => (claim = { kind: 'claimed' });
    return { service: new VoiceCallService(options), delivery: { event, msg } as Delivery, did, lapse };
  }

  it('given Redis failing to record the call, then the call still counts as placed: nothing released, nothing marked failed', async () => {
    const { service, delivery, did } = setUp({ setCallSid: true, guardSent: true });
    await service.place(delivery);
    assert.deepEqual(did, ['call placed', 'published VoiceCallPlaced']);
  });

  it('given the placed call not published, then the request is tried again and publishes the same call, placing no second one', async () => {
    const { service, delivery, did } = setUp({ publishes: 3 });
    await assert.rejects(service.place(delivery), /no JetStream ack/);
    assert.deepEqual(did, ['call placed']);
    await service.place(delivery);
    assert.deepEqual(did, ['call placed', 'published VoiceCallPlaced']);
  });

  it('given the call not recorded in the guard, not published, and its claim lapsed before the redelivery, then the call record stops a second call', async () => {
    const { service, delivery, did, lapse } = setUp({ guardSent: true, publishes: 3 });
    await assert.rejects(service.place(delivery), /no JetStream ack/);
    lapse();
    await service.place(delivery);
    assert.deepEqual(did, ['call placed', 'published VoiceCallPlaced']);
  });
});
