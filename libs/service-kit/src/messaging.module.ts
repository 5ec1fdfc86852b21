import { Global, Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import type { StreamDefinition } from '@mfa/contracts';
import { connectNats, ensureStreams, EventPublisher, natsSecurityFromEnv, stalledConsumers, type NatsClients } from '@mfa/messaging';
import type { Logger } from '@mfa/telemetry';
import type { NatsConfig } from './config.js';
import type { HealthCheck } from './health.js';
import { LOGGER, NATS } from './tokens.js';

interface MessagingOptions {
  serviceName: string;
  /** NATS_URL and the NATS_* credentials, TLS and inbox prefix: the service's validated configuration. */
  nats: NatsConfig;
  log: Logger;
  /** Streams the service writes to or reads from, created or updated at boot (STREAM_REPLICAS). */
  streams: readonly StreamDefinition[];
  replicas: number;
}

const TOPOLOGY = Symbol('TOPOLOGY');

/**
 * Streams, provisioned in onModuleInit: this module is imported by every AppModule, so this runs
 * before the service's own init hooks and before the transport creates its consumers and starts
 * pulling. Any instance may come first; provisioning is idempotent. Shared modules that read or
 * write streams of their own (the API client directory, the audit trail) provision them through
 * `ensure`, so that no service has to remember to list them.
 */
@Injectable()
export class JetStreamTopology implements OnModuleInit {
  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(TOPOLOGY) private readonly options: MessagingOptions,
  ) {}

  async onModuleInit(): Promise<void> {
    await this.ensure(this.options.streams);
  }

  /** Creates the streams if missing, with the service's STREAM_REPLICAS. */
  ensure(streams: readonly StreamDefinition[]): Promise<void> {
    return ensureStreams(this.nats.jsm, streams, this.options.replicas);
  }
}

/** Drains the connection last, after the transport and the other adapters have stopped. */
@Injectable()
class NatsLifecycle implements OnApplicationShutdown {
  constructor(@Inject(NATS) private readonly nats: NatsClients) {}
  async onApplicationShutdown(): Promise<void> {
    await this.nats.nc.drain().catch(() => undefined);
  }
}

@Injectable()
export class NatsHealth implements HealthCheck {
  readonly name = 'nats';
  constructor(@Inject(NATS) private readonly nats: NatsClients) {}
  async check(): Promise<void> {
    if (this.nats.nc.isClosed()) throw new Error('connection closed');
    await this.nats.nc.flush();
    await this.nats.jsm.getAccountInfo();
    if (stalledConsumers.size > 0) throw new Error(`not consuming: ${[...stalledConsumers].join(', ')} (being created again)`);
  }
}

/**
 * NATS for a service: the connection (JetStream and manager), the event publisher, the logger,
 * and the service's streams. The request/reply API and the consumers themselves are
 * served by NatsTransport (started by runService).
 */
@Global()
@Module({})
export class MessagingModule {
  static forRoot(options: MessagingOptions): DynamicModule {
    return {
      module: MessagingModule,
      providers: [
        { provide: TOPOLOGY, useValue: options },
        { provide: LOGGER, useValue: options.log },
        {
          provide: NATS,
          useFactory: () => connectNats({ url: options.nats.NATS_URL, name: options.serviceName, security: natsSecurityFromEnv(options.nats) }),
        },
        { provide: EventPublisher, useFactory: (nats: NatsClients) => new EventPublisher(nats.js), inject: [NATS] },
        NatsHealth,
        JetStreamTopology,
        NatsLifecycle,
      ],
      exports: [NATS, LOGGER, EventPublisher, NatsHealth, JetStreamTopology],
    };
  }
}
