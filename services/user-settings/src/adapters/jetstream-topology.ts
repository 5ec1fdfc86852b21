import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { Consumers, Streams } from '@mfa/contracts';
import { ensureConsumer, ensureStream, type NatsClients } from '@mfa/messaging';
import { NATS } from '@mfa/service-kit';
import { CONFIG } from '../tokens.js';
import type { UserSettingsConfig } from '../config.js';

/**
 * The streams and consumer this service owns, created or updated at boot. Runs in onModuleInit,
 * which Nest completes everywhere before any onApplicationBootstrap starts handlers and consumers.
 */
@Injectable()
export class JetStreamTopology implements OnModuleInit {
  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(CONFIG) private readonly config: UserSettingsConfig,
  ) {}

  async onModuleInit(): Promise<void> {
    const replicas = this.config.STREAM_REPLICAS;
    await ensureStream(this.nats.jsm, Streams.userSettings, replicas);
    await ensureStream(this.nats.jsm, Streams.deadLetters, replicas);
    await ensureConsumer(this.nats.jsm, Consumers.userProjector);
  }
}
