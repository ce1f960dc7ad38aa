/** Simulated peers of the concentrator, for tests and benchmarks: an ESXi host's VM serial port and a stock telnet user. */
export {
  SimulatedVm,
  HOST_KNOWN_SUBOPTIONS,
  BARRIER_SUBCOMMAND,
  ByteCollector,
  connectSocket,
  seededRandom,
  type SimulatedVmOptions,
  type SimulatedVmEvents,
  type VmotionBeginResult,
  type NegotiationOrder,
  type Segmentation,
  type UartReport,
  type ByteMatcher,
} from './esxi-simulator.js';
export { TelnetUser, BARRIER_OPTION, type TelnetUserOptions, type TelnetUserEvents } from './telnet-user.js';
