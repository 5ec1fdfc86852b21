// Telemetry starts before Nest (or anything that could create a span) is imported.
import { startTelemetry } from '@mfa/telemetry';
import { main } from '@mfa/service-kit';

startTelemetry({ serviceName: 'auth-challenge' });
const { boot } = await import('./boot.js');
const { loadAuthChallengeConfig } = await import('./config.js');
await main('auth-challenge', loadAuthChallengeConfig, boot);
