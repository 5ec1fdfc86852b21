import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import smpp, { type PDU, type Session } from 'smpp';
import type { HealthCheck } from '@mfa/service-kit';
import { contextFromCarrier, counter, gauge, SpanKind, withSpan, type Logger } from '@mfa/telemetry';
import { Senders } from '../senders.js';
import { SmsProviderError, type SessionSmsProvider, type SmsMessage, type SmsReceipt, type SmsSendResult } from '../sms-provider.js';
import { bindRefusalHint, encodeText, EsmeStatus, isTransientStatus, parseReceipt, smppAddress, smppValidity, statusName, type ValidityFormat } from './smpp-protocol.js';

const boundGauge = gauge('mfa_smpp_bound', 'Whether the SMPP session is bound (1) or not (0)');
const bindAttempts = counter('mfa_smpp_binds_total', 'SMPP sessions opened, by outcome: bound, refused (the SMSC said no), failed (no connection or no answer)', ['outcome']);
const windowInUse = gauge('mfa_smpp_window_in_use', 'submit_sm sent and not answered yet (at most SMPP_WINDOW)');
const pdusRefused = counter(
  'mfa_smpp_pdus_refused_total',
  'PDUs from the SMSC that were not understood: unknown_command, unexpected_command (answered generic_nack), malformed_receipt (acknowledged, ignored), undecodable (the connection is dropped)',
  ['reason'],
);

/** Where and as whom to bind: `smpp://system_id:password@host:port`, or `smpps://` for TLS. */
export interface SmppTarget {
  tls: boolean;
  host: string;
  port: number;
  systemId: string;
  password: string;
}

export function parseSmppUrl(text: string): SmppTarget {
  const url = new URL(text);
  const tls = url.protocol === 'smpps:';
  if (!tls && url.protocol !== 'smpp:') throw new RangeError('SMPP_URL must be smpp:// or smpps://');
  if (!url.hostname || !url.username) throw new RangeError('SMPP_URL must name the host and the system_id (smpp://system_id:password@host:port)');
  return {
    tls,
    host: url.hostname.replace(/^\[|\]$/g, ''),
    // The IANA ports of SMPP and of SMPP over TLS.
    port: url.port ? Number(url.port) : tls ? 3550 : 2775,
    systemId: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
  };
}

export interface SmppOptions {
  target: SmppTarget;
  /** The sender when SMS_SENDERS names none for the destination (SMPP_SOURCE_ADDR). */
  sourceAddr: string;
  senders?: ReadonlyMap<string, string>;
  /** At most this many submit_sm wait for their response (the SMSC's window). */
  window: number;
  /** Total time of one send: waiting for a bind or a window slot, and for submit_sm_resp. Also bounds binds and enquire_link. */
  timeoutMs: number;
  enquireLinkMs: number;
  /**
   * How submit_sm carries a code's expiry (SMPP_VALIDITY_PERIOD): `relative` (the default), `absolute`
   * (UTC; the SMSC's clock must be right), or `none` (the SMSC's default validity).
   */
  validity?: ValidityFormat;
  /** Reconnect back-off: base doubling per failure, at most max. */
  reconnect?: { baseMs: number; maxMs: number };
  /** Extra TLS options (a private CA in tests; NODE_EXTRA_CA_CERTS does it for the service). */
  tlsOptions?: ConnectionOptions;
}

type State = 'stopped' | 'connecting' | 'bound' | 'down';

const SMPP_VERSION_3_4 = 0x34;
/** registered_delivery: a receipt for the final outcome, delivered or not. */
const RECEIPT_ON_FINAL_OUTCOME = 0x01;
/** How long an unbind at shutdown waits for its answer. */
const UNBIND_WAIT_MS = 2_000;
/**
 * ESME_RINVEXPIRY for an expiry at least this far ahead is taken for the format (the session then
 * goes without validity_period); nearer, it may be the value: SMSCs also refuse an expiry in the
 * past or below their minimum validity, which an SMSC clock a few seconds ahead, or a code sent in
 * its last seconds (absolute time is then at most now + 1 s), gets. A minute is far beyond any
 * clock skew that leaves the absolute format usable, and the codes' TTL is minutes.
 */
const FORMAT_REFUSAL_MIN_LEFT_MS = 60_000;

/**
 * The library failed to decode what the SMSC sent (a length beyond 16 KiB or below the header,
 * fields running past the end), as opposed to a socket or TLS error, which names its system call
 * or carries an error code of its own.
 */
