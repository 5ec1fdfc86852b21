import { Inject, Injectable, Module, type DynamicModule, type OnApplicationBootstrap, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { ProviderBreakers } from './adapters/circuit-breakers.js';
import { PushProviderError, type PushNotification, type PushProvider } from './adapters/push/push-provider.js';

/**
 * The providers with a session of their own (SMPP) bind when the service starts and unbind when it
 * stops; their receipts go to SmsReceiptsService. The breakers' timers stop with the service.
 */
@Injectable()
class SmsProvidersLifecycle implements OnApplicationBootstrap, OnApplicationShutdown {
  constructor(
    @Inject(SMS_PROVIDERS) private readonly providers: readonly SmsProvider[],
    @Inject(ProviderBreakers) private readonly breakers: ProviderBreakers,
    @Inject(SmsReceiptsService) private readonly receipts: SmsReceiptsService,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  onApplicationBootstrap(): void {
    for (const provider of this.providers.filter(hasSession)) {
      // At 0 from the start, so that the alert on it (SmscReusesMessageIds) sees the first reuse
      // as an increase, also on an instance younger than its window.
      smsMessageIdsReused.inc({ provider: provider.name }, 0);
      provider.start({ log: this.log, onReceipt: (receipt) => this.receipts.reported(receipt) });
    }
  }

  async onApplicationShutdown(): Promise<void> {
    await Promise.all(this.providers.filter(hasSession).map((provider) => provider.stop()));
    this.breakers.shutdown();
  }
}

/**
 * The deleted tenants are read before the transport takes the first request (nothing is sent for
 * a tenant before dispatch knows whether it is deleted), and followed until the service stops.
 */
@Injectable()
class DeletedTenantsLifecycle implements OnModuleInit, OnApplicationShutdown {
  constructor(@Inject(DeletedTenants) private readonly tenants: DeletedTenants) {}

  async onModuleInit(): Promise<void> {
    await this.tenants.start();
  }

  async onApplicationShutdown(): Promise<void> {
    await this.tenants.stop();
  }
}

/** The push providers' connections (APNs' HTTP/2 session) close, and their breakers' timers stop, with the service. */
@Injectable()
class PushProvidersLifecycle implements OnApplicationShutdown {
  constructor(
    @Inject(PUSH_PROVIDERS) private readonly providers: readonly PushProvider[],
    @Inject(PUSH_BREAKERS) private readonly breakers: ProviderBreakers<PushNotification>,
  ) {}

  async onApplicationShutdown(): Promise<void> {
    this.breakers.shutdown();
    await Promise.all(this.providers.map((provider) => provider.close?.()));
  }
}
import { Streams } from '@mfa/contracts';
import { EventPublisher, type NatsClients } from '@mfa/messaging';
import type { RedisClient } from '@mfa/projection';
import { HEALTH_CHECKS, InternalRequests, LOGGER, MessagingModule, NATS, NatsHealth, OpsController, AuthModule, REDIS, RedisHealth, RedisModule, redisConnectionFrom, UserDataKeys } from '@mfa/service-kit';
import { PhoneThrottle } from './adapters/phone-throttle.js';
import { SendGuard } from './adapters/send-guard.js';
import type { Logger } from '@mfa/telemetry';
import { hasSession, type SmsProvider } from './adapters/sms/sms-provider.js';
import { ReceiptRoutes } from './adapters/receipt-routes.js';
import { SmsRequestsController } from './api/sms-requests.controller.js';
import { SmsDeliveryService } from './application/sms-delivery.service.js';
import { SmsResendService } from './application/sms-resend.service.js';
import { ChallengeStarts } from './adapters/challenge-starts.js';
import type { DispatchConfig } from './config.js';
import { PUSH_BREAKERS, PUSH_PROVIDERS, SMS_PROVIDERS, VOICE_WEBHOOK_BASE } from './tokens.js';
import { CIRCUIT_OPEN } from './adapters/circuit-breakers.js';
import { DeviceDirectory } from './adapters/push/devices.js';
import { PushRequestsController } from './api/push-requests.controller.js';
import { PushDeliveryService } from './application/push-delivery.service.js';
import { InternalSubjects, type DeviceReregisterRequest } from '@mfa/contracts';
import { CallStore } from './adapters/voice/call-store.js';
import { TwilioVoiceProvider } from './adapters/voice/twilio-voice.js';
import { SmsWebhooksController, VoiceRequestsController, VoiceWebhooksController } from './api/twilio.controller.js';
import { SmsReceiptsService } from './application/sms-receipts.service.js';
import { VoiceCallService, type VoiceOptions } from './application/voice-call.service.js';
import { ConsoleVoiceProvider } from './adapters/voice/console-voice.js';
import { ConfigError } from '@mfa/service-kit';
import { DEVELOPMENT_VOICE_WEBHOOK_TOKEN } from '@mfa/contracts';
import { RecordingStore } from './adapters/voice/recording-store.js';
import { VoiceRecordingsService } from './application/voice-recordings.service.js';
import { RecordingFetchController, VoiceRecordingsController } from './api/voice-recordings.controller.js';
import { DeletedTenants, tenantSettingsOf } from '@mfa/messaging';
import { smsMessageIdsReused } from './application/metrics.js';

/**
 * Who places calls, where their webhooks are, and what signs them: Twilio (with its auth token), or
 * in development the console provider (its public token, this service's own address by default).
 */
function voiceProvider(config: DispatchConfig): Pick<VoiceOptions, 'provider' | 'webhookBaseUrl' | 'authToken'> {
  if (config.VOICE_PROVIDER === 'console') {
    if (config.NODE_ENV === 'production') throw new ConfigError('VOICE_PROVIDER=console is for development only; refused when NODE_ENV=production');
    const host = config.HTTP_HOST === '0.0.0.0' || config.HTTP_HOST === '::' ? '127.0.0.1' : config.HTTP_HOST;
    return { provider: new ConsoleVoiceProvider(), webhookBaseUrl: config.VOICE_WEBHOOK_BASE_URL ?? `http://${host}:${config.HTTP_PORT}`, authToken: DEVELOPMENT_VOICE_WEBHOOK_TOKEN };
  }
  const twilio = config.TWILIO_ACCOUNT_SID && config.TWILIO_AUTH_TOKEN;
  if (config.VOICE_PROVIDER === 'twilio' && !twilio) throw new ConfigError('VOICE_PROVIDER=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN');
  return {
    provider: twilio
      ? new TwilioVoiceProvider({ apiUrl: config.TWILIO_API_URL, accountSid: config.TWILIO_ACCOUNT_SID!, authToken: config.TWILIO_AUTH_TOKEN!, timeoutMs: config.TWILIO_TIMEOUT_MS })
      : undefined,
    webhookBaseUrl: config.VOICE_WEBHOOK_BASE_URL,
    authToken: config.TWILIO_AUTH_TOKEN,
  };
}

/** user-settings answers a reregister request quickly; a push outcome should not wait long for it. */
const REREGISTER_TIMEOUT_MS = 5_000;

/**
 * dispatch: delivers SMS codes of challenges through the configured providers, with failover; places
 * the calls of voice challenges through Twilio and answers their webhooks (TwiML, keys, status);
 * pushes push challenges to the user's devices through FCM and APNs.
 */
@Module({})
export class AppModule {
  static forRoot(config: DispatchConfig, log: Logger, providers: readonly SmsProvider[], pushProviders: readonly PushProvider[] = []): DynamicModule {
    const voice = voiceProvider(config);
    const breakerPolicy = {
      errorThresholdPercentage: config.PROVIDER_BREAKER_ERROR_PERCENT,
      volumeThreshold: config.PROVIDER_BREAKER_MIN_CALLS,
      windowSeconds: config.PROVIDER_BREAKER_WINDOW_SECONDS,
      resetSeconds: config.PROVIDER_BREAKER_RESET_SECONDS,
    };
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
        RedisModule.forRoot({ connection: redisConnectionFrom(config), connectionName: 'dispatch', log }),
        AuthModule.forRoot({ auth: config.auth, keyring: config.keyring }),
      ],
      controllers: [OpsController, SmsRequestsController, PushRequestsController, VoiceRequestsController, VoiceWebhooksController, SmsWebhooksController, VoiceRecordingsController, RecordingFetchController],
      providers: [
        { provide: SMS_PROVIDERS, useValue: providers },
        { provide: ProviderBreakers, useFactory: () => new ProviderBreakers(providers, breakerPolicy) },
        SmsProvidersLifecycle,
        { provide: PUSH_PROVIDERS, useValue: pushProviders },
        {
          provide: PUSH_BREAKERS,
          useFactory: () =>
            new ProviderBreakers<PushNotification>(pushProviders, breakerPolicy, {
              check: 'push_providers',
              circuitOpen: (provider) => new PushProviderError(CIRCUIT_OPEN, { provider, transient: false }),
            }),
        },
        PushProvidersLifecycle,
        // Which tenants are deleted (tenants.delete), in memory: no SMS, call or push for them.
        { provide: DeletedTenants, useFactory: (nats: NatsClients) => new DeletedTenants(nats, log), inject: [NATS] },
        DeletedTenantsLifecycle,
        // The services' signed requests (mfa.int.): one client for the push and the voice paths.
        { provide: InternalRequests, useFactory: (nats: NatsClients) => new InternalRequests(nats.nc, config.keyring), inject: [NATS] },
        {
          provide: PushDeliveryService,
          useFactory: (publisher: EventPublisher, guard: SendGuard, redis: RedisClient, internal: InternalRequests, breakers: ProviderBreakers<PushNotification>, tenants: DeletedTenants) =>
            new PushDeliveryService({
              tenants,
              keyring: config.keyring,
              providers: pushProviders,
              attemptsPerProvider: config.PUSH_SEND_ATTEMPTS,
              retryBaseMs: config.PUSH_RETRY_BASE_MS,
              publisher,
              devices: new DeviceDirectory(redis),
              guard,
              breakers,
              reregister: async (request: DeviceReregisterRequest) => {
                const reply = await internal.request<{ error?: { code: string; message: string } }>(InternalSubjects.deviceReregister, request, { timeoutMs: REREGISTER_TIMEOUT_MS });
                if (reply.error) throw new Error(`${InternalSubjects.deviceReregister}: ${reply.error.code}: ${reply.error.message}`);
              },
              claimTtlMs: config.PUSH_TIMEOUT_MS + 5_000,
              log,
            }),
          inject: [EventPublisher, SendGuard, REDIS, InternalRequests, PUSH_BREAKERS, DeletedTenants],
        },
        { provide: ReceiptRoutes, useFactory: (redis: RedisClient) => new ReceiptRoutes(redis), inject: [REDIS] },
        { provide: VOICE_WEBHOOK_BASE, useValue: voice.webhookBaseUrl },
        { provide: PhoneThrottle, useFactory: (redis: RedisClient) => new PhoneThrottle(redis, config.keyring, {
              maxSends: config.PHONE_MAX_SENDS_PER_WINDOW,
              windowSeconds: config.PHONE_SEND_WINDOW_SECONDS,
              prefixMaxSends: config.PREFIX_MAX_SENDS_PER_WINDOW,
              prefixGlobalMaxSends: config.PREFIX_GLOBAL_MAX_SENDS_PER_WINDOW,
              prefixWindowSeconds: config.PREFIX_SEND_WINDOW_SECONDS,
            }), inject: [REDIS] },
        {
          provide: SmsReceiptsService,
          useFactory: (publisher: EventPublisher, guard: SendGuard, routes: ReceiptRoutes) =>
            new SmsReceiptsService({ authToken: config.TWILIO_AUTH_TOKEN, tenantOf: (id) => guard.tenantOf(id), routes, publisher, guard, log }),
          inject: [EventPublisher, SendGuard, ReceiptRoutes],
        },
        { provide: RecordingStore, useFactory: (nats: NatsClients) => RecordingStore.open(nats, config.STREAM_REPLICAS), inject: [NATS] },
        {
          provide: VoiceRecordingsService,
          useFactory: (store: RecordingStore, nats: NatsClients) =>
            new VoiceRecordingsService({
              store,
              keyring: config.keyring,
              tenantExists: async (tenantId) => (await tenantSettingsOf(nats.jsm, tenantId)) !== undefined,
              webhookBaseUrl: config.VOICE_WEBHOOK_BASE_URL,
              log,
            }),
          inject: [RecordingStore, NATS],
        },
        {
          provide: VoiceCallService,
          useFactory: (
            publisher: EventPublisher,
            keys: UserDataKeys,
            guard: SendGuard,
            redis: RedisClient,
            internal: InternalRequests,
            phoneThrottle: PhoneThrottle,
            recordings: VoiceRecordingsService,
            tenants: DeletedTenants,
          ) =>
            new VoiceCallService({
              keys,
              tenants,
              ...voice,
              ringSeconds: config.VOICE_RING_SECONDS,
              attempts: config.VOICE_CALL_ATTEMPTS,
              retryBaseMs: config.SMS_RETRY_BASE_MS,
              publisher,
              guard,
              phoneThrottle,
              calls: new CallStore(redis),
              recordings,
              internal,
              log,
            }),
          inject: [EventPublisher, UserDataKeys, SendGuard, REDIS, InternalRequests, PhoneThrottle, VoiceRecordingsService, DeletedTenants],
        },
        { provide: UserDataKeys, useFactory: (nats: NatsClients) => new UserDataKeys(nats, config.keyring), inject: [NATS] },
        { provide: SendGuard, useFactory: (redis: RedisClient) => new SendGuard(redis), inject: [REDIS] },
        {
          provide: SmsDeliveryService,
          useFactory: (
            publisher: EventPublisher,
            smsProviders: readonly SmsProvider[],
            keys: UserDataKeys,
            guard: SendGuard,
            phoneThrottle: PhoneThrottle,
            breakers: ProviderBreakers,
            receiptRoutes: ReceiptRoutes,
            tenants: DeletedTenants,
          ) =>
            new SmsDeliveryService({
              tenants,
              keyring: config.keyring,
              keys,
              providers: smsProviders,
              attemptsPerProvider: config.SMS_SEND_ATTEMPTS,
              retryBaseMs: config.SMS_RETRY_BASE_MS,
              publisher,
              guard,
              phoneThrottle,
              breakers,
              receiptRoutes,
              webhookBaseUrl: config.VOICE_WEBHOOK_BASE_URL,
              // A claim outlives one provider call: the longest provider's total timeout and a margin.
              claimTtlMs: Math.max(config.TWILIO_TIMEOUT_MS, config.SMPP_TIMEOUT_MS) + 5_000,
              log,
            }),
          inject: [EventPublisher, SMS_PROVIDERS, UserDataKeys, SendGuard, PhoneThrottle, ProviderBreakers, ReceiptRoutes, DeletedTenants],
        },
        {
          provide: SmsResendService,
          useFactory: (nats: NatsClients, guard: SendGuard, delivery: SmsDeliveryService, smsProviders: readonly SmsProvider[], breakers: ProviderBreakers, tenants: DeletedTenants) =>
            new SmsResendService({
              tenants,
              starts: new ChallengeStarts(nats.jsm),
              guard,
              delivery,
              providers: smsProviders.map((p) => p.name),
              breakers,
              log,
            }),
          inject: [NATS, SendGuard, SmsDeliveryService, SMS_PROVIDERS, ProviderBreakers, DeletedTenants],
        },
        {
          provide: HEALTH_CHECKS,
          useFactory: (nats: NatsHealth, redis: RedisHealth, breakers: ProviderBreakers, pushBreakers: ProviderBreakers<PushNotification>) => [
            nats,
            redis,
            breakers.healthCheck(),
            ...providers.filter(hasSession).map((provider) => provider.healthCheck()),
            // Only where push has a provider: a poll-only deployment has no breaker to show.
            ...(pushProviders.length > 0 ? [pushBreakers.healthCheck()] : []),
          ],
          inject: [NatsHealth, RedisHealth, ProviderBreakers, PUSH_BREAKERS],
        },
      ],
    };
  }
}
