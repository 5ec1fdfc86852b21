// Telemetry starts before Nest (or anything that could create a span) is imported.
import { startTelemetry } from '@mfa/telemetry';
import { main } from '@mfa/service-kit';

startTelemetry({ serviceName: 'user-settings' });
const { boot } = await import('./boot.js');
const { loadUserSettingsConfig } = await import('./config.js');
await main('user-settings', loadUserSettingsConfig, boot);
