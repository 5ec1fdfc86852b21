export * from './env.js';
export * from './fake-twilio.js';
export * from './stack.js';
export * from './otlp-receiver.js';
// Unit tests import these two: they load only @mfa/contracts, @mfa/projection and node built-ins.
export * from './factories.js';
export * from './decider-spec.js';
export * from './adapters.js';
