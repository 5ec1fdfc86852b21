import { Global, Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type { Logger } from '@mfa/telemetry';
import { connectNats, EventPublisher, RequestRouter, type NatsClients } from '@mfa/messaging';
import type { HealthCheck } from './health.js';

export const NATS = Symbol('NATS');
export const LOGGER = Symbol('LOGGER');
export const SERVICE_NAME = Symbol('SERVICE_NAME');

@Injectable()
export class NatsLifecycle implements OnApplicationShutdown {
  constructor(@Inject(NATS) private readonly nats: NatsClients) {}
  async onApplicationShutdown(): Promise<void> {
    await this.nats.nc.drain().catch(() => undefined);
  }
}

export class NatsHealth implements HealthCheck {
  readonly name = 'nats';
  constructor(private readonly nats: NatsClients) {}
  async check(): Promise<void> {
    if (this.nats.nc.isClosed()) throw new Error('connection closed');
    await this.nats.nc.flush();
    await this.nats.jsm.getAccountInfo();
  }
}

/**
 * NATS for a service: the connection (JetStream and manager), the request router for the public
 * API (queue group = service name) and the event publisher. Drained on shutdown, after the
 * handlers and consumers of the feature modules have stopped.
 */
@Global()
@Module({})
export class MessagingModule {
  static forRoot(options: { serviceName: string; natsUrl: string; log: Logger }): DynamicModule {
    return {
      module: MessagingModule,
      providers: [
        { provide: SERVICE_NAME, useValue: options.serviceName },
        { provide: LOGGER, useValue: options.log },
        {
          provide: NATS,
          useFactory: () => connectNats({ url: options.natsUrl, name: options.serviceName }),
        },
        {
          provide: RequestRouter,
          useFactory: (nats: NatsClients) => new RequestRouter(nats.nc, options.serviceName, options.log),
          inject: [NATS],
        },
        { provide: EventPublisher, useFactory: (nats: NatsClients) => new EventPublisher(nats.js), inject: [NATS] },
        { provide: NatsHealth, useFactory: (nats: NatsClients) => new NatsHealth(nats), inject: [NATS] },
        NatsLifecycle,
      ],
      exports: [NATS, LOGGER, SERVICE_NAME, RequestRouter, EventPublisher, NatsHealth],
    };
  }
}
