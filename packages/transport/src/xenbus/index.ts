export * from './xenbus-state.js';
