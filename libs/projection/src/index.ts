export * from './keys.js';
export * from './writer.js';
