/** RFC 2217 COM-PORT-OPTION (telnet option 44): numbers, the payload codec, the access server's rules. */
export * from './codes.js';
export * from './codec.js';
export * from './server.js';
