export * from './constants.js';
export * from './tokens.js';
export * from './decoder.js';
export * from './encoder.js';
export * from './negotiator.js';
export * from './session.js';
