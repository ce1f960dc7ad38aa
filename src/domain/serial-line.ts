/**
 * A serial line's settings as a source reports them (ESXi: the guest UART over
 * RFC 2217 COM-PORT; device consoles: the tty's termios). Every field is optional:
 * a source reports what it knows.
 */
export interface SerialLineSettings {
  /** Bits per second. */
  baudRate?: number;
  /** Data bits per character, 5-8. */
  dataSize?: number;
  parity?: 'none' | 'odd' | 'even' | 'mark' | 'space';
  stopBits?: '1' | '2' | '1.5';
  /** Flow control (device consoles; RFC 2217 SET-CONTROL 1-3): none, RTS/CTS, XON/XOFF. */
  flow?: 'none' | 'rtscts' | 'xonxoff';
}

/**
 * The rest of a serial line's state as a source reports it (ESXi: RFC 2217 SET-CONTROL,
 * FLOWCONTROL-SUSPEND/RESUME and SIGNATURE from the host). Absent fields: not reported.
 */
export interface SerialLineState {
  /** Flow control the sending side uses (RFC 2217 "outbound/both"). */
  flowControl?: 'none' | 'xon-xoff' | 'hardware' | 'dcd' | 'dsr';
  /** Flow control for the receiving side (RFC 2217 "inbound"). */
  inboundFlowControl?: 'none' | 'xon-xoff' | 'hardware' | 'dtr';
  /** The line is held in BREAK. */
  break?: boolean;
  dtr?: boolean;
  rts?: boolean;
  /** The source asked vspc to stop sending it data (RFC 2217 FLOWCONTROL-SUSPEND) and has not resumed. */
  suspended?: boolean;
  /** What the source calls itself (RFC 2217 SIGNATURE), printable, bounded. */
  signature?: string;
}
