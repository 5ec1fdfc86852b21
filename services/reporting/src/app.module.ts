import { Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type pg from 'pg';
import { Streams } from '@mfa/contracts';
import type { NatsClients } from '@mfa/messaging';
import { HEALTH_CHECKS, MessagingModule, NATS, NatsHealth, OpsController, AuthModule, UserDataKeys } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { createPool, PostgresHealth, REPORT_CONNECTIONS_ON_PRIMARY } from './adapters/database.js';
import { AuditRepository } from './adapters/audit.repository.js';
import { ErasuresRepository } from './adapters/erasures.repository.js';
import { FraudReportRepository } from './adapters/fraud-report.repository.js';
import { UsageRepository } from './adapters/usage.repository.js';
import { FraudReportController } from './api/fraud-report.controller.js';
import { FraudReportService } from './application/fraud-report.service.js';
import { SigninsRepository } from './adapters/signins.repository.js';
import { AuditController } from './api/audit.controller.js';
import { AuditReportService } from './application/audit-report.service.js';
import { ReportEventsController } from './api/report-events.controller.js';
import { SigninsController } from './api/signins.controller.js';
import { PersonalDataReader } from './application/personal-data.reader.js';
import { knownPseudonyms, pseudonymizer } from './application/pseudonyms.js';
import { ReportProjection } from './application/report-projection.js';
import { SigninReportService } from './application/signin-report.service.js';
import type { ReportingConfig } from './config.js';
import { PG_POOL, PG_READ_POOL } from './tokens.js';

/** Closes the pools after the transport stopped: in-flight batches commit, queries answer. */
@Injectable()
class PoolLifecycle implements OnApplicationShutdown {
  constructor(
    @Inject(PG_POOL) private readonly pool: pg.Pool,
    @Inject(PG_READ_POOL) private readonly readPool: pg.Pool,
  ) {}
  async onApplicationShutdown(): Promise<void> {
    await Promise.all([this.pool, this.readPool].map((pool) => pool.end().catch(() => undefined)));
  }
}

/**
 * reporting: projects challenge, delivery and tenant events into the Postgres sign-in report
 * (personal data kept sealed, erased users by pseudonym), the admin audit trail, fraud alerts,
 * blocks and IP locks, and users' lifetimes; answers the report queries (sign-ins, audit, fraud,
 * blocked, usage), opening the personal data of the rows it returns.
 */
@Module({})
export class AppModule {
  static forRoot(config: ReportingConfig, log: Logger): DynamicModule {
    return {
      module: AppModule,
      imports: [
        MessagingModule.forRoot({
          serviceName: 'reporting',
          nats: config,
          log,
          streams: [Streams.challenges, Streams.dispatch, Streams.userSettings, Streams.userKeys, Streams.audit, Streams.fraud, Streams.state, Streams.deadLetters],
          replicas: config.STREAM_REPLICAS,
        }),
        AuthModule.forRoot({ auth: config.auth, keyring: config.keyring }),
      ],
      controllers: [OpsController, ReportEventsController, SigninsController, AuditController, FraudReportController],
      providers: [
        { provide: PG_POOL, useFactory: () => createPool(config.DATABASE_URL, log) },
        // Report queries go to the replica when DATABASE_READ_URL names one (docs/operations.md, "Scaling out"); else
        // to the primary through a small pool of their own, so that slow reports never hold the projection's connections.
        {
          provide: PG_READ_POOL,
          useFactory: () =>
            config.DATABASE_READ_URL
              ? createPool(config.DATABASE_READ_URL, log, { applicationName: 'mfa-reporting-reads' })
              : createPool(config.DATABASE_URL, log, { max: REPORT_CONNECTIONS_ON_PRIMARY, applicationName: 'mfa-reporting-reads' }),
        },
        PoolLifecycle,
        { provide: SigninsRepository, useFactory: (pool: pg.Pool, read: pg.Pool) => new SigninsRepository(pool, read), inject: [PG_POOL, PG_READ_POOL] },
        { provide: UserDataKeys, useFactory: (nats: NatsClients) => new UserDataKeys(nats, config.keyring), inject: [NATS] },
        { provide: ErasuresRepository, useFactory: (pool: pg.Pool) => new ErasuresRepository(pool), inject: [PG_POOL] },
        {
          provide: ReportProjection,
          useFactory: (repo: SigninsRepository, keys: UserDataKeys, erasures: ErasuresRepository) =>
            new ReportProjection(repo, keys, knownPseudonyms(config.keyring), erasures),
          inject: [SigninsRepository, UserDataKeys, ErasuresRepository],
        },
        {
          provide: SigninReportService,
          useFactory: (repo: SigninsRepository, keys: UserDataKeys) =>
            new SigninReportService(repo, new PersonalDataReader(keys, pseudonymizer(config.keyring), (m, f) => log.warn(m, f))),
          inject: [SigninsRepository, UserDataKeys],
        },
        { provide: AuditRepository, useFactory: (pool: pg.Pool, read: pg.Pool) => new AuditRepository(pool, read), inject: [PG_POOL, PG_READ_POOL] },
        {
          provide: AuditReportService,
          useFactory: (repo: AuditRepository) => new AuditReportService(repo, knownPseudonyms(config.keyring)),
          inject: [AuditRepository],
        },
        {
          provide: FraudReportService,
          useFactory: (pool: pg.Pool, read: pg.Pool, signins: SigninsRepository, keys: UserDataKeys) =>
            new FraudReportService(
              new FraudReportRepository(pool, read),
              new UsageRepository(pool, read),
              signins,
              new PersonalDataReader(keys, pseudonymizer(config.keyring), (m, f) => log.warn(m, f)),
              knownPseudonyms(config.keyring),
              config.keyring,
            ),
          inject: [PG_POOL, PG_READ_POOL, SigninsRepository, UserDataKeys],
        },
        { provide: PostgresHealth, useFactory: (pool: pg.Pool) => new PostgresHealth(pool), inject: [PG_POOL] },
        {
          provide: HEALTH_CHECKS,
          useFactory: (nats: NatsHealth, postgres: PostgresHealth) => [nats, postgres],
          inject: [NatsHealth, PostgresHealth],
        },
      ],
    };
  }
}
