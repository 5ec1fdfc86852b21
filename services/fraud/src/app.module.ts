import { Module, type DynamicModule } from '@nestjs/common';
import { Streams } from '@mfa/contracts';
import type { Logger } from '@mfa/telemetry';
import { HEALTH_CHECKS, MessagingModule, NatsHealth, OpsController, AuthModule } from '@mfa/service-kit';
import type { FraudConfig } from './config.js';

/**
 * fraud: runs with health and metrics; fraud alerts, auto-block and admin notifications arrive
 * in a later release and will consume the challenge events from here.
 */
@Module({})
export class AppModule {
  static forRoot(config: FraudConfig, log: Logger): DynamicModule {
    return {
      module: AppModule,
      imports: [
        MessagingModule.forRoot({ serviceName: 'fraud', nats: config, log, streams: [Streams.userSettings, Streams.state], replicas: config.STREAM_REPLICAS }),
        AuthModule.forRoot({ auth: config.auth, keyring: config.keyring }),
      ],
      controllers: [OpsController],
      providers: [{ provide: HEALTH_CHECKS, useFactory: (nats: NatsHealth) => [nats], inject: [NatsHealth] }],
    };
  }
}
