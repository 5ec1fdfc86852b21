import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { defaultTenantSettings, parseEvent, UnknownEventError } from './index.js';

const storedTenantCreated = () => ({
  id: '7b1e2f40-3c1d-4c55-9a2e-1f0e6c7d8e9f',
  type: 'TenantCreated',
  version: 1,
  tenantId: 'contoso',
  aggregateId: 'contoso',
  occurredAt: '2026-01-01T00:00:00.000Z',
  metadata: {},
  data: { settings: defaultTenantSettings() },
});

// Every name an object literal inherits from Object.prototype.
const PROTOTYPE_NAMES = Object.getOwnPropertyNames(Object.prototype);

describe('parseEvent', () => {
  it('reads an event type named after an Object prototype property as unknown', () => {
    assert.ok(PROTOTYPE_NAMES.includes('constructor') && PROTOTYPE_NAMES.includes('__proto__'));
    for (const type of PROTOTYPE_NAMES) {
      assert.throws(
        () => parseEvent({ ...storedTenantCreated(), type }),
        (error: unknown) => error instanceof UnknownEventError && /^unknown event type "/.test(error.message),
        type,
      );
    }
  });

  it('reads a type that is not a string as unknown, without calling anything on it', () => {
    for (const type of [undefined, null, 42, true, [], {}, { toString: 1 }, { valueOf: 'x' }]) {
      assert.throws(() => parseEvent({ ...storedTenantCreated(), type }), UnknownEventError, JSON.stringify(type));
    }
    assert.throws(() => parseEvent({ ...storedTenantCreated(), version: { toString: 1 } }), UnknownEventError);
  });

  it('reads an unknown type as unknown', () => {
    assert.throws(() => parseEvent({ ...storedTenantCreated(), type: 'TenantRenamed' }), /unknown event type "TenantRenamed"/);
  });

  it('looks upcasters up among their own entries only', () => {
    const key = 'TenantCreated@1';
    const proto = Object.prototype as Record<string, unknown>;
    proto[key] = () => {
      throw new Error('an inherited upcaster ran');
    };
    try {
      assert.equal(parseEvent(storedTenantCreated()).type, 'TenantCreated');
    } finally {
      delete proto[key];
    }
  });
});
