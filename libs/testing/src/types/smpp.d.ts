// The `smpp` package (SMPP v3.4/v5.0 client and server) ships no types: the server side used by FakeSmsc.
declare module 'smpp' {
  import type { EventEmitter } from 'node:events';
  import type { Server as NetServer, Socket } from 'node:net';

  /** A decoded PDU: the header, then the command's parameters and TLVs by their SMPP names. */
  export class PDU {
    constructor(command: string, options?: Record<string, unknown>);
    command: string;
    command_id: number;
    command_status: number;
    sequence_number: number;
    isResponse(): boolean;
    response(options?: Record<string, unknown>): PDU;
    [field: string]: unknown;
  }

  export interface Session extends EventEmitter {
    readonly socket: Socket;
    send(pdu: PDU, onResponse?: (response: PDU) => void): boolean;
    deliver_sm(options: Record<string, unknown>, onResponse: (response: PDU) => void): boolean;
    close(callback?: () => void): void;
    destroy(callback?: () => void): void;
  }

  export interface Server extends NetServer {
    readonly sessions: Session[];
  }

  interface Smpp {
    createServer(options: Record<string, unknown>, onSession: (session: Session) => void): Server;
    PDU: typeof PDU;
    errors: Record<string, number>;
  }
  const smpp: Smpp;
  export default smpp;
}
