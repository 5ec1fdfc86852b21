import { Module, type DynamicModule } from '@nestjs/common';
import type { RedisClient } from '@mfa/projection';
import { Streams } from '@mfa/contracts';
import type { Keyring } from '@mfa/crypto';
import { EventPublisher, type NatsClients } from '@mfa/messaging';
import { RedisKeys, UserIndex, UserProjectionWriter } from '@mfa/projection';
import {
  HEALTH_CHECKS,
  MessagingModule,
  NATS,
  NatsHealth,
  OpsController,
  REDIS,
  RedisHealth,
  RedisModule, redisConnectionFrom,
  ApiClientDirectory,
  AuthModule,
  UserDataKeys,
} from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { ActivationAttempts } from './adapters/activation-attempts.js';
import { AppPasswordFailures } from './adapters/app-password-failures.js';
import { SnapshotStore } from './adapters/snapshot-store.js';
import { OffboardingCensusStore } from './adapters/offboarding-census.js';
import { EventStore } from './adapters/event-store.js';
import { UserProjectorController } from './api/user-projector.controller.js';
import { UserSettingsController } from './api/user-settings.controller.js';
import { ApiClientsService } from './application/api-clients.service.js';
import { ProjectionRecovery } from './application/projection-recovery.js';
import { UserProjector } from './application/user-projector.js';
import { ActivationCodes } from './adapters/activation-codes.js';
import { UserSettingsService } from './application/user-settings.service.js';
import type { UserSettingsConfig } from './config.js';
import { PENDING_TOKEN_LIFETIME_MS } from './domain/user.js';
import { FraudBlocks } from './adapters/fraud-blocks.js';
import { RememberedBrowsers } from './adapters/remembered-browsers.js';
import { AppPasswordHasher } from './adapters/app-password-hasher.js';
import { KEYRING } from './tokens.js';
import { OathInventory } from './adapters/oath-inventory.js';
import { ImportJobs, importStoreSettings } from './adapters/import-jobs.js';
import { OathTokensService } from './application/oath-tokens.service.js';
import { OathImportService } from './application/oath-import.service.js';
import { OathController, OathImportWorkers } from './api/oath.controller.js';
import { TenantOffboardingController } from './api/tenant-offboarding.controller.js';
import { TenantOffboarding } from './application/tenant-offboarding.js';

/**
 * user-settings: the tenant and user aggregates (event-sourced on MFA_USER_SETTINGS), the users'
 * data keys (MFA_USER_KEYS), their public API (users.register, users.get, users.delete,
 * users.totp.enroll/activate, tenants.configure) and the Redis user projection that
 * auth-challenge reads.
 */
