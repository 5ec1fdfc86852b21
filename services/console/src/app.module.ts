import { Module, type DynamicModule } from '@nestjs/common';
import type { RedisClient } from '@mfa/projection';
import type { NatsClients } from '@mfa/messaging';
import { HEALTH_CHECKS, MessagingModule, NATS, NatsHealth, OpsController, REDIS, RedisHealth, RedisModule, redisConnectionFrom } from '@mfa/service-kit';
import type { Logger } from '@mfa/telemetry';
import { MfaApi } from './adapters/mfa-api.js';
import { OidcProvider } from './adapters/oidc.js';
import { PendingLogins } from './adapters/pending-login.js';
import { Sessions } from './adapters/sessions.js';
import { UploadSlots } from './adapters/upload-slots.js';
import { AuthController } from './api/auth.controller.js';
import { PagesController } from './api/pages.controller.js';
import { Views } from './api/views.js';
import type { ConsoleConfig } from './config.js';
import { CONSOLE_CONFIG, LOGGER_TOKEN, MFA_API, OIDC, PENDING_LOGINS, SESSIONS, UPLOAD_SLOTS, VIEWS, type ConsoleRuntime } from './tokens.js';

/**
 * console: the operators' web console. Pages and their forms on one origin (CONSOLE_PORT), operator
 * sign-in with OpenID Connect, sessions in Redis; every read and change goes through the public
 * NATS API with the platform key, naming the operator (MISSION, "Console").
 */
@Module({})
export class AppModule {
  static forRoot(config: ConsoleConfig, log: Logger): DynamicModule {
    const runtime: ConsoleRuntime = { publicUrl: config.publicUrl, secure: config.publicUrl.protocol === 'https:', devLogin: config.CONSOLE_DEV_LOGIN, endSessionPost: config.OIDC_END_SESSION_POST };
    return {
      module: AppModule,
      imports: [
        // A client of the API: no streams of its own.
        MessagingModule.forRoot({ serviceName: 'console', nats: config, log, streams: [], replicas: 1 }),
        RedisModule.forRoot({ connection: redisConnectionFrom(config), connectionName: 'console', log }),
      ],
      controllers: [OpsController, AuthController, PagesController],
      providers: [
        { provide: CONSOLE_CONFIG, useValue: runtime },
        { provide: LOGGER_TOKEN, useValue: log },
        { provide: VIEWS, useValue: new Views() },
        { provide: SESSIONS, useFactory: (redis: RedisClient) => new Sessions(redis, config.CONSOLE_SESSION_IDLE_MINUTES * 60), inject: [REDIS] },
        { provide: UPLOAD_SLOTS, useFactory: (redis: RedisClient) => new UploadSlots(redis), inject: [REDIS] },
        { provide: MFA_API, useFactory: (nats: NatsClients) => new MfaApi(nats.nc, config.auth.platformKey), inject: [NATS] },
        {
          provide: OIDC,
          useValue: config.oidc
            ? new OidcProvider(
                config.oidc.issuer,
                config.oidc.clientId,
                config.oidc.clientSecret,
                new URL('/auth/callback', config.publicUrl),
                config.OIDC_ROLES_CLAIM,
                config.OIDC_END_SESSION ? new URL('/auth/signed-out', config.publicUrl) : undefined,
              )
            : undefined,
        },
        { provide: PENDING_LOGINS, useFactory: (redis: RedisClient) => (config.oidc ? new PendingLogins(redis) : undefined), inject: [REDIS] },
        { provide: HEALTH_CHECKS, useFactory: (nats: NatsHealth, redis: RedisHealth) => [nats, redis], inject: [NatsHealth, RedisHealth] },
      ],
    };
  }
}
