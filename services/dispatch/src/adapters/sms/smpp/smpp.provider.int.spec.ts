import { after, afterEach, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import smpp, { type PDU } from 'smpp';
import { createLogger } from '@mfa/telemetry';
import { eventually, FakeSmsc, itWith } from '@mfa/testing';
import { SmsProviderError, type SmsReceipt } from '../sms-provider.js';
import { parseSmppUrl, SmppSmsProvider, type SmppOptions } from './smpp.provider.js';

// The real SMPP provider against an SMSC speaking SMPP v3.4 over TCP (the `smpp` package's server
// side, in libs/testing): binds, submits, receipts, the window, reconnects and a broken SMSC.

process.env.LOG_LEVEL ??= 'warn';
const log = createLogger('dispatch-smpp-test', { level: process.env.LOG_LEVEL as 'warn' });
const uniquePhone = () => `+1415${String(randomInt(0, 10_000_000)).padStart(7, '0')}`;
const body = (code = '123456') => `${code} is your verification code. It expires in 3 minutes.`;
const smsc = ['smsc'];

describe('SMPP provider against an SMSC', () => {
  const fake = new FakeSmsc();
  const started: SmppSmsProvider[] = [];
  let receipts: SmsReceipt[];
  let onReceipt: (receipt: SmsReceipt) => Promise<void>;

  before(async () => {
    await fake.start();
  });
  after(async () => {
    await fake.stop();
  });
  afterEach(async () => {
    await Promise.all(started.splice(0).map((p) => p.stop()));
    fake.release();
    fake.autoReceipts = true;
  });

  /** A provider bound to the fake (or trying to, with other credentials). */
  async function provider(options: Partial<SmppOptions> & { credentials?: { password?: string }; bound?: boolean } = {}): Promise<SmppSmsProvider> {
    receipts = [];
    onReceipt = async (receipt) => void receipts.push(receipt);
    const p = new SmppSmsProvider({
      target: parseSmppUrl(fake.url(options.credentials)),
      sourceAddr: '+15005550006',
      window: 10,
      timeoutMs: 2_000,
      enquireLinkMs: 30_000,
      reconnect: { baseMs: 20, maxMs: 200 },
      ...options,
    });
    started.push(p);
    p.start({ log, onReceipt: (receipt) => onReceipt(receipt) });
    if (options.bound !== false) await eventually(() => p.healthCheck().check().then(() => true), 5_000, 'the session bound');
    return p;
  }

  itWith({ real: [], fake: smsc }, 'binds as an SMPP v3.4 transceiver and submits: GSM 03.38 or UCS-2 text, international numbers, a receipt asked for', async () => {
    const p = await provider({ senders: new Map([['CA', '759731']]) });
    const bind = fake.binds.at(-1)!;
    assert.deepEqual(bind, { command: 'bind_transceiver', systemId: fake.systemId, interfaceVersion: 0x34, accepted: true });

    const to = uniquePhone();
    const { providerMessageId } = await p.send({ to, body: body() });
    const [sms] = fake.messagesTo(to);
    assert.ok(sms, 'the SMSC got it');
    assert.equal(sms.messageId, providerMessageId);
    assert.equal(sms.text, body());
    assert.equal(sms.dataCoding, 0, 'GSM 03.38, the SMSC default alphabet');
    assert.equal(sms.destinationAddr, to.slice(1));
    assert.equal(sms.destAddrTon, 1, 'international');
    assert.equal(sms.sourceAddr, '15005550006');
    assert.equal(sms.registeredDelivery & 0x01, 1, 'a receipt of the final outcome asked for');

    // French and Swedish letters are GSM characters; Cyrillic needs UCS-2. SMS_SENDERS picks a
    // Canadian short code for Toronto.
    const toronto = `+1416${String(randomInt(2_000_000, 10_000_000))}`;
    await p.send({ to: toronto, body: '123456 är din kod, réessayez' });
    await p.send({ to, body: '123456 — ваш код' });
    const [swedish] = fake.messagesTo(toronto);
    assert.deepEqual([swedish?.dataCoding, swedish?.text, swedish?.sourceAddr, swedish?.sourceAddrTon], [0, '123456 är din kod, réessayez', '759731', 3]);
    const cyrillic = fake.messagesTo(to)[1];
    assert.deepEqual([cyrillic?.dataCoding, cyrillic?.text], [8, '123456 — ваш код']);
  });

  itWith({ real: [], fake: smsc }, 'receipts: final states reach onReceipt (TLVs or the text alone) and are answered; others are acknowledged and ignored', async () => {
    const p = await provider();
    const delivered = uniquePhone();
    const lost = uniquePhone();
    fake.receiptFor(lost, { state: 'UNDELIV', err: '034', textOnly: true });
    const first = await p.send({ to: delivered, body: body() });
    const second = await p.send({ to: lost, body: body() });
    await eventually(async () => (receipts.length >= 2 ? true : undefined), 5_000, 'two receipts');
    assert.deepEqual(
      receipts.sort((a, b) => a.status.localeCompare(b.status)).map(({ submitted: _, ...receipt }) => receipt),
      [
        { provider: 'smpp', providerMessageId: first.providerMessageId, status: 'delivered', errorCode: undefined },
        { provider: 'smpp', providerMessageId: second.providerMessageId, status: 'undelivered', errorCode: '034' },
      ],
    );
    // The text's submit date: when the SMSC took the message, in a zone the receipt does not name.
    for (const { submitted } of receipts) assert.ok(submitted && submitted.from < Date.now() && Date.now() < submitted.to, 'the submit date read');
    assert.deepEqual(fake.receiptAnswers.slice(-2).map((a) => a.status), [0, 0]);

    // Not final, not readable, not a receipt: acknowledged (no redelivery), nothing reported.
    const [sms] = fake.messagesTo(delivered);
    assert.equal(await fake.sendReceipt(sms!, { state: 'ENROUTE' }), 0);
    assert.equal(await fake.deliver({ esm_class: 0x04, short_message: 'sub:001 dlvrd:001 stat:DELIVRD' }), 0);
    assert.equal(await fake.deliver({ esm_class: 0x04, receipted_message_id: 'ab}{c\u0001', message_state: 2 }), 0);
    assert.equal(await fake.deliver({ esm_class: 0x00, source_addr: delivered.slice(1), short_message: 'STOP' }), 0);
    assert.equal(receipts.length, 2);

    // A receipt that cannot be recorded now is answered ESME_RX_T_APPN: the SMSC sends it again.
    onReceipt = async () => {
      throw new Error('Redis is away');
    };
    assert.equal(await fake.sendReceipt(sms!, { state: 'DELIVRD' }), smpp.errors.ESME_RX_T_APPN);
  });

  itWith({ real: [], fake: smsc }, 'refusals: throttled and a full queue are transient, an invalid destination is permanent; an unanswered submit times out as transient, its outcome unknown', async () => {
    const p = await provider({ timeoutMs: 300 });
    const refused = async () => {
      const error = await p.send({ to: uniquePhone(), body: body() }).then(
        () => assert.fail('sent'),
        (e: unknown) => e,
      );
      assert.ok(error instanceof SmsProviderError);
      return { transient: error.transient, code: error.code, message: error.message, outcomeUnknown: error.outcomeUnknown };
    };
    fake.failNext(smpp.errors.ESME_RTHROTTLED!, smpp.errors.ESME_RMSGQFUL!, smpp.errors.ESME_RINVDSTADR!);
    assert.deepEqual(await refused(), { transient: true, code: 'ESME_RTHROTTLED', message: 'SMPP submit_sm refused: ESME_RTHROTTLED', outcomeUnknown: false });
    assert.deepEqual(await refused(), { transient: true, code: 'ESME_RMSGQFUL', message: 'SMPP submit_sm refused: ESME_RMSGQFUL', outcomeUnknown: false });
    assert.deepEqual(await refused(), { transient: false, code: 'ESME_RINVDSTADR', message: 'SMPP submit_sm refused: ESME_RINVDSTADR', outcomeUnknown: false });
    fake.hold();
    const timedOut = await refused();
    assert.equal(timedOut.transient, true);
    assert.match(timedOut.message, /not answered within 300 ms/);
    assert.equal(timedOut.outcomeUnknown, true, 'the SMSC got the submit_sm and may have queued it');
    fake.release();
    assert.ok((await p.send({ to: uniquePhone(), body: body() })).providerMessageId);
  });

  itWith({ real: [], fake: smsc }, 'never has more submit_sm unanswered than the window; the others wait for a slot', async () => {
    const p = await provider({ window: 2, timeoutMs: 10_000 });
    fake.maxOutstanding = 0;
    fake.hold();
    const sends = Array.from({ length: 5 }, () => p.send({ to: uniquePhone(), body: body() }));
    await eventually(async () => (fake.heldCount === 2 && p.windowState().waiting === 3 ? true : undefined), 5_000, 'two submitted, three waiting');
    assert.equal(fake.heldCount, 2);
    fake.release();
    const ids = await Promise.all(sends);
    assert.equal(new Set(ids.map((r) => r.providerMessageId)).size, 5);
    assert.equal(fake.maxOutstanding, 2);
    assert.deepEqual(p.windowState(), { inFlight: 0, waiting: 0 });
  });

  itWith({ real: [], fake: smsc }, 'binds again after the SMSC drops the connection, failing what was in flight as transient', async () => {
    const p = await provider();
    const binds = fake.binds.length;
    fake.hold();
    const inFlight = p.send({ to: uniquePhone(), body: body() });
    await eventually(async () => (fake.heldCount === 1 ? true : undefined), 5_000, 'the submit held');
    fake.dropConnections();
    await assert.rejects(inFlight, (e: unknown) => e instanceof SmsProviderError && e.transient && e.outcomeUnknown && /connection lost/.test(e.message));
    fake.release();
    await eventually(() => p.healthCheck().check().then(() => true), 5_000, 'bound again');
    assert.equal(fake.binds.length, binds + 1);
    assert.ok((await p.send({ to: uniquePhone(), body: body() })).providerMessageId);
  });

  itWith({ real: [], fake: smsc }, 'a wrong password: the bind is refused, /health says why, sends fail at once as transient, binds are tried again', async () => {
    const binds = fake.binds.length;
    const p = await provider({ credentials: { password: 'wrong' }, bound: false });
    const reason = await eventually(
      () => p.healthCheck().check().then(
        () => assert.fail('bound with a wrong password'),
        (e: Error) => (/ESME_RINVPASWD/.test(e.message) ? e.message : undefined),
      ),
      5_000,
      'the refusal in the health check',
    );
    assert.match(reason, /not bound: bind refused: ESME_RINVPASWD, wrong password/);
    await assert.rejects(p.send({ to: uniquePhone(), body: body() }), (e: unknown) => e instanceof SmsProviderError && e.transient && !e.outcomeUnknown && /not bound/.test(e.message));
    await eventually(async () => (fake.binds.length >= binds + 2 ? true : undefined), 5_000, 'a second bind after the back-off');
    assert.ok(fake.binds.slice(binds).every((b) => !b.accepted));
  });

  itWith({ real: [], fake: smsc }, 'a broken SMSC: an unknown command is answered generic_nack; an undecodable PDU ends the connection, which binds again; nothing crashes', async () => {
    const p = await provider();
    const binds = fake.binds.length;
    const sequence = fake.sendUnknownCommand();
    await eventually(async () => fake.nacks.find((n) => n.sequence === sequence), 5_000, 'the generic_nack');
    assert.deepEqual(fake.nacks.find((n) => n.sequence === sequence), { sequence, status: smpp.errors.ESME_RINVCMDID });
    assert.ok((await p.send({ to: uniquePhone(), body: body() })).providerMessageId, 'still bound');
    assert.equal(fake.binds.length, binds);

    fake.sendOversizedPdu();
    await eventually(async () => (fake.binds.length === binds + 1 && fake.sessions === 1 ? true : undefined), 5_000, 'a new session');
    await eventually(() => p.healthCheck().check().then(() => true), 5_000, 'bound again');
    assert.ok((await p.send({ to: uniquePhone(), body: body() })).providerMessageId);
  });

  itWith({ real: [], fake: smsc }, 'checks the link with enquire_link, and unbinds when stopped', async () => {
    const enquired = fake.enquireLinks;
    const p = await provider({ enquireLinkMs: 50 });
    await eventually(async () => (fake.enquireLinks >= enquired + 2 ? true : undefined), 5_000, 'enquire_link twice');
    await p.stop();
    await eventually(async () => (fake.sessions === 0 ? true : undefined), 5_000, 'the session unbound');
    await assert.rejects(p.healthCheck().check(), /not bound: stopped/);
  });
});

describe('SMPP provider over TLS (smpps://)', () => {
  // A self-signed certificate for 127.0.0.1, made by openssl for this run.
  const dir = mkdtempSync(join(tmpdir(), 'smpps-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=fake-smsc', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
  const cert = readFileSync(join(dir, 'cert.pem'));
  const fake = new FakeSmsc('mfa-tls', 'tls-pass', { key: readFileSync(join(dir, 'key.pem')), cert });
  const providers: SmppSmsProvider[] = [];

  before(async () => {
    await fake.start();
  });
  after(async () => {
    await Promise.all(providers.map((p) => p.stop()));
    await fake.stop();
  });

  const start = (tlsOptions: SmppOptions['tlsOptions']) => {
    const p = new SmppSmsProvider({ target: parseSmppUrl(fake.url()), sourceAddr: '+15005550006', window: 10, timeoutMs: 2_000, enquireLinkMs: 30_000, reconnect: { baseMs: 50, maxMs: 200 }, tlsOptions });
    providers.push(p);
    p.start({ log, onReceipt: async () => undefined });
    return p;
  };

  itWith({ real: [], fake: smsc }, 'binds and submits over TLS to an SMSC whose certificate it trusts, and refuses one it does not', async () => {
    assert.match(fake.url(), /^smpps:\/\//);
    const trusted = start({ ca: cert });
    await eventually(() => trusted.healthCheck().check().then(() => true), 5_000, 'bound over TLS');
    const to = uniquePhone();
    const { providerMessageId } = await trusted.send({ to, body: body() });
    assert.equal(fake.messagesTo(to)[0]?.messageId, providerMessageId);

    const untrusted = start(undefined);
    const reason = await eventually(
      () => untrusted.healthCheck().check().then(
        () => assert.fail('bound to an SMSC with an untrusted certificate'),
        (e: Error) => (/certificate/i.test(e.message) ? e.message : undefined),
      ),
      5_000,
      'the TLS refusal',
    );
    assert.match(reason, /^(binding|not bound): connection error: .*certificate/i);
  });
});

describe('SMPP provider: the validity of a code', () => {
  /** A bare SMSC that takes binds and submits and keeps each submit_sm as it decoded it. */
  const submits: PDU[] = [];
  const server = smpp.createServer({}, (session) => {
    session.on('error', () => session.destroy());
    session.on('bind_transceiver', (pdu: PDU) => session.send(pdu.response({ system_id: 'bare-smsc' })));
    session.on('enquire_link', (pdu: PDU) => session.send(pdu.response()));
    session.on('unbind', (pdu: PDU) => session.send(pdu.response(), () => session.close()));
    session.on('submit_sm', (pdu: PDU) => {
      submits.push(pdu);
      session.send(pdu.response({ message_id: `m${submits.length}` }));
    });
  });
  let provider: SmppSmsProvider;

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const { port } = server.address() as AddressInfo;
    provider = new SmppSmsProvider({ target: parseSmppUrl(`smpp://esme:secret@127.0.0.1:${port}`), sourceAddr: '+15005550006', window: 10, timeoutMs: 2_000, enquireLinkMs: 30_000, reconnect: { baseMs: 20, maxMs: 200 } });
    provider.start({ log, onReceipt: async () => undefined });
    await eventually(() => provider.healthCheck().check().then(() => true), 5_000, 'the session bound');
  });
  after(async () => {
    await provider?.stop();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  itWith({ real: [], fake: smsc }, 'submit_sm carries a relative validity_period of the seconds the code has left: the SMSC drops it after that', async () => {
    const expiresAt = new Date(Date.now() + 170_000);
    await provider.send({ to: uniquePhone(), body: body(), expiresAt });
    // The package decodes the relative time (YYMMDDhhmmss000R) into the moment it names.
    const validUntil = submits.at(-1)!.validity_period;
    assert.ok(validUntil instanceof Date, 'a validity_period was sent');
    assert.ok(Math.abs(validUntil.getTime() - expiresAt.getTime()) <= 2_000, `${validUntil.toISOString()} is the code's expiry, ${expiresAt.toISOString()}`);
    await provider.send({ to: uniquePhone(), body: body() });
    assert.ok(!submits.at(-1)!.validity_period, 'none without an expiry: the SMSC default');
  });
});


describe('SMPP provider: an SMSC that accepts without a message_id', () => {
  /** A bare SMSC that answers every submit_sm with command_status OK and an empty message_id. */
  let submits = 0;
  const server = smpp.createServer({}, (session) => {
    session.on('error', () => session.destroy());
    session.on('bind_transceiver', (pdu: PDU) => session.send(pdu.response({ system_id: 'nameless-smsc' })));
    session.on('enquire_link', (pdu: PDU) => session.send(pdu.response()));
    session.on('unbind', (pdu: PDU) => session.send(pdu.response(), () => session.close()));
    session.on('submit_sm', (pdu: PDU) => {
      submits++;
      session.send(pdu.response({ message_id: '' }));
    });
  });
  let provider: SmppSmsProvider;

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const { port } = server.address() as AddressInfo;
    provider = new SmppSmsProvider({ target: parseSmppUrl(`smpp://esme:secret@127.0.0.1:${port}`), sourceAddr: '+15005550006', window: 10, timeoutMs: 2_000, enquireLinkMs: 30_000, reconnect: { baseMs: 20, maxMs: 200 } });
    provider.start({ log, onReceipt: async () => undefined });
    await eventually(() => provider.healthCheck().check().then(() => true), 5_000, 'the session bound');
  });
  after(async () => {
    await provider?.stop();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  itWith({ real: [], fake: smsc }, 'the SMS is sent (the SMSC took it): under an id made up here, marked unnamed, so no receipt is awaited and no other provider sends it again', async () => {
    const first = await provider.send({ to: uniquePhone(), body: body() });
    const second = await provider.send({ to: uniquePhone(), body: body() });
    assert.equal(submits, 2, 'one submit_sm each');
    assert.equal(first.unnamed, true);
    assert.match(first.providerMessageId, /^smpp-unnamed-[0-9a-f-]{36}$/);
    assert.notEqual(first.providerMessageId, second.providerMessageId, 'each its own id: the send guard and SmsSent tell them apart');
  });
});

describe('SMPP provider: an SMSC that refuses a validity_period format', () => {
  /**
   * The validity_period of a submit_sm as it crossed the wire (the package decodes either format
   * into a Date): the SMSC below reads it from the PDU's bytes, SMPP v3.4 §4.4.1's field order.
   */
  const rawValidity = new Map<PDU, string>();
  function readValidity(pdu: Buffer): string {
    let offset = 16;
    const cstring = () => {
      const end = pdu.indexOf(0, offset);
      const text = pdu.toString('latin1', offset, end);
      offset = end + 1;
      return text;
    };
    cstring(); // service_type
    offset += 2; // source_addr_ton, source_addr_npi
    cstring(); // source_addr
    offset += 2; // dest_addr_ton, dest_addr_npi
    cstring(); // destination_addr
    offset += 3; // esm_class, protocol_id, priority_flag
    cstring(); // schedule_delivery_time
    return cstring();
  }
  // The package reads each PDU off the socket with PDU.fromStream and keeps no bytes: the SMSC's
  // side reads them here, then decodes as the package does (PDU.fromBuffer).
  type Pdus = { fromStream(stream: { read(n: number): Buffer | null }, length: number): PDU | false; fromBuffer(buffer: Buffer): PDU | false };
  const Pdus = smpp.PDU as unknown as Pdus;
  const fromStream = Pdus.fromStream;
  const readingBytes: Pdus['fromStream'] = (stream, length) => {
    const rest = stream.read(length - 4);
    if (!rest) return false;
    const head = Buffer.alloc(4);
    head.writeUInt32BE(length);
    const bytes = Buffer.concat([head, rest]);
    const pdu = Pdus.fromBuffer(bytes);
    if (pdu && pdu.command === 'submit_sm') rawValidity.set(pdu, readValidity(bytes));
    return pdu;
  };

  /** Which submit_sm the SMSC answers ESME_RINVEXPIRY; by default, one with a relative validity_period (…R). */
  const refusesRelative = (validity: string) => validity.endsWith('R');
  let refuses: (validity: string, pdu: PDU) => boolean = refusesRelative;
  const submits: Array<{ validity: string; status: number }> = [];
  const sessions = new Set<import('smpp').Session>();
  let binds = 0;
  const server = smpp.createServer({}, (session) => {
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
    session.on('error', () => session.destroy());
    session.on('bind_transceiver', (pdu: PDU) => session.send(pdu.response({ system_id: 'picky-smsc' }), () => void binds++));
    session.on('enquire_link', (pdu: PDU) => session.send(pdu.response()));
    session.on('unbind', (pdu: PDU) => session.send(pdu.response(), () => session.close()));
    session.on('submit_sm', (pdu: PDU) => {
      const validity = rawValidity.get(pdu) ?? '?';
      const status = refuses(validity, pdu) ? smpp.errors.ESME_RINVEXPIRY! : 0;
      submits.push({ validity, status });
      session.send(status === 0 ? pdu.response({ message_id: `m${submits.length}` }) : pdu.response({ command_status: status }));
    });
  });
  let url: string;
  const providers: SmppSmsProvider[] = [];
  async function bound(validity?: SmppOptions['validity']): Promise<SmppSmsProvider> {
    const p = new SmppSmsProvider({ target: parseSmppUrl(url), sourceAddr: '+15005550006', window: 10, timeoutMs: 2_000, enquireLinkMs: 30_000, reconnect: { baseMs: 20, maxMs: 200 }, ...(validity ? { validity } : {}) });
    providers.push(p);
    p.start({ log, onReceipt: async () => undefined });
    await eventually(() => p.healthCheck().check().then(() => true), 5_000, 'the session bound');
    return p;
  }

  before(async () => {
    Pdus.fromStream = readingBytes;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    url = `smpp://esme:secret@127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    await Promise.all(providers.splice(0).map((p) => p.stop()));
    submits.length = 0;
    refuses = refusesRelative;
  });
  after(async () => {
    Pdus.fromStream = fromStream;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  itWith({ real: [], fake: smsc }, 'ESME_RINVEXPIRY: the same submit goes again at once without validity_period, and so do the others of the session; a new session tries the format again', async () => {
    const provider = await bound();
    const expiresAt = new Date(Date.now() + 170_000);
    const first = await provider.send({ to: uniquePhone(), body: body(), expiresAt });
    assert.deepEqual(
      submits.map((s) => [s.validity.slice(-1), s.status]),
      [
        ['R', smpp.errors.ESME_RINVEXPIRY],
        ['', 0],
      ],
      'refused with a relative validity_period, taken without one',
    );
    assert.equal(first.providerMessageId, 'm2');
    await provider.send({ to: uniquePhone(), body: body(), expiresAt });
    assert.deepEqual(submits.slice(2), [{ validity: '', status: 0 }], 'the rest of the session goes without one: one submit per SMS');
    const bindsBefore = binds;
    for (const session of sessions) session.destroy();
    await eventually(async () => (binds > bindsBefore ? true : undefined), 5_000, 'a new bind');
    await eventually(() => provider.healthCheck().check().then(() => true), 5_000, 'bound again');
    await provider.send({ to: uniquePhone(), body: body(), expiresAt });
    assert.deepEqual(submits.slice(3).map((s) => s.validity.slice(-1)), ['R', ''], 'a new session tries the configured format first');
  });

  itWith({ real: [], fake: smsc }, 'SMPP_VALIDITY_PERIOD=absolute sends the expiry as a UTC time (YYMMDDhhmmsst00+), which this SMSC takes; none sends none', async () => {
    const absolute = await bound('absolute');
    const expiresAt = new Date(Date.now() + 170_000);
    await absolute.send({ to: uniquePhone(), body: body(), expiresAt });
    assert.equal(submits.length, 1, 'taken at the first submit');
    const iso = expiresAt.toISOString();
    assert.equal(submits[0]!.validity, `${iso.slice(2, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}${iso[20]}00+`);
    const none = await bound('none');
    await none.send({ to: uniquePhone(), body: body(), expiresAt });
    assert.deepEqual(submits.slice(1), [{ validity: '', status: 0 }]);
  });

  itWith({ real: [], fake: smsc }, 'an expiry refused for its value (past, or below the SMSC minimum) near the end of a code: that SMS goes again without validity_period, the session keeps it for the others', async () => {
    // As SMSCs with a minimum validity (or a clock a few seconds ahead) do: in either format, an
    // expiry less than a minute ahead of the SMSC's clock is refused (the package decodes both
    // into a Date).
    refuses = (_validity, pdu) => pdu.validity_period instanceof Date && pdu.validity_period.getTime() - Date.now() < 60_000;
    for (const format of ['relative', 'absolute'] as const) {
      submits.length = 0;
      const provider = await bound(format);
      const sign = format === 'relative' ? 'R' : '+';
      const last = await provider.send({ to: uniquePhone(), body: body(), expiresAt: new Date(Date.now() + 3_000) });
      assert.deepEqual(
        submits.map((s) => [s.validity.slice(-1), s.status]),
        [
          [sign, smpp.errors.ESME_RINVEXPIRY],
          ['', 0],
        ],
        `${format}: the code in its last seconds is refused with its validity_period, taken without`,
      );
      assert.equal(last.providerMessageId, 'm2');
      await provider.send({ to: uniquePhone(), body: body(), expiresAt: new Date(Date.now() + 170_000) });
      assert.deepEqual(
        submits.slice(2).map((s) => [s.validity.slice(-1), s.status]),
        [[sign, 0]],
        `${format}: the next code goes in one submit_sm, with its validity_period: the session kept the format`,
      );
    }
  });
});
