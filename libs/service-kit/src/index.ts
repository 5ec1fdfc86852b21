export * from './config.js';
export * from './health.js';
export * from './nest-logger.js';
export * from './messaging.module.js';
export * from './bootstrap.js';
