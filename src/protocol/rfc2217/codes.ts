/**
 * RFC 2217 (Telnet Com Port Control Option) numbers. The option is 44; every
 * subnegotiation is `IAC SB 44 <command> <value...> IAC SE`. A client (the party that
 * sent WILL COM-PORT-OPTION) uses the codes below; the access server answers with the
 * same code plus 100 (SERVER_OFFSET).
 *
 * src/protocol/vmware/codes.ts re-exports `ComPort`, `ComPortControl` and
 * `ComPortPurge` for the ESXi side: one table for both.
 */

export const COM_PORT_OPTION = 44;

/** Commands, client → access server (section 2). */
export const ComPort = {
  SIGNATURE: 0,
  SET_BAUDRATE: 1,
  SET_DATASIZE: 2,
  SET_PARITY: 3,
  SET_STOPSIZE: 4,
  SET_CONTROL: 5,
  /** Sent by the access server only (106). */
  NOTIFY_LINESTATE: 6,
  /** Sent by the access server only (107). */
  NOTIFY_MODEMSTATE: 7,
  FLOWCONTROL_SUSPEND: 8,
  FLOWCONTROL_RESUME: 9,
  SET_LINESTATE_MASK: 10,
  SET_MODEMSTATE_MASK: 11,
  PURGE_DATA: 12,
  /** Server replies use the client code plus 100. */
  SERVER_OFFSET: 100,
} as const;

/** The highest command code RFC 2217 defines (PURGE-DATA). */
export const LAST_COMMAND = ComPort.PURGE_DATA;

/** SET-CONTROL values (section 3). 20-127 are reserved. */
export const ComPortControl = {
  REQUEST_FLOW: 0,
  FLOW_NONE: 1,
  FLOW_XON_XOFF: 2,
  FLOW_HARDWARE: 3,
  REQUEST_BREAK: 4,
  BREAK_ON: 5,
  BREAK_OFF: 6,
  REQUEST_DTR: 7,
  DTR_ON: 8,
  DTR_OFF: 9,
  REQUEST_RTS: 10,
  RTS_ON: 11,
  RTS_OFF: 12,
  REQUEST_INBOUND_FLOW: 13,
  INBOUND_FLOW_NONE: 14,
  INBOUND_FLOW_XON_XOFF: 15,
  INBOUND_FLOW_HARDWARE: 16,
  FLOW_DCD: 17,
  INBOUND_FLOW_DTR: 18,
  FLOW_DSR: 19,
} as const;

/** PURGE-DATA values (section 5). */
export const ComPortPurge = {
  /** The access server's receive buffer: data received from the serial line, not yet sent to the client. */
  RECEIVE: 1,
  /** The access server's transmit buffer: data from the client, not yet sent out on the serial line. */
  TRANSMIT: 2,
  BOTH: 3,
} as const;

/** SET-PARITY values; 0 asks for the current value. */
export const PARITY_BY_CODE = [undefined, 'none', 'odd', 'even', 'mark', 'space'] as const;
/** SET-STOPSIZE values; 0 asks for the current value (3 is 1.5 stop bits). */
export const STOP_BITS_BY_CODE = [undefined, '1', '2', '1.5'] as const;

/** NOTIFY-LINESTATE bits (section 4). */
export const LineState = {
  TIMEOUT: 0x80,
  TRANSFER_SHIFT_REGISTER_EMPTY: 0x40,
  TRANSFER_HOLDING_REGISTER_EMPTY: 0x20,
  BREAK_DETECT: 0x10,
  FRAMING_ERROR: 0x08,
  PARITY_ERROR: 0x04,
  OVERRUN_ERROR: 0x02,
  DATA_READY: 0x01,
} as const;

/** NOTIFY-MODEMSTATE bits (section 4). */
export const ModemState = {
  CARRIER_DETECT: 0x80,
  RING_INDICATOR: 0x40,
  DATA_SET_READY: 0x20,
  CLEAR_TO_SEND: 0x10,
  DELTA_CARRIER_DETECT: 0x08,
  TRAILING_EDGE_RING: 0x04,
  DELTA_DATA_SET_READY: 0x02,
  DELTA_CLEAR_TO_SEND: 0x01,
} as const;

/** The RFC's defaults for the notification masks. */
export const DEFAULT_LINESTATE_MASK = 0;
export const DEFAULT_MODEMSTATE_MASK = 255;
