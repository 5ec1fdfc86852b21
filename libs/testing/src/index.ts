export * from './env.js';
export * from './fake-twilio.js';
export * from './fake-smsc.js';
export * from './fake-fcm.js';
export * from './fake-apns.js';
export * from './stack.js';
export * from './nats-server.js';
export * from './redis-server.js';
export * from './postgres-server.js';
export * from './nats-cluster.js';
export * from './redis-cluster.js';
export * from './redis-sentinel.js';
export * from './postgres-replica.js';
export * from './otlp-receiver.js';
// Unit tests import this package for the two below: nothing here may load a server client or
// telemetry at import (index.unit.spec.ts checks).
export * from './factories.js';
export * from './decider-spec.js';
export * from './recordings.js';
export * from './adapters.js';
export * from './smtp-sink.js';
export * from './oidc-provider.js';
