/** VMWARE-TELNET-EXT (option 232) subcommand codes, from VMware's proxy documentation. */
export const Ext = {
  KNOWN_SUBOPTIONS_1: 0,
  KNOWN_SUBOPTIONS_2: 1,
  UNKNOWN_SUBOPTION_RCVD_1: 2,
  UNKNOWN_SUBOPTION_RCVD_2: 3,
  VMOTION_BEGIN: 40,
  VMOTION_GOAHEAD: 41,
  VMOTION_NOTNOW: 43,
  VMOTION_PEER: 44,
  VMOTION_PEER_OK: 45,
  VMOTION_COMPLETE: 46,
  VMOTION_ABORT: 48,
  DO_PROXY: 70,
  WILL_PROXY: 71,
  WONT_PROXY: 73,
  VM_VC_UUID: 80,
  GET_VM_VC_UUID: 81,
  VM_NAME: 82,
  GET_VM_NAME: 83,
  VM_BIOS_UUID: 84,
  GET_VM_BIOS_UUID: 85,
  VM_LOCATION_UUID: 86,
  GET_VM_LOCATION_UUID: 87,
} as const;

/** What we announce in KNOWN-SUBOPTIONS-2: every code we send or understand. */
export const PROXY_KNOWN_SUBOPTIONS: readonly number[] = [
  Ext.KNOWN_SUBOPTIONS_1,
  Ext.KNOWN_SUBOPTIONS_2,
  Ext.UNKNOWN_SUBOPTION_RCVD_1,
  Ext.UNKNOWN_SUBOPTION_RCVD_2,
  Ext.VMOTION_BEGIN,
  Ext.VMOTION_GOAHEAD,
  Ext.VMOTION_NOTNOW,
  Ext.VMOTION_PEER,
  Ext.VMOTION_PEER_OK,
  Ext.VMOTION_COMPLETE,
  Ext.VMOTION_ABORT,
  Ext.DO_PROXY,
  Ext.WILL_PROXY,
  Ext.WONT_PROXY,
  Ext.VM_VC_UUID,
  Ext.GET_VM_VC_UUID,
  Ext.VM_NAME,
  Ext.GET_VM_NAME,
];

/**
 * RFC 2217 COM-PORT-OPTION (44) commands, client → access server (section 2, the
 * table of commands). The ESXi host is the client (it sends WILL COM-PORT and reports
 * the guest UART); vspc is the access server and answers with the code plus 100.
 */
export const ComPort = {
  SIGNATURE: 0,
  SET_BAUDRATE: 1,
  SET_DATASIZE: 2,
  SET_PARITY: 3,
  SET_STOPSIZE: 4,
  SET_CONTROL: 5,
  /** Sent by the access server only (code 106); from a client it means nothing. */
  NOTIFY_LINESTATE: 6,
  /** Sent by the access server only (code 107); from a client it means nothing. */
  NOTIFY_MODEMSTATE: 7,
  FLOWCONTROL_SUSPEND: 8,
  FLOWCONTROL_RESUME: 9,
  SET_LINESTATE_MASK: 10,
  SET_MODEMSTATE_MASK: 11,
  PURGE_DATA: 12,
  /** Server replies use the client code plus 100. */
  SERVER_OFFSET: 100,
} as const;

/** RFC 2217 SET-CONTROL values (section 3). */
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

/** RFC 2217 PURGE-DATA values (section 5). */
export const ComPortPurge = {
  /** The access server's receive buffer: data from the client not yet passed on. */
  RECEIVE: 1,
  /** The access server's transmit buffer: data for the client not yet sent. */
  TRANSMIT: 2,
  BOTH: 3,
} as const;
