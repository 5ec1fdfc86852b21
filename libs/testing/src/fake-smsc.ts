import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import smpp, { type PDU, type Server, type Session } from 'smpp';

/**
 * An SMSC speaking SMPP v3.4 over TCP (or TLS), built on the `smpp` package's server side, so the
 * real SMPP provider runs unchanged against it. It accepts bind_transceiver with its system_id and
 * password (and refuses others with ESME_RINVSYSID / ESME_RINVPASWD), answers submit_sm with a
 * message id, sends the delivery receipt a message asked for (deliver_sm with the receipt bit,
 * the receipted_message_id and message_state TLVs and the Appendix B text), and answers
 * enquire_link and unbind. Tests can make it refuse submits (throttled, invalid destination),
 * hold its answers (a full window, a timeout), drop every connection, and send what a broken
 * SMSC sends: an unknown command, a PDU too long to be one, a receipt that names nothing.
 */
export interface FakeSmscMessage {
  messageId: string;
  systemId: string;
  sourceAddr: string;
  sourceAddrTon: number;
  destinationAddr: string;
  destAddrTon: number;
  dataCoding: number;
  registeredDelivery: number;
  /** The text as the handset shows it (decoded from GSM 03.38 or UCS-2). */
  text: string;
  receivedAt: Date;
}

export interface FakeSmscBind {
  command: string;
  systemId: string;
  interfaceVersion: number;
  accepted: boolean;
}

/** A final receipt state of the Appendix B text, and its message_state value. */
const STATES = { DELIVRD: 2, EXPIRED: 3, UNDELIV: 5, REJECTD: 8, ENROUTE: 1, ACCEPTD: 6 } as const;
export type FakeSmscReceiptState = keyof typeof STATES;

interface ReceiptOptions {
  state: FakeSmscReceiptState;
  /** The `err:` of the text (three digits), e.g. '001'. */
  err?: string;
  /** Only the Appendix B text, without the v3.4 TLVs (older SMSCs). */
  textOnly?: boolean;
}

const yymmddhhmm = (d: Date) => d.toISOString().replace(/\D/g, '').slice(2, 12);

export class FakeSmsc {
  readonly messages: FakeSmscMessage[] = [];
  readonly binds: FakeSmscBind[] = [];
  /** The ESME's answers to the deliver_sm sent to it: message id (if any) and command_status. */
  readonly receiptAnswers: Array<{ messageId: string | undefined; status: number }> = [];
  /** generic_nack PDUs the ESME sent (sequence number, status). */
  readonly nacks: Array<{ sequence: number; status: number }> = [];
  enquireLinks = 0;
  /** The most submit_sm that were ever waiting for an answer at once. */
  maxOutstanding = 0;
  /** Send each message's receipt when it asks for one (registered_delivery). */
  autoReceipts = true;
  private outstanding = 0;
  private held: Array<() => void> = [];
  private holding = false;
  private failures: number[] = [];
  private idsNext: string[] = [];
  private readonly receiptsFor = new Map<string, ReceiptOptions>();
  private server: Server | undefined;
  private readonly bound = new Set<Session>();
  private waiters: Array<{ predicate: (m: FakeSmscMessage) => boolean; resolve: (m: FakeSmscMessage) => void }> = [];
  private nextSequence = 0x10000;

  constructor(
    readonly systemId = 'mfa-test',
    readonly password = randomBytes(4).toString('hex'),
    private readonly tls?: { key: string | Buffer; cert: string | Buffer },
  ) {}

  get port(): number {
    const address = this.server?.address() as AddressInfo | null | undefined;
    if (!address) throw new Error('fake SMSC is not listening');
    return address.port;
  }

  /** SMPP_URL for this SMSC, with other credentials if given (to test a refused bind). */
  url(credentials: { systemId?: string; password?: string } = {}): string {
    const user = encodeURIComponent(credentials.systemId ?? this.systemId);
    const password = encodeURIComponent(credentials.password ?? this.password);
    return `${this.tls ? 'smpps' : 'smpp'}://${user}:${password}@127.0.0.1:${this.port}`;
  }

  /** Environment for the dispatch service to use this SMSC. */
  env(sourceAddr = '+15005550006'): Record<string, string> {
    return { SMS_PROVIDERS: 'smpp', SMPP_URL: this.url(), SMPP_SOURCE_ADDR: sourceAddr };
  }

