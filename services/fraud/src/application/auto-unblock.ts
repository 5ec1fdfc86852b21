import { Inject, Injectable, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { LOGGER } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { BlocksService } from './blocks.service.js';

/** How often ended blocks are looked for (and at boot). */
const EVERY_MS = 60_000;

/**
 * Records the automatic unblock of every block that has reached its end (BlocksService.expireDue).
 * The block itself stops at its end without this (the Redis key expires); this keeps the history,
 * also for blocks that ended while no fraud instance ran. It lifts no lockout: only an
 * administrator's users.unblock (or a success) does.
 */
@Injectable()
export class AutoUnblock implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(
    @Inject(BlocksService) private readonly blocks: BlocksService,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  onApplicationBootstrap(): void {
    void this.run();
    this.timer = setInterval(() => void this.run(), EVERY_MS);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  async run(now = new Date()): Promise<number> {
    if (this.running) return 0;
    const pass = this.blocks.expireDue(now);
    this.running = pass.finally(() => {
      this.running = undefined;
    });
    try {
      const recorded = await pass;
      if (recorded > 0) this.log.info('blocks that reached their end recorded as automatic unblocks', { recorded });
      return recorded;
    } catch (error) {
      this.log.warn('looking for ended blocks failed; the next pass tries again', { error });
      return 0;
    }
  }
}
