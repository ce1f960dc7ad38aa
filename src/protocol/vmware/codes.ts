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
 * RFC 2217 COM-PORT-OPTION (44) numbers, one table for the whole product
 * (src/protocol/rfc2217/codes.ts). The ESXi host is the client (it sends WILL
 * COM-PORT and reports the guest UART); vspc is the access server and answers with
 * the code plus 100.
 */
export { ComPort, ComPortControl, ComPortPurge } from '../rfc2217/codes.js';
