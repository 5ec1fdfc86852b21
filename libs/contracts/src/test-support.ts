// Re-exports for the contract tests, plus a valid event envelope to mutate.
export * from './index.js';
import { defaultTenantSettings } from './api.js';

export function createEnvelopeForTest() {
  return {
    id: '7b1e2f40-3c1d-4c55-9a2e-1f0e6c7d8e9f',
    type: 'TenantCreated',
    version: 1,
    tenantId: 'contoso',
    aggregateId: 'contoso',
    occurredAt: '2026-01-01T00:00:00.000Z',
    metadata: {},
    data: { settings: defaultTenantSettings() },
  };
}
