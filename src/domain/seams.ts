/**
 * The two seams between the domain and the transports. A VM serial port's bytes may
 * come from an ESXi telnet connection today and from a QEMU unix socket or a host
 * tty tomorrow; the people reading it may be telnet users, SSH users or a web page.
 * The hub only sees these interfaces.
 */

/** Where a VM serial port's bytes come from and where client input goes. */
export interface ConsoleSource {
  /** 'esxi', later 'qemu', 'tty', ... */
  readonly kind: string;
  /** Human-readable remote end, for `list` and logs. */
  readonly peer: string;
  /** Input for the VM. Returns false when the transport's buffer is full (wait for `onDrain`). */
  write(data: Buffer): boolean;
  /** Register the one drain listener (the hub's). */
  onDrain(listener: () => void): void;
  /** Send a serial BREAK, where the source supports it. */
  sendBreak?(): void;
  /** Retire the source (drain what was written, then close). */
  close(reason: string): void;
}

/** A person (or program) attached to a VM serial port. */
export interface ConsoleClient {
  readonly id: number;
  readonly peer: string;
  /** Serial output for the client. The client bounds its own queue and drops itself if slow. */
  deliver(data: Buffer): void;
  /** A message from the concentrator, not from the VM (e.g. "VM disconnected"). */
  notice(text: string): void;
  /** Stop/resume reading this client's input (backpressure from the VM side). */
  pauseInput(): void;
  resumeInput(): void;
  close(reason: string): void;
}
