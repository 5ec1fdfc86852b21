export * from './device-client.js';
export * from './state.js';
