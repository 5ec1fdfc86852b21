import { Module, type DynamicModule } from '@nestjs/common';
import { Streams } from '@mfa/contracts';
import { EventPublisher, type NatsClients } from '@mfa/messaging';
import { HEALTH_CHECKS, MessagingModule, NATS, NatsHealth, OpsController, AuthModule, UserDataKeys } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import type { SmsProvider } from './adapters/sms/sms-provider.js';
import { SmsRequestsController } from './api/sms-requests.controller.js';
import { SmsDeliveryService } from './application/sms-delivery.service.js';
import type { DispatchConfig } from './config.js';
import { SMS_PROVIDERS } from './tokens.js';

/** dispatch: delivers SMS codes of challenges through the configured providers, with failover. */
@Module({})
export class AppModule {
  static forRoot(config: DispatchConfig, log: Logger, providers: readonly SmsProvider[]): DynamicModule {
    return {
      module: AppModule,
      imports: [
        MessagingModule.forRoot({
          serviceName: 'dispatch',
          nats: config,
          log,
          streams: [Streams.challenges, Streams.dispatch, Streams.userKeys, Streams.state, Streams.deadLetters],
          replicas: config.STREAM_REPLICAS,
        }),
        AuthModule.forRoot({ auth: config.auth, keyring: config.keyring }),
      ],
      controllers: [OpsController, SmsRequestsController],
      providers: [
        { provide: SMS_PROVIDERS, useValue: providers },
        { provide: UserDataKeys, useFactory: (nats: NatsClients) => new UserDataKeys(nats, config.keyring), inject: [NATS] },
        {
          provide: SmsDeliveryService,
          useFactory: (publisher: EventPublisher, smsProviders: readonly SmsProvider[], keys: UserDataKeys) =>
            new SmsDeliveryService({
              keyring: config.keyring,
              keys,
              providers: smsProviders,
              attemptsPerProvider: config.SMS_SEND_ATTEMPTS,
              retryBaseMs: config.SMS_RETRY_BASE_MS,
              publisher,
              log,
            }),
          inject: [EventPublisher, SMS_PROVIDERS, UserDataKeys],
        },
        { provide: HEALTH_CHECKS, useFactory: (nats: NatsHealth) => [nats], inject: [NatsHealth] },
      ],
    };
  }
}
