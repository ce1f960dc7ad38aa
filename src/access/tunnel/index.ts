/**
 * Serial tunnels, the host side (issue 16): a console that carries a tunnel instead of
 * a terminal, its TunnelLink (the reference TunnelEndpoint, role host, attached to the
 * console as a dedicated client) and its forwards (TCP and unix listeners whose
 * connections become tunnel streams). See docs/tunnels.md.
 */
export { TunnelManager, type TunnelManagerOptions, type TunnelStatus, type TunnelForwardStatus } from './manager.js';
export { TunnelLink, type TunnelLinkOptions, type TunnelLinkState, type TunnelLinkStatus } from './link.js';
export { TunnelDuplex } from './duplex.js';
export { ForwardListener, joinSocket } from './forwards.js';
export { autoPortMethod, formatListen, type ForwardListen, type ForwardSpec, type TunnelCarrier, type TunnelSpec } from './types.js';
