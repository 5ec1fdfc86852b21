import { Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import type { RedisClient } from '@mfa/projection';
import { Streams } from '@mfa/contracts';
import { EventPublisher, type NatsClients } from '@mfa/messaging';
import { UserProjectionWriter } from '@mfa/projection';
import type { Logger } from '@mfa/telemetry';
import { AuthModule, HEALTH_CHECKS, MessagingModule, NATS, NatsHealth, OpsController, REDIS, RedisHealth, RedisModule, redisConnectionFrom, serverIp } from '@mfa/service-kit';
import { ChallengeDenial } from './adapters/challenge-denial.js';
import { FraudAlertsService } from './application/fraud-alerts.service.js';
import { FraudLog } from './adapters/fraud-log.js';
import { UserDirectory } from './adapters/user-directory.js';
import { IpCounters } from './adapters/ip-counters.js';
import { MailLedger } from './adapters/mail-ledger.js';
import { LogMailer, SmtpMailer, UnconfiguredMailer, type Mailer } from './adapters/mailer.js';
import { NotifierController } from './api/notifier.controller.js';
import { NotifierService } from './application/notifier.service.js';
import { BlockProjectorController } from './api/block-projector.controller.js';
import { IpDenialsController } from './api/ip-denials.controller.js';
import { IpLockoutService } from './application/ip-lockout.service.js';
import { IpThrottleService } from './application/ip-throttle.service.js';
import { BlocksController } from './api/blocks.controller.js';
import { FraudAlertsController } from './api/fraud-alerts.controller.js';
import { BlockEnds } from './adapters/block-ends.js';
import { AutoUnblock } from './application/auto-unblock.js';
import { BlocksService } from './application/blocks.service.js';
import type { FraudConfig } from './config.js';

const MAILER = Symbol('MAILER');

/**
 * SMTP when SMTP_URL is set. Without it, only development logs that an e-mail would have gone
 * (LogMailer); production records each as failed (UnconfiguredMailer), so an alert's recipients,
 * user and comment never reach its logs, whatever NotifierService finds when it handles the alert.
 */
export function mailerFor(config: Pick<FraudConfig, 'SMTP_URL' | 'SMTP_FROM' | 'SMTP_TIMEOUT_SECONDS' | 'NODE_ENV'>, log: Logger): Mailer {
  if (config.SMTP_URL) return new SmtpMailer(config.SMTP_URL, config.SMTP_FROM, config.SMTP_TIMEOUT_SECONDS);
  return config.NODE_ENV === 'production' ? new UnconfiguredMailer() : new LogMailer(config.SMTP_FROM, log);
}

/** The SMTP pool is closed after the last alert is handled. */
@Injectable()
class MailerLifecycle implements OnApplicationShutdown {
  constructor(@Inject(MAILER) private readonly mailer: Mailer) {}
  onApplicationShutdown(): void {
    this.mailer.close();
  }
}

/**
 * fraud: owns the users' blocks (users.block, users.unblock, the automatic unblock at a block's
 * end) as an event-sourced aggregate per user in MFA_FRAUD, and projects them into Redis for
 * auth-challenge's start script; takes fraud reports (fraud.report: the challenge denied, the
 * tenant's auto-block); counts denials per client address across users and locks addresses
 * (per-IP lockout, its own aggregate per address, held in memory by auth-challenge); counts the
 * starts that send something per client address and throttles addresses (IpThrottled); e-mails
 * every fraud alert to the tenant's notificationEmails over SMTP.
 */
@Module({})
export class AppModule {
  static forRoot(config: FraudConfig, log: Logger): DynamicModule {
    return {
      module: AppModule,
      imports: [
        MessagingModule.forRoot({
          serviceName: 'fraud',
          nats: config,
          log,
          // Users and tenants are read from the first; blocks and alerts are recorded on the second,
          // the challenge a fraud report denies on the third, per-IP throttles on MFA_THROTTLES.
          streams: [Streams.userSettings, Streams.fraud, Streams.challenges, Streams.throttles, Streams.audit, Streams.state, Streams.deadLetters],
          replicas: config.STREAM_REPLICAS,
        }),
        RedisModule.forRoot({ connection: redisConnectionFrom(config), connectionName: 'fraud', log }),
        AuthModule.forRoot({ auth: config.auth, keyring: config.keyring }),
      ],
      controllers: [OpsController, BlocksController, BlockProjectorController, FraudAlertsController, IpDenialsController, NotifierController],
      providers: [
        {
          provide: BlocksService,
          useFactory: (nats: NatsClients, publisher: EventPublisher, redis: RedisClient) =>
            new BlocksService(new FraudLog(nats.jsm, publisher), new UserDirectory(nats.jsm), new UserProjectionWriter(redis, config.keyring), nats, log, new BlockEnds(redis)),
          inject: [NATS, EventPublisher, REDIS],
        },
        {
          provide: FraudAlertsService,
          useFactory: (nats: NatsClients, publisher: EventPublisher, redis: RedisClient, blocks: BlocksService) =>
            new FraudAlertsService(
              blocks,
              new ChallengeDenial(redis),
              publisher,
              config.keyring,
              { name: config.INSTANCE_NAME, ip: serverIp() },
              config.SMTP_URL !== undefined || config.NODE_ENV !== 'production',
            ),
          inject: [NATS, EventPublisher, REDIS, BlocksService],
        },
        // One set of per-address counters (denials for the lockout, starts for the throttle).
        { provide: IpCounters, useFactory: (redis: RedisClient) => new IpCounters(redis, config.IP_MAX_STARTS_PER_WINDOW), inject: [REDIS] },
        {
          provide: IpLockoutService,
          useFactory: (nats: NatsClients, publisher: EventPublisher, counters: IpCounters, blocks: BlocksService) =>
            new IpLockoutService(new FraudLog(nats.jsm, publisher), counters, new UserDirectory(nats.jsm), blocks, nats, config.keyring, log),
          inject: [NATS, EventPublisher, IpCounters, BlocksService],
        },
        {
          provide: IpThrottleService,
          useFactory: (publisher: EventPublisher, counters: IpCounters, lockout: IpLockoutService) =>
            new IpThrottleService({ maxStarts: config.IP_MAX_STARTS_PER_WINDOW, windowSeconds: config.IP_START_WINDOW_SECONDS }, counters, lockout, publisher, log),
          inject: [EventPublisher, IpCounters, IpLockoutService],
        },
        { provide: MAILER, useFactory: (): Mailer => mailerFor(config, log) },
        MailerLifecycle,
        {
          provide: NotifierService,
          useFactory: (nats: NatsClients, publisher: EventPublisher, redis: RedisClient, mailer: Mailer) =>
            new NotifierService(mailer, new MailLedger(redis), new UserDirectory(nats.jsm), publisher, config.SMTP_MAX_ATTEMPTS, log),
          inject: [NATS, EventPublisher, REDIS, MAILER],
        },
        AutoUnblock,
        { provide: HEALTH_CHECKS, useFactory: (nats: NatsHealth, redis: RedisHealth) => [nats, redis], inject: [NatsHealth, RedisHealth] },
      ],
    };
  }
}
