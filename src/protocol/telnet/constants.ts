/** Telnet command bytes (RFC 854, plus EOR/ABORT/SUSP/xEOF from RFC 885/1184). */
export const IAC = 255;
export const DONT = 254;
export const DO = 253;
export const WONT = 252;
export const WILL = 251;
export const SB = 250;
export const GA = 249;
export const EL = 248;
export const EC = 247;
export const AYT = 246;
export const AO = 245;
export const IP = 244;
export const BRK = 243;
export const DM = 242;
export const NOP = 241;
export const SE = 240;
export const EOR = 239;
export const ABORT = 238;
export const SUSP = 237;
export const XEOF = 236;

/** The lowest byte that is a telnet command after IAC; anything below is a protocol error. */
export const FIRST_COMMAND = XEOF;

export const CR = 13;
export const LF = 10;
export const NUL = 0;

/** Options in play for a concentrator. */
export const Option = {
  BINARY: 0,
  ECHO: 1,
  SGA: 3,
  TTYPE: 24,
  NAWS: 31,
  LINEMODE: 34,
  AUTHENTICATION: 37,
  COM_PORT: 44,
  VMWARE_EXT: 232,
} as const;

export type NegotiationVerb = typeof WILL | typeof WONT | typeof DO | typeof DONT;

export const VERB_NAMES: Record<number, string> = { [WILL]: 'WILL', [WONT]: 'WONT', [DO]: 'DO', [DONT]: 'DONT' };

export const COMMAND_NAMES: Record<number, string> = {
  [GA]: 'GA', [EL]: 'EL', [EC]: 'EC', [AYT]: 'AYT', [AO]: 'AO', [IP]: 'IP', [BRK]: 'BRK',
  [DM]: 'DM', [NOP]: 'NOP', [SE]: 'SE', [EOR]: 'EOR', [ABORT]: 'ABORT', [SUSP]: 'SUSP', [XEOF]: 'xEOF',
};
