import { Catch, Inject, type ArgumentsHost, type ExceptionFilter } from '@nestjs/common';
import { throwError, type Observable } from 'rxjs';
import type { ErrorReply } from '@mfa/contracts';
import type { Logger } from '@mfa/telemetry';
import { LOGGER } from '../tokens.js';
import { errorReplyOf } from './contract-error.js';
import { NatsRequestContext } from './context.js';

/**
 * Error replies live here. A request handler's error becomes the contract's
 * `{"error":{code,message}}` as a plain value (no observable on the way back); an event
 * handler's error is passed on, so the consumer naks or dead-letters the message.
 */
@Catch()
export class ContractErrorFilter implements ExceptionFilter<unknown> {
  constructor(@Inject(LOGGER) private readonly log: Logger) {}

  catch(exception: unknown, host: ArgumentsHost): ErrorReply | Observable<never> {
    const ctx = host.switchToRpc().getContext<unknown>();
    // Event handlers (JetStreamContext): the consumer naks or dead-letters; only requests get a reply.
    if (!(ctx instanceof NatsRequestContext)) return throwError(() => exception);
    // Nest hands whatever a filter returns back to the transport, which sends it as the reply.
    return errorReplyOf(exception, this.log, ctx.subject);
  }
}
