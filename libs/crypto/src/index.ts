export * from './keyring.js';
export * from './seal.js';
export * from './codes.js';
