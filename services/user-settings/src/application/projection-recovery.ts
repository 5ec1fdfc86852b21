import { Inject, Injectable, type OnModuleInit } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { Consumers } from '@mfa/contracts';
import type { NatsClients } from '@mfa/messaging';
import { RedisKeys } from '@mfa/projection';
import { LOGGER, NATS, REDIS } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';

/**
 * A Redis without the projection marker has lost the user projection (flushed, replaced, no
 * persistence), or holds one of an older layout (the marker names its version): the projector
 * consumer is recreated from the start of the log so every user is projected again, instead of
 * every user answering registration_required. Only the instance that sets the marker does it.
 * Runs at init: the transport then creates the consumer anew (delivering from the start of the
 * log) before it pulls.
 */
@Injectable()
export class ProjectionRecovery implements OnModuleInit {
  constructor(
    @Inject(NATS) private readonly nats: NatsClients,
    @Inject(REDIS) private readonly redis: Redis,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  async onModuleInit(): Promise<void> {
    const claimed = await this.redis.set(RedisKeys.userProjectionMarker, new Date().toISOString(), 'NX');
    if (claimed !== 'OK') return;
    const { stream, durable } = Consumers.userProjector;
    const existed = await this.nats.jsm.consumers.delete(stream, durable).catch(() => false);
    if (existed) this.log.warn('Redis has no current user projection: replaying the user event log into it', { consumer: durable });
  }
}
