export * from './env.js';
export * from './fake-twilio.js';
export * from './stack.js';
export * from './otlp-receiver.js';
