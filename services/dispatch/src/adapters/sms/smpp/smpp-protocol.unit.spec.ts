import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeText, isTransientStatus, parseReceipt, smppAbsoluteTime, smppAddress, smppValidity, smppValidityPeriod, statusName, submitWindow } from './smpp-protocol.js';
import { parseSmppUrl } from './smpp.provider.js';

const receiptText = (stat: string, err = '000', id = '0a1b2c3d') =>
  `id:${id} sub:001 dlvrd:001 submit date:2611301512 done date:2611301513 stat:${stat} err:${err} text:483920 is your veri`;
const HOUR = 3600_000;
/** 2026-11-30 15:12 on the SMSC's clock, in whatever zone it keeps. */
const SUBMITTED = { from: Date.UTC(2026, 10, 30, 15, 12) - 16 * HOUR, to: Date.UTC(2026, 10, 30, 15, 13) + 14 * HOUR };

describe('SMPP delivery receipts', () => {
  it('reads the v3.4 TLVs first: receipted_message_id and message_state', () => {
    assert.deepEqual(parseReceipt({ esm_class: 0x04, receipted_message_id: 'ff01', message_state: 2, short_message: { message: receiptText('UNDELIV', '001', 'other') } }), {
      kind: 'final',
      messageId: 'ff01',
      status: 'delivered',
      submitted: SUBMITTED,
    });
    assert.deepEqual(parseReceipt({ esm_class: 0x04, receipted_message_id: 'ff01', message_state: 5, network_error_code: Buffer.from([3, 0, 34]) }), {
      kind: 'final',
      messageId: 'ff01',
      status: 'undelivered',
      errorCode: 'GSM 34',
    });
  });

  it('reads the Appendix B text of SMSCs that send no TLVs', () => {
    assert.deepEqual(parseReceipt({ esm_class: 0x04, short_message: { message: receiptText('DELIVRD') } }), { kind: 'final', messageId: '0a1b2c3d', status: 'delivered', submitted: SUBMITTED });
    assert.deepEqual(parseReceipt({ esm_class: 0x04, short_message: { message: receiptText('UNDELIV', '034') } }), {
      kind: 'final',
      messageId: '0a1b2c3d',
      status: 'undelivered',
      errorCode: '034',
      submitted: SUBMITTED,
    });
    // The text may come in message_payload instead, and in lower case.
    assert.deepEqual(parseReceipt({ esm_class: 0x04, message_payload: { message: receiptText('expired').toLowerCase() } }), {
      kind: 'final',
      messageId: '0a1b2c3d',
      status: 'undelivered',
      submitted: SUBMITTED,
    });
  });

  it('takes EXPIRED, DELETED, UNDELIV and REJECTD for undelivered, and records no intermediate state', () => {
    for (const stat of ['EXPIRED', 'DELETED', 'UNDELIV', 'REJECTD']) {
      assert.equal((parseReceipt({ esm_class: 0x04, short_message: { message: receiptText(stat) } }) as { status?: string }).status, 'undelivered', stat);
    }
    for (const stat of ['ENROUTE', 'ACCEPTD', 'UNKNOWN']) {
      assert.deepEqual(parseReceipt({ esm_class: 0x04, short_message: { message: receiptText(stat) } }), { kind: 'intermediate', messageId: '0a1b2c3d', state: stat });
    }
    assert.equal(parseReceipt({ esm_class: 0x04, receipted_message_id: 'x1', message_state: 1 }).kind, 'intermediate');
  });

  it('tells messages from handsets and receipts it cannot read apart from receipts', () => {
    assert.deepEqual(parseReceipt({ esm_class: 0x00, short_message: { message: receiptText('DELIVRD') } }), { kind: 'not_a_receipt' });
    assert.deepEqual(parseReceipt({ esm_class: 0x08, short_message: { message: receiptText('DELIVRD') } }), { kind: 'not_a_receipt' }, 'an SME acknowledgement');
    assert.deepEqual(parseReceipt({ esm_class: 0x04, short_message: { message: 'stat:DELIVRD err:000' } }), { kind: 'malformed', reason: 'no message id' });
    assert.deepEqual(parseReceipt({ esm_class: 0x04, short_message: { message: 'id:abc sub:001' } }), { kind: 'malformed', reason: 'no message state' });
    assert.deepEqual(parseReceipt({ esm_class: 0x04, receipted_message_id: 'a'.repeat(66), message_state: 2 }), { kind: 'malformed', reason: 'no message id' });
    assert.deepEqual(parseReceipt({ esm_class: 0x04 }), { kind: 'malformed', reason: 'no message id' });
    assert.deepEqual(parseReceipt({ esm_class: 'nonsense', short_message: 42 }), { kind: 'not_a_receipt' });
  });

  it("reads the submit date as every instant it can be in any time zone (-12:00 to +14:00), with two hours' slack for the SMSC's clock", () => {
    assert.deepEqual(submitWindow('2611301512'), SUBMITTED);
    // Some SMSCs write seconds: then the window is to the second.
    assert.deepEqual(submitWindow('261130151207'), { from: Date.UTC(2026, 10, 30, 15, 12, 7) - 16 * HOUR, to: Date.UTC(2026, 10, 30, 15, 12, 8) + 14 * HOUR });
    for (const notADate of [undefined, '', '26113015', '2613301512', '2602301512', '2611302512', '2611301560', '26113015120x', '2611301512070']) {
      assert.equal(submitWindow(notADate), undefined, String(notADate));
    }
    // A receipt without the text (TLVs only) carries no window: nothing is checked against it.
    assert.equal((parseReceipt({ esm_class: 0x04, receipted_message_id: 'ff01', message_state: 2 }) as { submitted?: unknown }).submitted, undefined);
  });

  it('ignores err:000 and error codes that are not codes', () => {
    const undelivered = (err: string) => parseReceipt({ esm_class: 0x04, short_message: { message: receiptText('UNDELIV', err) } });
    assert.equal((undelivered('000') as { errorCode?: string }).errorCode, undefined);
    assert.equal((undelivered('<script>') as { errorCode?: string }).errorCode, undefined);
    assert.equal((undelivered('00B') as { errorCode?: string }).errorCode, '00B');
  });
});

