export * from './env.js';
export * from './fake-twilio.js';
