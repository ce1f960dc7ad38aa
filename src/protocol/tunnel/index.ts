/**
 * vspc serial tunnel: TCP streams over a raw serial byte stream (docs/tunnel-protocol.md).
 * Sans-I/O; layers: crc32c/cobs → framing → arq (reliable link) → mux (streams) → endpoint.
 */
export * from './constants.js';
export { crc32c } from './crc32c.js';
export { cobsEncode, cobsDecode, cobsMaxEncodedLength } from './cobs.js';
export { FrameDecoder, encodeFrame, encodeFrameBody, decodeFrameBody, type Frame, type FrameDecoderStats } from './framing.js';
export * from './messages.js';
export { ReliableLink, seqDiff, sessionTag, DUP_THRESHOLD, type LinkMessage, type LinkStats, type RtoConfig, type KeepaliveConfig, type ReliableLinkConfig, type ReliableLinkHooks } from './arq.js';
export { Multiplexer, TunnelStream, type TunnelStreamHandlers, type TunnelStreamState, type StreamOptions, type MuxConfig, type MuxHooks, type MuxStats } from './mux.js';
export { TunnelEndpoint, type TunnelEndpointOptions, type TunnelEndpointHandlers, type TunnelEndpointState, type TunnelEndpointStats } from './endpoint.js';
export { TunnelError, TunnelStreamError, TunnelErrorCode, ProtocolError, type TunnelErrorCodeValue } from './errors.js';
