// The `smpp` package (SMPP v3.4/v5.0 client and server) ships no types: the client side used here
// (and createServer, for the tests).
declare module 'smpp' {
  import type { EventEmitter } from 'node:events';
  import type { ConnectionOptions } from 'node:tls';

  /** A decoded PDU: the header, then the command's parameters and TLVs by their SMPP names. */
  export class PDU {
    constructor(command: string, options?: Record<string, unknown>);
    command: string;
    command_id: number;
    command_status: number;
    sequence_number: number;
    isResponse(): boolean;
    /** The response to this request (generic_nack for an unknown command). */
    response(options?: Record<string, unknown>): PDU;
    [field: string]: unknown;
  }

  export interface Session extends EventEmitter {
    send(pdu: PDU, onResponse?: (response: PDU) => void): boolean;
    bind_transceiver(options: Record<string, unknown>, onResponse: (response: PDU) => void): boolean;
    submit_sm(options: Record<string, unknown>, onResponse: (response: PDU) => void): boolean;
    enquire_link(onResponse: (response: PDU) => void): boolean;
    unbind(onResponse: (response: PDU) => void): boolean;
    close(callback?: () => void): void;
    destroy(callback?: () => void): void;
  }

  export function connect(options: { host: string; port: number; tls?: boolean } & ConnectionOptions): Session;

  /** An SMSC's side, for tests that need to see a PDU as it arrives. */
  export function createServer(options: object, onSession: (session: Session) => void): import('node:net').Server;

  interface Smpp {
    connect: typeof connect;
    createServer: typeof createServer;
    PDU: typeof PDU;
    encodings: { ASCII: { match(text: string): boolean } };
    errors: Record<string, number>;
  }
  const smpp: Smpp;
  export default smpp;
}
