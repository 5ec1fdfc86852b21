import { Inject, Injectable, Module, type DynamicModule, type OnApplicationShutdown } from '@nestjs/common';
import { ProviderBreakers } from './adapters/sms/circuit-breakers.js';

/** The breakers' timers stop with the service. */
@Injectable()
class BreakersLifecycle implements OnApplicationShutdown {
  constructor(@Inject(ProviderBreakers) private readonly breakers: ProviderBreakers) {}
  onApplicationShutdown(): void {
    this.breakers.shutdown();
  }
}
import { Streams } from '@mfa/contracts';
import { EventPublisher, type NatsClients } from '@mfa/messaging';
import type { Redis } from 'ioredis';
import { HEALTH_CHECKS, MessagingModule, NATS, NatsHealth, OpsController, AuthModule, REDIS, RedisHealth, RedisModule, UserDataKeys } from '@mfa/service-kit';
import { PhoneThrottle } from './adapters/phone-throttle.js';
import { SendGuard } from './adapters/send-guard.js';
import type { Logger } from '@mfa/telemetry';
import type { SmsProvider } from './adapters/sms/sms-provider.js';
import { SmsRequestsController } from './api/sms-requests.controller.js';
import { SmsDeliveryService } from './application/sms-delivery.service.js';
import { SmsResendService } from './application/sms-resend.service.js';
import { ChallengeStarts } from './adapters/challenge-starts.js';
import type { DispatchConfig } from './config.js';
import { SMS_PROVIDERS, VOICE_WEBHOOK_BASE } from './tokens.js';
import { CallStore } from './adapters/voice/call-store.js';
import { TwilioVoiceProvider } from './adapters/voice/twilio-voice.js';
import { SmsWebhooksController, VoiceRequestsController, VoiceWebhooksController } from './api/twilio.controller.js';
import { SmsReceiptsService } from './application/sms-receipts.service.js';
import { VoiceCallService } from './application/voice-call.service.js';

/**
 * dispatch: delivers SMS codes of challenges through the configured providers, with failover; places
 * the calls of voice challenges through Twilio and answers their webhooks (TwiML, keys, status).
 */
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
        RedisModule.forRoot({ url: config.REDIS_URL, connectionName: 'dispatch', log }),
        AuthModule.forRoot({ auth: config.auth, keyring: config.keyring }),
      ],
      controllers: [OpsController, SmsRequestsController, VoiceRequestsController, VoiceWebhooksController, SmsWebhooksController],
      providers: [
        { provide: SMS_PROVIDERS, useValue: providers },
        {
          provide: ProviderBreakers,
          useFactory: () =>
            new ProviderBreakers(providers, {
              errorThresholdPercentage: config.PROVIDER_BREAKER_ERROR_PERCENT,
              volumeThreshold: config.PROVIDER_BREAKER_MIN_CALLS,
              windowSeconds: config.PROVIDER_BREAKER_WINDOW_SECONDS,
              resetSeconds: config.PROVIDER_BREAKER_RESET_SECONDS,
            }),
        },
        BreakersLifecycle,
        { provide: VOICE_WEBHOOK_BASE, useValue: config.VOICE_WEBHOOK_BASE_URL },
        { provide: PhoneThrottle, useFactory: (redis: Redis) => new PhoneThrottle(redis, config.keyring, {
              maxSends: config.PHONE_MAX_SENDS_PER_WINDOW,
              windowSeconds: config.PHONE_SEND_WINDOW_SECONDS,
              prefixMaxSends: config.PREFIX_MAX_SENDS_PER_WINDOW,
              prefixGlobalMaxSends: config.PREFIX_GLOBAL_MAX_SENDS_PER_WINDOW,
              prefixWindowSeconds: config.PREFIX_SEND_WINDOW_SECONDS,
            }), inject: [REDIS] },
        {
          provide: SmsReceiptsService,
          useFactory: (publisher: EventPublisher, guard: SendGuard) =>
            new SmsReceiptsService({ authToken: config.TWILIO_AUTH_TOKEN, tenantOf: (id) => guard.tenantOf(id), publisher, guard, log }),
          inject: [EventPublisher, SendGuard],
        },
        {
          provide: VoiceCallService,
          useFactory: (publisher: EventPublisher, keys: UserDataKeys, guard: SendGuard, redis: Redis, nats: NatsClients, phoneThrottle: PhoneThrottle) =>
            new VoiceCallService({
              keys,
              provider:
                config.TWILIO_ACCOUNT_SID && config.TWILIO_AUTH_TOKEN
                  ? new TwilioVoiceProvider({ apiUrl: config.TWILIO_API_URL, accountSid: config.TWILIO_ACCOUNT_SID, authToken: config.TWILIO_AUTH_TOKEN, timeoutMs: config.TWILIO_TIMEOUT_MS })
                  : undefined,
              webhookBaseUrl: config.VOICE_WEBHOOK_BASE_URL,
              authToken: config.TWILIO_AUTH_TOKEN,
              ringSeconds: config.VOICE_RING_SECONDS,
              publisher,
              guard,
              phoneThrottle,
              calls: new CallStore(redis),
              nc: nats.nc,
              log,
            }),
          inject: [EventPublisher, UserDataKeys, SendGuard, REDIS, NATS, PhoneThrottle],
        },
        { provide: UserDataKeys, useFactory: (nats: NatsClients) => new UserDataKeys(nats, config.keyring), inject: [NATS] },
        { provide: SendGuard, useFactory: (redis: Redis) => new SendGuard(redis), inject: [REDIS] },
        {
          provide: SmsDeliveryService,
          useFactory: (publisher: EventPublisher, smsProviders: readonly SmsProvider[], keys: UserDataKeys, guard: SendGuard, phoneThrottle: PhoneThrottle, breakers: ProviderBreakers) =>
            new SmsDeliveryService({
              keyring: config.keyring,
              keys,
              providers: smsProviders,
              attemptsPerProvider: config.SMS_SEND_ATTEMPTS,
              retryBaseMs: config.SMS_RETRY_BASE_MS,
              publisher,
              guard,
              phoneThrottle,
              breakers,
              webhookBaseUrl: config.VOICE_WEBHOOK_BASE_URL,
              // A claim outlives one provider call: the provider's total timeout and a margin.
              claimTtlMs: config.TWILIO_TIMEOUT_MS + 5_000,
              log,
            }),
          inject: [EventPublisher, SMS_PROVIDERS, UserDataKeys, SendGuard, PhoneThrottle, ProviderBreakers],
        },
        {
          provide: SmsResendService,
          useFactory: (nats: NatsClients, guard: SendGuard, delivery: SmsDeliveryService, smsProviders: readonly SmsProvider[], breakers: ProviderBreakers) =>
            new SmsResendService({
              starts: new ChallengeStarts(nats.jsm),
              guard,
              delivery,
              providers: smsProviders.map((p) => p.name),
              breakers,
              log,
            }),
          inject: [NATS, SendGuard, SmsDeliveryService, SMS_PROVIDERS, ProviderBreakers],
        },
        {
          provide: HEALTH_CHECKS,
          useFactory: (nats: NatsHealth, redis: RedisHealth, breakers: ProviderBreakers) => [nats, redis, breakers.healthCheck()],
          inject: [NatsHealth, RedisHealth, ProviderBreakers],
        },
      ],
    };
  }
}
