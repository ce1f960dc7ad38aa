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