  /** Sessions bound right now. */
  get sessions(): number {
    return this.bound.size;
  }

  async start(port = 0): Promise<this> {
    this.server = smpp.createServer({ ...this.tls }, (session) => this.accept(session));
    await new Promise<void>((resolve) => this.server!.listen(port, '127.0.0.1', () => resolve()));
    return this;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    const server = this.server;
    this.server = undefined;
    this.dropConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The next submit_sm are answered with these command_status values, in order (e.g. smpp.errors.ESME_RTHROTTLED). */
  failNext(...statuses: number[]): void {
    this.failures.push(...statuses);
  }

  /** The next messages taken get these message ids, in order: an SMSC that reuses ids (a short counter, one reset at restart). */
  nextMessageIds(...ids: string[]): void {
    this.idsNext.push(...ids);
  }

  /** submit_sm are taken and not answered until release(). */
  hold(): void {
    this.holding = true;
  }

  /** Answers every held submit_sm, and the next ones at once. */
  release(): void {
    this.holding = false;
    for (const answer of this.held.splice(0)) answer();
  }

  /** submit_sm waiting for an answer because of hold(). */
  get heldCount(): number {
    return this.held.length;
  }

  /** The receipt of messages to `destination` (E.164), when not DELIVRD. */
  receiptFor(destination: string, receipt: ReceiptOptions): void {
    this.receiptsFor.set(destination.replace(/^\+/, ''), receipt);
  }

  /** Closes every connection, as an SMSC that restarts or a network that breaks. */
  dropConnections(): void {
    for (const session of this.server?.sessions ?? []) session.destroy();
    this.bound.clear();
  }

  messagesTo(to: string): FakeSmscMessage[] {
    return this.messages.filter((m) => m.destinationAddr === to.replace(/^\+/, ''));
  }

  /** Resolves with the first message (already received or future) that matches. */
  waitFor(predicate: (m: FakeSmscMessage) => boolean, timeoutMs = 10_000): Promise<FakeSmscMessage> {
    const found = this.messages.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const waiter = { predicate, resolve };
      this.waiters.push(waiter);
      setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`fake SMSC: no matching message within ${timeoutMs} ms`));
      }, timeoutMs).unref();
    });
  }

  /** The six-digit code in a message. */
  static codeOf(message: FakeSmscMessage): string {
    const match = /\b(\d{6})\b/.exec(message.text);
    if (!match) throw new Error('no six-digit code in the SMS');
    return match[1]!;
  }

  /** Sends a delivery receipt of a message on a bound session; resolves with the ESME's deliver_sm_resp status. */
  sendReceipt(message: FakeSmscMessage, receipt: ReceiptOptions): Promise<number> {
    const stat = receipt.state;
    const err = receipt.err ?? (stat === 'DELIVRD' ? '000' : '001');
    const now = yymmddhhmm(new Date());
    const text = `id:${message.messageId} sub:001 dlvrd:${stat === 'DELIVRD' ? '001' : '000'} submit date:${yymmddhhmm(message.receivedAt)} done date:${now} stat:${stat} err:${err} text:${message.text.slice(0, 20)}`;
    return this.deliver(
      {
        source_addr_ton: 1,
        source_addr_npi: 1,
        source_addr: message.destinationAddr,
        destination_addr: message.sourceAddr,
        esm_class: 0x04,
        data_coding: 0,
        short_message: text,
        ...(receipt.textOnly ? {} : { receipted_message_id: message.messageId, message_state: STATES[stat] }),
      },
      message.messageId,
    );
  }

  /** Sends any deliver_sm (a malformed receipt, a message from a handset); resolves with the ESME's answer status. */
  deliver(fields: Record<string, unknown>, messageId?: string): Promise<number> {
    const session = this.anySession();
    return new Promise((resolve, reject) => {
      const sent = session.deliver_sm(fields, (response) => {
        this.receiptAnswers.push({ messageId, status: response.command_status });
        resolve(response.command_status);
      });
      if (!sent) reject(new Error('fake SMSC: the session is not writable'));
    });
  }

  /** A well-framed PDU with a command id SMPP does not define: the ESME should answer generic_nack (ESME_RINVCMDID). */
  sendUnknownCommand(): number {
    const sequence = ++this.nextSequence;
    this.sendRaw(this.header(16, 0x00000777, 0, sequence));
    return sequence;
  }

  /** A header announcing a PDU far beyond any SMPP PDU: nothing after it can be framed. */
  sendOversizedPdu(): void {
    this.sendRaw(this.header(0x00ffffff, 0x00000005, 0, ++this.nextSequence));
  }

  /** Raw bytes to every bound session. */
  sendRaw(bytes: Buffer): void {
    for (const session of this.bound) session.socket.write(bytes);
  }

  private header(length: number, commandId: number, status: number, sequence: number): Buffer {
    const buffer = Buffer.alloc(16);
    buffer.writeUInt32BE(length, 0);
    buffer.writeUInt32BE(commandId, 4);
    buffer.writeUInt32BE(status, 8);
    buffer.writeUInt32BE(sequence, 12);
    return buffer;
  }

  private anySession(): Session {
    const [session] = this.bound;
    if (!session) throw new Error('fake SMSC: no bound session');
    return session;
  }

  private accept(session: Session): void {
    let systemId: string | undefined;
    session.on('error', () => session.destroy());
    session.on('close', () => this.bound.delete(session));
    for (const command of ['bind_transceiver', 'bind_transmitter', 'bind_receiver']) {
      session.on(command, (pdu: PDU) => {
        const id = String(pdu.system_id ?? '');
        // Only transceivers: receipts come back on the session that sends.
        const status =
          id !== this.systemId ? smpp.errors.ESME_RINVSYSID! : pdu.password !== this.password ? smpp.errors.ESME_RINVPASWD! : command !== 'bind_transceiver' ? smpp.errors.ESME_RBINDFAIL! : 0;
        this.binds.push({ command, systemId: id, interfaceVersion: Number(pdu.interface_version), accepted: status === 0 });
        if (status !== 0) {
          session.send(pdu.response({ command_status: status }), () => session.close());
          return;
        }
        systemId = id;
        this.bound.add(session);
        session.send(pdu.response({ system_id: 'fake-smsc' }));
      });
    }
    session.on('enquire_link', (pdu: PDU) => {
      this.enquireLinks++;
      session.send(pdu.response());
    });
    session.on('unbind', (pdu: PDU) => {
      this.bound.delete(session);
      session.send(pdu.response(), () => session.close());
    });
    session.on('generic_nack', (pdu: PDU) => this.nacks.push({ sequence: pdu.sequence_number, status: pdu.command_status }));
    session.on('submit_sm', (pdu: PDU) => {
      if (!systemId || !this.bound.has(session)) {
        session.send(pdu.response({ command_status: smpp.errors.ESME_RINVBNDSTS }));
        return;
      }
      const failure = this.failures.shift();
      if (failure !== undefined) {
        session.send(pdu.response({ command_status: failure }));
        return;
      }
      const message = this.accepted(systemId, pdu);
      this.outstanding++;
      this.maxOutstanding = Math.max(this.maxOutstanding, this.outstanding);
      const answer = () => {
        this.outstanding--;
        session.send(pdu.response({ message_id: message.messageId }), () => this.afterAccept(message));
      };
      if (this.holding) this.held.push(answer);
      else answer();
    });
  }

  private accepted(systemId: string, pdu: PDU): FakeSmscMessage {
    const payload = (pdu.message_payload ?? pdu.short_message) as { message?: unknown } | undefined;
    const message: FakeSmscMessage = {
      // SMSCs pick their own format; hex is common.
      messageId: this.idsNext.shift() ?? randomBytes(8).toString('hex'),
      systemId,
      sourceAddr: String(pdu.source_addr ?? ''),
      sourceAddrTon: Number(pdu.source_addr_ton),
      destinationAddr: String(pdu.destination_addr ?? ''),
      destAddrTon: Number(pdu.dest_addr_ton),
      dataCoding: Number(pdu.data_coding),
      registeredDelivery: Number(pdu.registered_delivery),
      text: typeof payload?.message === 'string' ? payload.message : '',
      receivedAt: new Date(),
    };
    this.messages.push(message);
    return message;
  }

  private afterAccept(message: FakeSmscMessage): void {
    for (const waiter of [...this.waiters]) {
      if (waiter.predicate(message)) {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        waiter.resolve(message);
      }
    }
    if (!this.autoReceipts || (message.registeredDelivery & 0x03) === 0 || this.bound.size === 0) return;
    const receipt = this.receiptsFor.get(message.destinationAddr) ?? { state: 'DELIVRD' as const };
    void this.sendReceipt(message, receipt).catch(() => undefined);
  }
}
