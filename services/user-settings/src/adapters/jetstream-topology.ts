import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import { Consumers, Streams } from '@mfa/contracts';
import { ensureConsumer, ensureStreams, type NatsClients } from '@mfa/messaging';
import { RedisKeys } from '@mfa/projection';
import { LOGGER, NATS } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import type { Redis } from 'ioredis';
import { CONFIG, REDIS } from '../tokens.js';
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
    @Inject(REDIS) private readonly redis: Redis,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  async onModuleInit(): Promise<void> {
    const replicas = this.config.STREAM_REPLICAS;
    await ensureStreams(this.nats.jsm, [Streams.userSettings, Streams.deadLetters], replicas);
    await this.replayIntoEmptyRedis();
    await ensureConsumer(this.nats.jsm, Consumers.userProjector);
  }

  /**
   * A Redis without the projection marker has lost the user projection (flushed, replaced, no
   * persistence): recreate the projector consumer from the start of the log so every user is
   * projected again, instead of every user answering registration_required. Only the instance
   * that sets the marker does it.
   */
  private async replayIntoEmptyRedis(): Promise<void> {
    const claimed = await this.redis.set(RedisKeys.userProjectionMarker, new Date().toISOString(), 'NX');
    if (claimed !== 'OK') return;
    const { stream, durable } = Consumers.userProjector;
    const existed = await this.nats.jsm.consumers.delete(stream, durable).catch(() => false);
    if (existed) this.log.warn('Redis has no user projection: replaying the user event log into it', { consumer: durable });
  }
}
