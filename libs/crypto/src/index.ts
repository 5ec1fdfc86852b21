export * from './keyring.js';
export * from './seal.js';
export * from './data-keys.js';
export * from './codes.js';
export * from './oath.js';
export * from './api-keys.js';
export * from './cursor.js';
export * from './device-keys.js';
