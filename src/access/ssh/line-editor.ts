/**
 * The menu prompt's line editing on a raw terminal (the SSH client's pty does no
 * editing of its own): printable characters are kept and echoed, Backspace/DEL erases
 * one character, Ctrl-U the line, Enter submits, Ctrl-C and Ctrl-D (on an empty line)
 * quit; escape sequences (arrow keys) are swallowed. Bounded. Pure: bytes in, echo and
 * events out.
 */
export type LineEvent = { kind: 'line'; text: string } | { kind: 'quit' };

const MAX_LINE = 512;

export class LineEditor {
  private chars: string[] = [];
  private bytes = 0;
  /** Inside an escape sequence: 1 after ESC, 2 inside CSI `ESC [` / SS3 `ESC O` (until a final byte). */
  private esc = 0;
  /** A UTF-8 character split across chunks. */
  private partial: number[] = [];

  /** Feeds input; returns the echo to write and the events (lines, quit) in order. */
  feed(data: Buffer): { echo: string; events: LineEvent[] } {
    let echo = '';
    const events: LineEvent[] = [];
    for (let i = 0; i < data.length; i++) {
      const b = data[i];
      if (this.esc === 1) {
        this.esc = b === 0x5b || b === 0x4f ? 2 : 0;
        continue;
      }
      if (this.esc === 2) {
        if (b >= 0x40 && b <= 0x7e) this.esc = 0;
        continue;
      }
      if (this.partial.length > 0 || b >= 0x80) {
        const ch = this.utf8(b);
        if (ch !== null && this.bytes + Buffer.byteLength(ch) <= MAX_LINE) {
          this.chars.push(ch);
          this.bytes += Buffer.byteLength(ch);
          echo += ch;
        }
        continue;
      }
      if (b === 0x1b) this.esc = 1;
      else if (b === 0x0d || b === 0x0a) {
        // CR LF from a terminal is one Enter.
        if (b === 0x0a && i > 0 && data[i - 1] === 0x0d) continue;
        events.push({ kind: 'line', text: this.chars.join('') });
        this.chars = [];
        this.bytes = 0;
        echo += '\r\n';
      } else if (b === 0x7f || b === 0x08) {
        const ch = this.chars.pop();
        if (ch !== undefined) {
          this.bytes -= Buffer.byteLength(ch);
          echo += '\b \b';
        }
      } else if (b === 0x15) {
        echo += '\b \b'.repeat(this.chars.length);
        this.chars = [];
        this.bytes = 0;
      } else if (b === 0x03 || (b === 0x04 && this.chars.length === 0)) {
        events.push({ kind: 'quit' });
        echo += '\r\n';
      } else if (b >= 0x20 && b < 0x7f && this.bytes < MAX_LINE) {
        const ch = String.fromCharCode(b);
        this.chars.push(ch);
        this.bytes++;
        echo += ch;
      }
    }
    return { echo, events };
  }

  /** Collects a multi-byte UTF-8 character; returns it once complete (null meanwhile or when invalid). */
  private utf8(b: number): string | null {
    if (this.partial.length === 0) {
      if (b < 0xc2 || b > 0xf4) return null;
      this.partial.push(b);
      return null;
    }
    if ((b & 0xc0) !== 0x80) {
      this.partial = [];
      return null;
    }
    this.partial.push(b);
    const lead = this.partial[0];
    const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
    if (this.partial.length < need) return null;
    const ch = Buffer.from(this.partial).toString('utf8');
    this.partial = [];
    return ch.includes('\ufffd') ? null : ch;
  }
}
