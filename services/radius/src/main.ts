// Telemetry starts before Nest (or anything that could create a span) is imported.
import { startTelemetry } from '@mfa/telemetry';
import { main } from '@mfa/service-kit';

startTelemetry({ serviceName: 'radius' });
const { boot } = await import('./boot.js');
const { loadRadiusConfig } = await import('./config.js');
await main('radius', loadRadiusConfig, boot);
