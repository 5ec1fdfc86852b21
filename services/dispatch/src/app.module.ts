import { Module, type DynamicModule } from '@nestjs/common';
import type { Keyring } from '@mfa/crypto';
import { EventPublisher } from '@mfa/messaging';
import { HEALTH_CHECKS, MessagingModule, NatsHealth, OpsController } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import type { SmsProvider } from './adapters/sms/sms-provider.js';
import { SmsRequestsConsumer, STREAM_REPLICAS } from './api/sms-requests.consumer.js';
import type { DispatchConfig } from './config.js';
import { SmsDeliveryService } from './delivery/sms-delivery.service.js';

/** dispatch: delivers SMS codes of challenges through the configured providers, with failover. */
@Module({})
export class AppModule {
  static forRoot(options: { config: DispatchConfig; log: Logger; keyring: Keyring; providers: readonly SmsProvider[] }): DynamicModule {
    const { config, log, keyring, providers } = options;
    return {
      module: AppModule,
      imports: [MessagingModule.forRoot({ serviceName: 'dispatch', natsUrl: config.NATS_URL, log })],
      controllers: [OpsController],
      providers: [
        { provide: STREAM_REPLICAS, useValue: config.STREAM_REPLICAS },
        {
          provide: SmsDeliveryService,
          useFactory: (publisher: EventPublisher) =>
            new SmsDeliveryService({
              keyring,
              providers,
              attemptsPerProvider: config.SMS_SEND_ATTEMPTS,
              retryBaseMs: config.SMS_RETRY_BASE_MS,
              publisher,
              log,
            }),
          inject: [EventPublisher],
        },
        SmsRequestsConsumer,
        { provide: HEALTH_CHECKS, useFactory: (nats: NatsHealth) => [nats], inject: [NatsHealth] },
      ],
    };
  }
}
