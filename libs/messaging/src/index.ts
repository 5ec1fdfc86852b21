export * from './connection.js';
export * from './topology.js';
export * from './events.js';
export * from './consumer.js';
export * from './client.js';
export * from './security.js';
export * from './transient.js';
export * from './follow.js';