describe('SMPP errors', () => {
  it('retries throttling, a full queue, SMSC system errors and a lost bind; not invalid destinations or refusals', () => {
    for (const name of ['ESME_RTHROTTLED', 'ESME_RMSGQFUL', 'ESME_RSYSERR', 'ESME_RX_T_APPN', 'ESME_RINVBNDSTS']) {
      assert.equal(isTransientStatus(status(name)), true, name);
    }
    for (const name of ['ESME_RINVDSTADR', 'ESME_RINVSRCADR', 'ESME_RINVDCS', 'ESME_RSUBMITFAIL', 'ESME_RX_P_APPN', 'ESME_RINVMSGLEN']) {
      assert.equal(isTransientStatus(status(name)), false, name);
    }
  });

  it('names statuses, and shows the number of those the specification does not name', () => {
    assert.equal(statusName(0x58), 'ESME_RTHROTTLED');
    assert.equal(statusName(0x0400), '0x00000400');
  });
});

const NAMES: Record<string, number> = {
  ESME_RTHROTTLED: 0x58,
  ESME_RMSGQFUL: 0x14,
  ESME_RSYSERR: 0x08,
  ESME_RX_T_APPN: 0x64,
  ESME_RINVBNDSTS: 0x04,
  ESME_RINVDSTADR: 0x0b,
  ESME_RINVSRCADR: 0x0a,
  ESME_RINVDCS: 0x104,
  ESME_RSUBMITFAIL: 0x45,
  ESME_RX_P_APPN: 0x65,
  ESME_RINVMSGLEN: 0x01,
};
const status = (name: string) => NAMES[name]!;

