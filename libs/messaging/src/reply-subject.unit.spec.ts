import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isReplySubject } from './reply-subject.js';

describe('reply subjects a service answers', () => {
  it('answers client inboxes and the reply subjects the server writes itself', () => {
    for (const reply of ['_INBOX.3fRd0gwmYjZVOQgdnKa9qV.KBV7AAeG', '_INBOX_idp-example.BDLCLBYGOSuEolHlJFRO8y.QoOg6DhM', '_R_.abc.def', '$GNR.x.y._INBOX.z']) {
      assert.equal(isReplySubject(reply), true, reply);
    }
  });

  it('refuses anything a caller could aim at the event log or the JetStream API', () => {
    for (const reply of [
      'mfa.evt.challenge.approved',
      'mfa.state.keyring',
      'mfa.dlq.dispatch-sms',
      '$JS.API.STREAM.PURGE.MFA_CHALLENGES',
      '$JS.ACK.MFA_CHALLENGES.dispatch-sms.1.2.3.4.5',
      '_INBOXX.a',
      '_INBOX',
      '_INBOX.',
      '_INBOX_.a',
      'inbox.a',
    ]) {
      assert.equal(isReplySubject(reply), false, reply);
    }
  });
});