function isDecodeError(error: Error & { code?: string; syscall?: string }): boolean {
  if (error.syscall !== undefined) return false;
  return error.code === undefined || error.code === 'ERR_OUT_OF_RANGE' || error.code === 'ERR_BUFFER_OUT_OF_BOUNDS';
}

const transientError = (message: string, cause?: unknown) => new SmsProviderError(message, { provider: 'smpp', transient: true, cause });
/**
 * A submit_sm that went out and got no submit_sm_resp (unanswered in time, or its connection lost
 * first): the SMSC may have queued it, and a retry may send a second SMS.
 */
const unknownOutcome = (message: string) => new SmsProviderError(message, { provider: 'smpp', transient: true, outcomeUnknown: true });

/**
 * SMPP v3.4 (the `smpp` package) as an ESME: one transceiver session per instance, bound at start
 * and kept bound. enquire_link every `enquireLinkMs`; a session lost (closed, unbound by the
 * SMSC, enquire_link or bind unanswered, a PDU that cannot be decoded) is opened again after an
 * exponential back-off, and so is a refused bind, which is logged as an error with the SMSC's
 * reason. Sends wait for a bound session only while one is being opened; otherwise they fail at
 * once as transient, so the next provider takes over. At most `window` submit_sm are in flight;
 * the others wait for a slot within their timeout. Each asks for a receipt of its final outcome,
 * and carries the code's expiry as validity_period in the configured format, or none on a session
 * whose SMSC refused it (ESME_RINVEXPIRY) for an expiry at least a minute ahead. deliver_sm
 * receipts go to `onReceipt` and are always answered.
 */
export class SmppSmsProvider implements SessionSmsProvider {
  readonly name = 'smpp';
  private state: State = 'stopped';
  private running = false;
  private session: Session | undefined;
  private lastError = 'not started';
  /** Failed opens since the last bind: the back-off's exponent. */
  private failures = 0;
  private inFlight = 0;
  private readonly slotWaiters: Array<() => void> = [];
  private readonly bindWaiters = new Set<{ resolve: (session: Session) => void; reject: (error: SmsProviderError) => void }>();
  /** Fails the submits waiting for a response on the current session. */
  private readonly pending = new Set<(error: SmsProviderError) => void>();
  private bindTimer: NodeJS.Timeout | undefined;
  private enquireTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private log: Logger | undefined;
  private onReceipt: ((receipt: SmsReceipt) => Promise<void>) | undefined;
  private readonly senders: Senders;
  /** The session whose SMSC refused a validity_period well ahead (ESME_RINVEXPIRY): its submits go without one. */
  private validityRefusedBy: Session | undefined;

  constructor(private readonly options: SmppOptions) {
    this.senders = new Senders(options.senders ?? new Map(), options.sourceAddr);
    // The password must never show up in logs of this object.
    Object.defineProperty(this, 'options', { enumerable: false });
  }

