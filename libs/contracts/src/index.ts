export * from './errors.js';
export * from './primitives.js';
export * from './tenant-settings.js';
export * from './api.js';
export * from './events.js';
export * from './streams.js';
export * from './report.js';
export * from './ip.js';
