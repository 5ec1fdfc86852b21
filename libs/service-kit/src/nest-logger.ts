import type { LoggerService } from '@nestjs/common';
import type { Logger } from '@mfa/telemetry';

/** Routes Nest's own log lines into our JSON logger. */
export class NestJsonLogger implements LoggerService {
  constructor(private readonly out: Logger) {}
  log(message: unknown, context?: string) {
    this.out.info(String(message), context ? { context } : undefined);
  }
  error(message: unknown, trace?: string, context?: string) {
    this.out.error(String(message), { context, trace });
  }
  warn(message: unknown, context?: string) {
    this.out.warn(String(message), context ? { context } : undefined);
  }
  debug(message: unknown, context?: string) {
    this.out.debug(String(message), context ? { context } : undefined);
  }
  verbose(message: unknown, context?: string) {
    this.out.debug(String(message), context ? { context } : undefined);
  }
}
