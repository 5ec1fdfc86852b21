import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { resendProviders, resendSource, type EarlierSend } from './resend-policy.js';

const providers = ['twilio', 'smpp', 'console'];
const none = new Set<string>();
const sent = (provider: string, seq?: number): EarlierSend => ({ kind: 'sent', provider, ...(seq === undefined ? {} : { seq }) });

describe('resend providers', () => {
  it('starts after the provider that sent last, wrapping round, and keeps the failover order after it', () => {
    assert.deepEqual(resendProviders(providers, 'twilio', none), ['smpp', 'console', 'twilio']);
    assert.deepEqual(resendProviders(providers, 'smpp', none), ['console', 'twilio', 'smpp']);
    assert.deepEqual(resendProviders(providers, 'console', none), ['twilio', 'smpp', 'console']);
  });

  it('given one provider, then that one again', () => {
    assert.deepEqual(resendProviders(['twilio'], 'twilio', none), ['twilio']);
  });

  it('given no provider that sent (every one failed), or one no longer configured, then from the first', () => {
    assert.deepEqual(resendProviders(providers, undefined, none), providers);
    assert.deepEqual(resendProviders(providers, 'nexmo', none), providers);
  });

  it('puts providers whose circuit is open last: skipped for the first try, still reached by the failover', () => {
    assert.deepEqual(resendProviders(providers, 'twilio', new Set(['smpp'])), ['console', 'twilio', 'smpp']);
    assert.deepEqual(resendProviders(providers, 'twilio', new Set(['smpp', 'console'])), ['twilio', 'smpp', 'console']);
    assert.deepEqual(resendProviders(providers, 'twilio', new Set(providers)), ['smpp', 'console', 'twilio'], 'all open: the rotation as it is');
  });
});

describe('resend source', () => {
  it('given sends that succeeded, then the start is where they recorded it and the last of them names the provider', () => {
    assert.deepEqual(resendSource([sent('twilio', 42)], undefined), { kind: 'found', startedSeq: 42, lastProvider: 'twilio' });
    assert.deepEqual(resendSource([sent('twilio', 42), undefined, sent('console', 42), undefined], undefined), {
      kind: 'found',
      startedSeq: 42,
      lastProvider: 'console',
    });
  });

  it('given the start sent before sends recorded where it is, then a later send that did record it is enough', () => {
    assert.deepEqual(resendSource([sent('twilio'), sent('console', 42)], undefined), { kind: 'found', startedSeq: 42, lastProvider: 'console' });
  });

  it('given no send that succeeded, then the sequence a failed send left on the challenge, and no provider to come after', () => {
    assert.deepEqual(resendSource([undefined], 42), { kind: 'found', startedSeq: 42, lastProvider: undefined });
    assert.deepEqual(resendSource([sent('twilio'), undefined], 42), { kind: 'found', startedSeq: 42, lastProvider: 'twilio' });
  });

  it('given the start or an earlier resend still being sent, then unsettled: one send of a code at a time', () => {
    assert.deepEqual(resendSource([{ kind: 'in_progress' }], undefined), { kind: 'unsettled' });
    assert.deepEqual(resendSource([sent('twilio', 42), { kind: 'in_progress' }], undefined), { kind: 'unsettled' });
  });

  it('given the start not taken up yet, or sent without its sequence, then unsettled', () => {
    assert.deepEqual(resendSource([undefined, undefined], undefined), { kind: 'unsettled' });
    assert.deepEqual(resendSource([sent('twilio')], undefined), { kind: 'unsettled' });
  });
});
