import { BaseRpcContext } from '@nestjs/microservices';
import type { MsgHdrs } from '@nats-io/nats-core';
import type { ConsumerDefinition, Operator } from '@mfa/contracts';
import type { Principal } from '../auth/authenticator.js';

/**
 * What a request handler gets with `@Ctx()`: the subject, the NATS headers, when the request
 * arrived (handlers pass it on instead of reading the clock) and the caller's deadline, if any.
 */
export class NatsRequestContext extends BaseRpcContext<[subject: string, headers: MsgHdrs | undefined]> {
  /** Who called, set by ApiKeyGuard before validation. */
  principal: Principal | undefined;
  /** The operator named by the platform key (the console), set by ApiKeyGuard. */
  operator: Operator | undefined;

  constructor(
    readonly subject: string,
    readonly headers: MsgHdrs | undefined,
    readonly receivedAt: Date,
    /** Unix ms after which the caller no longer waits (`Mfa-Deadline`); undefined when not sent. */
    readonly deadline: number | undefined,
    /** The request's body as received (what an internal request's signature covers). */
    readonly data: Uint8Array = new Uint8Array(0),
  ) {
    super([subject, headers]);
  }
}

/**
 * What an event handler gets with `@Ctx()`: the durable consumer it serves and a signal that
 * aborts when the service stops (long waits end early; the message goes back to JetStream).
 */
export class JetStreamContext extends BaseRpcContext<[consumer: ConsumerDefinition]> {
  constructor(
    readonly consumer: ConsumerDefinition,
    readonly signal: AbortSignal,
  ) {
    super([consumer]);
  }
}
