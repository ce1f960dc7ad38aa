/**
 * Wire constants of the vspc serial tunnel protocol, version 1. The normative text is
 * docs/tunnel-protocol.md; every number here appears there with its rationale.
 */

/** Protocol version carried in HELLO. */
export const PROTOCOL_VERSION = 1;

/** Frame delimiter on the wire (COBS guarantees it never occurs inside a frame). */
export const DELIMITER = 0x00;

/** Frame header: type u8, flags u8, tag u16, seq u16, ack u16, stream u16 (big-endian). */
export const HEADER_SIZE = 10;
/** CRC-32C trailer, big-endian. */
export const CRC_SIZE = 4;
/**
 * The usual largest frame payload (bytes after the header, before the CRC): the
 * default an endpoint announces, and the most any peer of protocol version 1 that
 * predates large frames accepts (it reads a larger announcement as this).
 */
export const MAX_PAYLOAD = 1024;
/**
 * Largest frame payload a HELLO may announce (spec 5.1, "large frames"): announcements
 * above it are read as it. For lossless lines (virtio-serial), where the per-frame
 * cost (a CRC, COBS, an ACK every 2 frames, a write) dominates under emulation.
 */
export const MAX_LARGE_PAYLOAD = 16384;
/** Smallest "max payload" a HELLO may announce; every control message fits in it. */
export const MIN_PAYLOAD = 64;
/** Largest frame body (header + payload + CRC) before COBS, for MAX_PAYLOAD. */
export const MAX_BODY = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE;
/** Largest COBS-encoded body (without the delimiter) for a payload of at most `maxPayload` bytes: n + ceil(n / 254). */
export function maxEncodedLength(maxPayload: number): number {
  const body = HEADER_SIZE + maxPayload + CRC_SIZE;
  return body + Math.ceil(body / 254);
}
/** Largest COBS-encoded body (without the delimiter) for MAX_PAYLOAD: 1043. */
export const MAX_ENCODED = maxEncodedLength(MAX_PAYLOAD);
/**
 * Bytes a frame costs on the wire beyond its payload, for a full-size frame: header,
 * CRC, COBS overhead (5 for a 1038-byte body) and the delimiter. Used by the adaptive
 * payload size estimate.
 */
export const FRAME_OVERHEAD = HEADER_SIZE + CRC_SIZE + 5 + 1;

/** Sequence numbers are u16 with serial-number arithmetic (RFC 1982). */
export const SEQ_MODULO = 0x10000;
/** Largest receive window a HELLO may announce, in frames (bounded by the 16-byte SACK bitmap). */
export const MAX_WINDOW = 128;
/** Longest SACK bitmap, in bytes (covers ack+1 .. ack+128). */
export const MAX_SACK_BYTES = MAX_WINDOW / 8;

/** Frame types. Below 0x10: link frames (unsequenced). From 0x10: sequenced stream messages. */
export const FrameType = {
  HELLO: 0x01,
  ACK: 0x02,
  OPEN: 0x10,
  OPEN_OK: 0x11,
  OPEN_FAIL: 0x12,
  DATA: 0x13,
  FIN: 0x14,
  RESET: 0x15,
  CREDIT: 0x16,
} as const;
export type FrameTypeName = keyof typeof FrameType;

/** First sequenced (reliable) frame type. */
export const FIRST_RELIABLE_TYPE = 0x10;

/** Header flag bits. */
export const Flag = {
  /** The receiver must answer with an ACK frame at once (keepalive probe). */
  POLL: 0x01,
  /**
   * ACK frames only: the sender received a duplicate of a sequenced frame since its
   * previous ACK frame (like a DSACK, RFC 2883), i.e. some retransmission was spurious.
   */
  DUP: 0x02,
  /**
   * The direction of the frame: set in every frame the agent sends, clear in every frame
   * the host sends. A non-HELLO frame with the receiver's own direction is its own
   * output coming back (an echoing line) and is dropped before anything in it is used.
   */
  AGENT: 0x04,
} as const;

/** HELLO flag bits. */
export const HelloFlag = {
  /** The sender has completed the handshake with the boot id it names as peer. */
  UP: 0x01,
} as const;

/** HELLO role byte. */
export const Role = { host: 0, agent: 1 } as const;
export type TunnelRole = keyof typeof Role;

/** HELLO payload length in version 1 (longer payloads are accepted; extra bytes ignored). */
export const HELLO_SIZE = 14;

/**
 * Reason codes carried by OPEN_FAIL and RESET (u8). Codes 64 and up are local-only:
 * they describe resets the endpoint decided itself and never appear on the wire.
 */
export const Reason = {
  /** The target refused the connection (ECONNREFUSED). */
  REFUSED: 1,
  /** The port is not on the acceptor's allow-list, or opening is not permitted. */
  NOT_ALLOWED: 2,
  /** Dialling the target failed otherwise (timeout, unreachable, ...). */
  UNREACHABLE: 3,
  /** Too many streams, or out of memory. */
  NO_RESOURCES: 4,
  /** The opener reset the stream before the answer to its OPEN. */
  CANCELLED: 5,
  /** The peer broke the stream protocol (e.g. DATA after FIN, OPEN on an id in use). */
  PROTOCOL: 6,
  /** The peer sent more than its credit. */
  FLOW_CONTROL: 7,
  /** The application aborted the stream (e.g. its TCP connection was reset). */
  ABORTED: 8,
  /** The endpoint is shutting down. */
  SHUTDOWN: 9,
  /** Local only: the peer restarted (new boot id); every stream of the old session is gone. */
  PEER_RESTARTED: 64,
  /** Local only: the application gave up on a dead link. */
  LINK_DOWN: 65,
} as const;
export type ReasonName = keyof typeof Reason;

const REASON_NAMES = new Map<number, string>(Object.entries(Reason).map(([k, v]) => [v, k]));

/** Name of a reason code; unknown codes come back as `UNKNOWN_<n>`. */
export function reasonName(code: number): string {
  return REASON_NAMES.get(code) ?? `UNKNOWN_${code}`;
}

/** Stream id partitions: host-opened ids have bit 15 clear, agent-opened ids have it set. */
export const STREAM_ID_AGENT_BIT = 0x8000;
/** Ids per partition (0x0001..0x7FFF and 0x8001..0xFFFF; 0x0000 and 0x8000 are reserved). */
export const STREAM_IDS_PER_SIDE = 0x7fff;

/** Longest reason text in OPEN_FAIL / RESET, in bytes (keeps the message under MIN_PAYLOAD). */
export const MAX_REASON_TEXT = MIN_PAYLOAD - 1;