describe('SMPP text and addresses', () => {
  it('sends the code texts in GSM 03.38, others in UCS-2, long ones in message_payload', () => {
    assert.deepEqual(encodeText('483920 est votre code de connexion. Il expire dans 3 minutes.'), {
      data_coding: 0,
      short_message: { message: '483920 est votre code de connexion. Il expire dans 3 minutes.' },
    });
    assert.equal(encodeText('483920 är din kod; réessayez à 3 minuter').data_coding, 0);
    assert.equal(encodeText('483920 — ваш код').data_coding, 8);
    assert.equal(encodeText('483920 is `quoted`').data_coding, 8, 'the backtick is no GSM character');
    assert.ok(encodeText('x'.repeat(254)).short_message);
    assert.ok(encodeText('{'.repeat(128)).message_payload, 'escaped characters take two septets');
    assert.ok(encodeText('ж'.repeat(128)).message_payload);
  });

  it('addresses E.164 numbers as international, short codes as network-specific, names as alphanumeric', () => {
    assert.deepEqual(smppAddress('+46701234567'), { addr: '46701234567', ton: 1, npi: 1 });
    assert.deepEqual(smppAddress('97671'), { addr: '97671', ton: 3, npi: 0 });
    assert.deepEqual(smppAddress('Contoso'), { addr: 'Contoso', ton: 5, npi: 0 });
  });

  it('reads SMPP_URL: credentials percent-decoded, TLS with smpps, the IANA ports by default', () => {
    assert.deepEqual(parseSmppUrl('smpp://esme%40one:p%3Ass@smsc.example.net'), { tls: false, host: 'smsc.example.net', port: 2775, systemId: 'esme@one', password: 'p:ss' });
    assert.deepEqual(parseSmppUrl('smpps://esme:secret@[2001:db8::1]:3551'), { tls: true, host: '2001:db8::1', port: 3551, systemId: 'esme', password: 'secret' });
    assert.equal(parseSmppUrl('smpps://esme:secret@smsc.example.net').port, 3550);
    assert.throws(() => parseSmppUrl('http://esme:secret@smsc.example.net'), /smpp:\/\/ or smpps:\/\//);
    assert.throws(() => parseSmppUrl('smpp://smsc.example.net:2775'), /system_id/);
  });
});

describe('SMPP validity_period', () => {
  it('is relative (YYMMDDhhmmss000R: no clock to agree on), in days, hours, minutes and seconds, at least a second, at most 99 days', () => {
    assert.equal(smppValidityPeriod(170), '000000000250000R');
    assert.equal(smppValidityPeriod(3_725), '000000010205000R');
    assert.equal(smppValidityPeriod(2 * 86_400 + 1), '000002000001000R');
    assert.equal(smppValidityPeriod(0.2), '000000000001000R');
    assert.equal(smppValidityPeriod(-5), '000000000001000R');
    assert.equal(smppValidityPeriod(1e9), '000099000000000R');
  });

  it('SMPP_VALIDITY_PERIOD: absolute is UTC (YYMMDDhhmmsst00+), at least a second ahead; none, or no expiry, leaves the SMSC default', () => {
    assert.equal(smppAbsoluteTime(new Date('2026-12-05T04:55:07.891Z')), '261205045507800+');
    const now = Date.parse('2026-12-05T04:52:17.250Z');
    const expiresAt = new Date(now + 170_000);
    assert.equal(smppValidity('relative', expiresAt, now), '000000000250000R');
    assert.equal(smppValidity('absolute', expiresAt, now), '261205045507200+');
    assert.equal(smppValidity('absolute', new Date(now - 5_000), now), '261205045218200+');
    assert.equal(smppValidity('none', expiresAt, now), undefined);
    assert.equal(smppValidity('relative', undefined, now), undefined);
  });
});

