import { Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type pg from 'pg';
import type { Logger } from '@mfa/telemetry';
import { HEALTH_CHECKS, MessagingModule, NatsHealth, OpsController } from '@mfa/service-kit';
import { createPool, PostgresHealth } from './adapters/database.js';
import { SigninsRepository } from './adapters/signins.repository.js';
import { ReportConsumers, STREAM_REPLICAS } from './api/report-consumers.js';
import { ReportProjection } from './api/report-projection.js';
import { SigninsQueryHandler } from './api/signins-query.handler.js';
import type { ReportingConfig } from './config.js';

export const PG_POOL = Symbol('PG_POOL');

/** Closes the pool last: after the consumers and the query handler stopped (onModuleDestroy). */
@Injectable()
class PoolLifecycle implements OnApplicationShutdown {
  constructor(@Inject(PG_POOL) private readonly pool: pg.Pool) {}
  async onApplicationShutdown(): Promise<void> {
    await this.pool.end().catch(() => undefined);
  }
}

/**
 * reporting: projects challenge, delivery and tenant events into the Postgres sign-in report
 * and answers the report query.
 */
@Module({})
export class AppModule {
  static forRoot(config: ReportingConfig, log: Logger): DynamicModule {
    return {
      module: AppModule,
      imports: [MessagingModule.forRoot({ serviceName: 'reporting', natsUrl: config.NATS_URL, log })],
      controllers: [OpsController],
      providers: [
        { provide: PG_POOL, useFactory: () => createPool(config.DATABASE_URL, log) },
        PoolLifecycle,
        { provide: STREAM_REPLICAS, useValue: config.STREAM_REPLICAS },
        { provide: SigninsRepository, useFactory: (pool: pg.Pool) => new SigninsRepository(pool), inject: [PG_POOL] },
        { provide: ReportProjection, useFactory: (repo: SigninsRepository) => new ReportProjection(repo), inject: [SigninsRepository] },
        { provide: PostgresHealth, useFactory: (pool: pg.Pool) => new PostgresHealth(pool), inject: [PG_POOL] },
        {
          provide: HEALTH_CHECKS,
          useFactory: (nats: NatsHealth, postgres: PostgresHealth) => [nats, postgres],
          inject: [NatsHealth, PostgresHealth],
        },
        ReportConsumers,
        SigninsQueryHandler,
      ],
    };
  }
}