  start(context: { log: Logger; onReceipt: (receipt: SmsReceipt) => Promise<void> }): void {
    if (this.running) return;
    this.log = context.log.child({ provider: this.name });
    this.onReceipt = context.onReceipt;
    this.running = true;
    this.connect();
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.reconnectTimer);
    const session = this.session;
    if (!session) {
      this.state = 'stopped';
      this.lastError = 'stopped';
      return;
    }
    if (this.state === 'bound') {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, UNBIND_WAIT_MS).unref();
        if (!session.unbind(() => (clearTimeout(timer), resolve()))) resolve();
      });
    }
    this.lost(session, 'stopped');
    // Whatever ended the session first (the SMSC closing after unbind_resp), it was the stop.
    this.lastError = 'stopped';
  }

  healthCheck(): HealthCheck {
    return {
      name: 'smpp',
      informational: true,
      check: async () => {
        if (this.state !== 'bound') throw new Error(`${this.state === 'connecting' ? 'binding' : 'not bound'}: ${this.lastError}`);
      },
    };
  }

  /** submit_sm unanswered, and sends waiting for a slot of the window. */
  windowState(): { inFlight: number; waiting: number } {
    return { inFlight: this.inFlight, waiting: this.slotWaiters.length };
  }

  send(message: SmsMessage): Promise<SmsSendResult> {
    const { host, port } = this.options.target;
    return withSpan(
      'smpp submit_sm',
      { kind: SpanKind.CLIENT, parent: contextFromCarrier(message.trace), attributes: { 'server.address': host, 'server.port': port, 'mfa.sms.provider': this.name } },
      async (span) => {
        const deadline = Date.now() + this.options.timeoutMs;
        await this.boundSession(deadline);
        await this.takeSlot(deadline);
        let response: PDU;
        // The session bound now: the one seen before waiting for a slot may have been lost meanwhile.
        const session = this.state === 'bound' ? this.session : undefined;
        try {
          if (!session) throw transientError(`SMPP session not bound: ${this.lastError}`);
          const now = Date.now();
          const validity = this.validityRefusedBy === session ? undefined : smppValidity(this.options.validity ?? 'relative', message.expiresAt, now);
          response = await this.submit(session, message, deadline, validity);
          if (response.command_status === EsmeStatus.INVALID_EXPIRY && validity !== undefined && session === this.session) {
            // ESME_RINVEXPIRY refuses the whole submit: nothing was queued. Failing over would send
            // every SMS to the next provider, so the same submit goes again at once without a
            // validity_period (the SMSC's default validity; the code still expires here). An
            // expiry well ahead refused means the format: every other submit of this session goes
            // without one too, and a new session tries the configured format again (the SMSC may
            // have been changed meanwhile). A near one may have been refused for its value (past,
            // or below the SMSC's minimum): only this SMS goes without, so one code in its last
            // seconds does not leave every later one to the SMSC's default validity (often days).
            const leftMs = (message.expiresAt?.getTime() ?? now) - now;
            if (leftMs < FORMAT_REFUSAL_MIN_LEFT_MS) {
              this.log?.info('the SMSC refused the validity_period of an SMS near its expiry (ESME_RINVEXPIRY): this one goes without; the session keeps SMPP_VALIDITY_PERIOD', {
                format: this.options.validity ?? 'relative',
                leftMs,
              });
            } else if (this.validityRefusedBy !== session) {
              this.validityRefusedBy = session;
              this.log?.warn('the SMSC refused validity_period (ESME_RINVEXPIRY): SMS go without one on this session; set SMPP_VALIDITY_PERIOD to a format it takes, or none', {
                format: this.options.validity ?? 'relative',
              });
            }
            response = await this.submit(session, message, deadline, undefined);
          }
        } finally {
          this.releaseSlot();
        }
        const status = response.command_status;
        if (status !== EsmeStatus.OK) {
          const name = statusName(status);
          span.setAttribute('mfa.sms.provider_error_code', name);
          // The SMSC no longer takes this session for bound: open a new one.
          if (status === EsmeStatus.INCORRECT_BIND_STATUS) this.lost(session, 'the SMSC answered ESME_RINVBNDSTS');
          throw new SmsProviderError(`SMPP submit_sm refused: ${name}`, { provider: this.name, transient: isTransientStatus(status), code: name, vendorAnswered: true });
        }
        const messageId = response.message_id;
        if (typeof messageId !== 'string' || messageId === '') {
          // command_status OK: the SMSC took the message, id or not. Failing it (and over to the next
          // provider) would send the user a second SMS; it is sent, under an id made up here that
          // no receipt will ever name (its outcome stays `sent`).
          this.log?.warn('the SMSC accepted an SMS without a message_id: recorded as sent, and no receipt can be matched to it');
          return { providerMessageId: `smpp-unnamed-${randomUUID()}`, unnamed: true };
        }
        return { providerMessageId: messageId };
      },
    );
  }

  private submit(session: Session, message: SmsMessage, deadline: number, validity: string | undefined): Promise<PDU> {
    const source = smppAddress(this.senders.for(message.to));
    const destination = smppAddress(message.to);
    return new Promise<PDU>((resolve, reject) => {
      const fail = (error: SmsProviderError) => {
        clearTimeout(timer);
        this.pending.delete(fail);
        reject(error);
      };
      // A late submit_sm_resp after this is dropped; the message may still go out (as with any
      // provider's timeout), and the retry could send a second one.
      const timer = setTimeout(() => fail(unknownOutcome(`SMPP submit_sm not answered within ${this.options.timeoutMs} ms`)), Math.max(0, deadline - Date.now()));
      this.pending.add(fail);
      const written = session.submit_sm(
        {
          source_addr_ton: source.ton,
          source_addr_npi: source.npi,
          source_addr: source.addr,
          dest_addr_ton: destination.ton,
          dest_addr_npi: destination.npi,
          destination_addr: destination.addr,
          registered_delivery: RECEIPT_ON_FINAL_OUTCOME,
          // A code the SMSC could not deliver before it expired is dropped, not delivered (and billed) late.
          ...(validity !== undefined ? { validity_period: validity } : {}),
          ...encodeText(message.body),
        },
        (response) => {
          clearTimeout(timer);
          this.pending.delete(fail);
          resolve(response);
        },
      );
      if (!written) fail(transientError('SMPP connection not writable'));
    });
  }

  /** The bound session; while one is being opened, waits for it within the send's time. */
  private boundSession(deadline: number): Promise<Session> {
    if (this.state === 'bound' && this.session) return Promise.resolve(this.session);
    if (this.state !== 'connecting') return Promise.reject(transientError(`SMPP session not bound: ${this.lastError}`));
    return new Promise<Session>((resolve, reject) => {
      const waiter = {
        resolve: (session: Session) => (clearTimeout(timer), resolve(session)),
        reject: (error: SmsProviderError) => (clearTimeout(timer), reject(error)),
      };
      const timer = setTimeout(() => {
        this.bindWaiters.delete(waiter);
        reject(transientError(`SMPP session not bound within ${this.options.timeoutMs} ms`));
      }, Math.max(0, deadline - Date.now()));
      this.bindWaiters.add(waiter);
    });
  }

  private takeSlot(deadline: number): Promise<void> {
    if (this.inFlight < this.options.window) {
      windowInUse.set(++this.inFlight);
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      // A released slot is handed over as it is: the count stays.
      const waiter = () => (clearTimeout(timer), resolve());
      const timer = setTimeout(() => {
        this.slotWaiters.splice(this.slotWaiters.indexOf(waiter), 1);
        reject(transientError(`the SMSC's window (${this.options.window} messages) stayed full for ${this.options.timeoutMs} ms`));
      }, Math.max(0, deadline - Date.now()));
      this.slotWaiters.push(waiter);
    });
  }

  private releaseSlot(): void {
    const next = this.slotWaiters.shift();
    if (next) next();
    else windowInUse.set(--this.inFlight);
  }

  private connect(): void {
    if (!this.running) return;
    this.state = 'connecting';
    const { tls, host, port } = this.options.target;
    // SNI names a host, never an address (RFC 6066); the certificate is checked against either.
    const session = smpp.connect({ host, port, tls, ...(tls ? { ...(isIP(host) ? {} : { servername: host }), ...this.options.tlsOptions } : {}) });
    this.session = session;
    session.on(tls ? 'secureConnect' : 'connect', () => this.bind(session));
    // Every error ends in `lost`, which ignores a session that is not the current one; the
    // listener stays for the session's life (an 'error' without one would end the process).
    session.on('error', (error: Error) =>
      isDecodeError(error)
        ? this.lost(session, `undecodable PDU from the SMSC (${error.message}); the byte stream cannot be trusted after it`, { undecodable: true })
        : this.lost(session, `connection error: ${error.message}`),
    );
    session.on('close', () => this.lost(session, 'connection closed'));
    session.on('pdu', (pdu: PDU) => this.incoming(session, pdu));
    this.bindTimer = setTimeout(() => this.lost(session, `not bound within ${this.options.timeoutMs} ms`), this.options.timeoutMs).unref();
  }

  private bind(session: Session): void {
    const { systemId, password, host, port, tls } = this.options.target;
    const sent = session.bind_transceiver(
      { system_id: systemId, password, system_type: '', interface_version: SMPP_VERSION_3_4, addr_ton: 0, addr_npi: 0, address_range: '' },
      (response) => {
        if (session !== this.session) return;
        clearTimeout(this.bindTimer);
        if (response.command_status !== EsmeStatus.OK) {
          const name = statusName(response.command_status);
          const hint = bindRefusalHint(response.command_status);
          this.log?.error('SMPP bind refused', { status: name, hint, host, port, systemId });
          this.lost(session, `bind refused: ${name}, ${hint}`, { refused: true });
          return;
        }
        this.state = 'bound';
        this.failures = 0;
        this.lastError = 'bound';
        bindAttempts.inc({ outcome: 'bound' });
        boundGauge.set(1);
        this.log?.info('SMPP session bound', { host, port, systemId, tls });
        for (const waiter of this.bindWaiters) waiter.resolve(session);
        this.bindWaiters.clear();
        this.enquireTimer = setInterval(() => this.enquireLink(session), this.options.enquireLinkMs).unref();
      },
    );
    if (!sent) this.lost(session, 'connection not writable');
  }

  /** A link check the SMSC must answer within the timeout, or the session is taken for dead. */
  private enquireLink(session: Session): void {
    const timer = setTimeout(() => this.lost(session, `no enquire_link_resp within ${this.options.timeoutMs} ms`), this.options.timeoutMs).unref();
    if (!session.enquire_link(() => clearTimeout(timer))) {
      clearTimeout(timer);
      this.lost(session, 'connection not writable');
    }
  }

  private incoming(session: Session, pdu: PDU): void {
    if (session !== this.session) return;
    switch (pdu.command) {
      case 'deliver_sm':
        // After what the PDUs read with it set going: an SMSC that fails a message at once may send
        // its receipt in the same read as its submit_sm_resp, and the send records the message's
        // route (ReceiptRoutes) in the continuations of that response; read first, the receipt
        // would find the route of an earlier SMS the SMSC gave the same id.
        setImmediate(() => void this.deliver(session, pdu));
        return;
      case 'enquire_link':
        session.send(pdu.response());
        return;
      case 'unbind':
        this.log?.warn('the SMSC unbound the SMPP session; binding again');
        session.send(pdu.response(), () => this.lost(session, 'unbound by the SMSC'));
        return;
      case 'alert_notification':
        // Has no response; it says a handset is reachable again, which nothing here waits for.
        return;
      default:
        // Responses are handled by their request's callback (a late one, after its timeout, is dropped).
        if (pdu.isResponse()) return;
        pdusRefused.inc({ reason: pdu.command === 'unknown' ? 'unknown_command' : 'unexpected_command' });
        this.log?.warn('SMPP request not handled by this client; answered generic_nack', { command: pdu.command, commandId: `0x${pdu.command_id.toString(16).padStart(8, '0')}` });
        session.send(new smpp.PDU('generic_nack', { sequence_number: pdu.sequence_number, command_status: EsmeStatus.INVALID_COMMAND_ID }));
    }
  }

  /**
   * A deliver_sm: a receipt of a final state goes to `onReceipt`; if that fails (Redis or NATS
   * away), the answer is ESME_RX_T_APPN and the SMSC delivers the receipt again later. Anything
   * else (intermediate states, messages from handsets, receipts we cannot read) is acknowledged
   * and ignored, so the SMSC does not send it again and again.
   */
  private async deliver(session: Session, pdu: PDU): Promise<void> {
    let status: number = EsmeStatus.OK;
    const receipt = parseReceipt(pdu);
    if (receipt.kind === 'final') {
      try {
        await this.onReceipt?.({ provider: this.name, providerMessageId: receipt.messageId, status: receipt.status, errorCode: receipt.errorCode, submitted: receipt.submitted });
      } catch (error) {
        status = EsmeStatus.RECEIVER_TEMPORARY_ERROR;
        this.log?.warn('SMPP receipt not recorded; the SMSC will deliver it again', { providerMessageId: receipt.messageId, error });
      }
    } else if (receipt.kind === 'malformed') {
      pdusRefused.inc({ reason: 'malformed_receipt' });
      this.log?.warn('SMPP delivery receipt not understood; acknowledged and ignored', { reason: receipt.reason });
    } else if (receipt.kind === 'not_a_receipt') {
      this.log?.info('SMPP message from a handset ignored (not a delivery receipt)');
    }
    session.send(pdu.response({ command_status: status }));
  }

  /**
   * The session ended (or never bound): everything waiting on it fails as transient, and unless
   * the provider is stopping, a new one is opened after the back-off.
   */
  private lost(session: Session, reason: string, how: { refused?: boolean; undecodable?: boolean } = {}): void {
    if (session !== this.session) return;
    this.session = undefined;
    if (this.validityRefusedBy === session) this.validityRefusedBy = undefined;
    const wasBound = this.state === 'bound';
    clearTimeout(this.bindTimer);
    clearInterval(this.enquireTimer);
    boundGauge.set(0);
    session.destroy();
    this.lastError = reason;
    if (!wasBound) bindAttempts.inc({ outcome: how.refused ? 'refused' : 'failed' });
    if (how.undecodable) pdusRefused.inc({ reason: 'undecodable' });
    for (const fail of [...this.pending]) fail(unknownOutcome(`SMPP connection lost before submit_sm_resp: ${reason}`));
    for (const waiter of this.bindWaiters) waiter.reject(transientError(`SMPP session not bound: ${reason}`));
    this.bindWaiters.clear();
    if (!this.running) {
      this.state = 'stopped';
      return;
    }
    this.state = 'down';
    const { baseMs, maxMs } = this.options.reconnect ?? { baseMs: 1_000, maxMs: 60_000 };
    const delayMs = Math.round(Math.min(maxMs, baseMs * 2 ** this.failures++) * (0.8 + Math.random() * 0.4));
    if (!how.refused) this.log?.warn(wasBound ? 'SMPP session lost; binding again' : 'SMPP session could not be opened; trying again', { reason, inMs: delayMs });
    this.reconnectTimer = setTimeout(() => this.connect(), delayMs).unref();
  }
}
