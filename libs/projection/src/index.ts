export * from './client.js';
export * from './keys.js';
export * from './writer.js';
export * from './user-index.js';
