// Telemetry starts before Nest (or anything that could create a span) is imported.
import { startTelemetry } from '@mfa/telemetry';
import { main } from '@mfa/service-kit';

startTelemetry({ serviceName: 'dispatch' });
const { boot } = await import('./boot.js');
const { loadDispatchConfig } = await import('./config.js');
await main('dispatch', loadDispatchConfig, boot);