@Module({})
export class AppModule {
  static forRoot(config: UserSettingsConfig, log: Logger): DynamicModule {
    return {
      module: AppModule,
      imports: [
        MessagingModule.forRoot({
          serviceName: 'user-settings',
          nats: config,
          log,
          streams: [Streams.userSettings, Streams.userKeys, Streams.audit, Streams.state, Streams.deadLetters],
          replicas: config.STREAM_REPLICAS,
        }),
        RedisModule.forRoot({ connection: redisConnectionFrom(config), connectionName: 'user-settings', log }),
        AuthModule.forRoot({ auth: config.auth, keyring: config.keyring }),
      ],
      controllers: [OpsController, UserSettingsController, UserProjectorController, OathController, TenantOffboardingController],
      providers: [
        { provide: KEYRING, useValue: config.keyring },
        { provide: UserDataKeys, useFactory: (nats: NatsClients, keyring: Keyring) => new UserDataKeys(nats, keyring), inject: [NATS, KEYRING] },
        {
          provide: EventStore,
          useFactory: (nats: NatsClients, publisher: EventPublisher) => new EventStore(nats.jsm, publisher, Streams.userSettings.name, log),
          inject: [NATS, EventPublisher],
        },
        {
          provide: UserProjectionWriter,
          useFactory: (redis: RedisClient, keyring: Keyring) => new UserProjectionWriter(redis, keyring),
          inject: [REDIS, KEYRING],
        },
        {
          provide: ActivationAttempts,
          useFactory: (redis: RedisClient, keyring: Keyring) => new ActivationAttempts(redis, keyring, PENDING_TOKEN_LIFETIME_MS / 1000),
          inject: [REDIS, KEYRING],
        },
        { provide: SnapshotStore, useFactory: (nats: NatsClients) => new SnapshotStore(nats.js, nats.jsm), inject: [NATS] },
        {
          provide: UserSettingsService,
          useFactory: (
            store: EventStore,
            projection: UserProjectionWriter,
            keyring: Keyring,
            activationAttempts: ActivationAttempts,
            snapshots: SnapshotStore,
            keys: UserDataKeys,
            nats: NatsClients,
            redis: RedisClient,
          ) =>
            new UserSettingsService({
              store,
              projection,
              keyring,
              keys,
              log,
              // With MFA_AUTH=required only the platform key creates tenants (tenants.configure).
              autoCreateTenants: config.MFA_TENANT_AUTO_CREATE && config.auth.mode === 'off',
              totpIssuer: config.MFA_TOTP_ISSUER,
              activationAttempts,
              snapshots,
              blocks: new FraudBlocks(nats.jsm),
              index: new UserIndex(redis, keyring),
              remembered: new RememberedBrowsers(redis),
              appPasswords: new AppPasswordHasher(),
              activationCodes: new ActivationCodes(redis, keyring),
              deviceApiUrl: config.DEVICE_API_PUBLIC_URL,
              devicesUsed: (tag: string) => redis.hgetall(RedisKeys.devicesUsed(tag)),
              appPasswordFailures: new AppPasswordFailures(redis),
            }),
          inject: [EventStore, UserProjectionWriter, KEYRING, ActivationAttempts, SnapshotStore, UserDataKeys, NATS, REDIS],
        },
        {
          provide: ApiClientsService,
          useFactory: (publisher: EventPublisher, directory: ApiClientDirectory, keyring: Keyring, users: UserSettingsService) =>
            new ApiClientsService({
              publisher,
              directory,
              keyring,
              log,
              requireTenant: (tenantId, now) => users.requireExistingTenant(tenantId, now),
            }),
          inject: [EventPublisher, ApiClientDirectory, KEYRING, UserSettingsService],
        },
        {
          provide: UserProjector,
          useFactory: (store: EventStore, writer: UserProjectionWriter, keyring: Keyring, keys: UserDataKeys, snapshots: SnapshotStore, users: UserSettingsService) => {
            const projector = new UserProjector(store, writer, keyring, keys, snapshots);
            projector.onRemovals((tenantId, userId, options, now) => users.completeRemovals(tenantId, userId, options, now));
            return projector;
          },
          inject: [EventStore, UserProjectionWriter, KEYRING, UserDataKeys, SnapshotStore, UserSettingsService],
        },
        { provide: OathInventory, useFactory: (redis: RedisClient) => new OathInventory(redis), inject: [REDIS] },
        { provide: ImportJobs, useFactory: (nats: NatsClients) => ImportJobs.open(nats, config.STREAM_REPLICAS, importStoreSettings(config)), inject: [NATS] },
        {
          provide: OathTokensService,
          useFactory: (store: EventStore, users: UserSettingsService, inventory: OathInventory, keyring: Keyring) => new OathTokensService({ store, users, inventory, keyring, log }),
          inject: [EventStore, UserSettingsService, OathInventory, KEYRING],
        },
        {
          provide: OathImportService,
          useFactory: (jobs: ImportJobs, tokens: OathTokensService, keyring: Keyring, users: UserSettingsService) =>
            new OathImportService({
              jobs,
              tokens,
              keyring,
              log,
              requireTenant: (tenantId, now) => users.requireExistingTenant(tenantId, now),
              jobsPerInstance: config.OATH_IMPORT_JOBS_PER_INSTANCE,
            }),
          inject: [ImportJobs, OathTokensService, KEYRING, UserSettingsService],
        },
        {
          provide: TenantOffboarding,
          useFactory: (nats: NatsClients, users: UserSettingsService, clients: ApiClientsService, inventory: OathInventory, imports: ImportJobs, importJobs: OathImportService) =>
            new TenantOffboarding({ nats, users, clients, inventory, imports, importJobs, census: new OffboardingCensusStore(nats.js, nats.jsm), log }),
          inject: [NATS, UserSettingsService, ApiClientsService, OathInventory, ImportJobs, OathImportService],
        },
        OathImportWorkers,
        ProjectionRecovery,
        { provide: HEALTH_CHECKS, useFactory: (nats: NatsHealth, redis: RedisHealth) => [nats, redis], inject: [NatsHealth, RedisHealth] },
      ],
    };
  }
}
