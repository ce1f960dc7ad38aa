/**
 * What an SSH user may ask for, as the command of `ssh console@host COMMAND` or typed
 * at the menu's prompt. Pure.
 *
 *   list [--json]                                  the consoles this key may reach
 *   NAME [--mode MODE] [--force] [--raw]           attach (NAME: name, NAME:LABEL, UUID, or a menu number);
 *                                                  --raw: the console's bytes only (no greeting, notices, replay)
 *   NAME --tail N                                  the end of its console log
 *   help
 *
 * Words split on blanks; '...' and "..." quote a name with blanks.
 */
import { parseLockMode, type LockRequest } from '../../domain/locks.js';

export type SshCommand =
  | { kind: 'list'; json: boolean }
  | { kind: 'help' }
  | { kind: 'attach'; target: string; mode?: LockRequest; force: boolean; raw: boolean }
  | { kind: 'tail'; target: string; lines: number }
  | { kind: 'error'; message: string };

/** The most a command line may be (an exec request, a menu line). */
export const MAX_COMMAND = 1024;
export const MAX_TAIL_LINES = 10_000;

export const USAGE = [
  'usage: ssh [-t] -p PORT USER@HOST [COMMAND]',
  '  (no command)                      menu of the consoles your key may reach (needs a terminal)',
  '  list [--json]                     those consoles as text, or JSON',
  '  NAME [--mode MODE] [--force]      attach to a console (-t for a terminal); MODE: readwrite,',
  '                                    readonly, exclusive, excl_write, readonly_ok',
  '  NAME --raw                        the console\'s bytes only: no greeting, notices or replay',
  `  NAME --tail N                     the last N lines of its console log (N <= ${MAX_TAIL_LINES})`,
  'On a console: Ctrl-] for the menu (d detach, b break, w who, c continue); ~. disconnects, ~B sends a break.',
].join('\n');

/** Splits on blanks, honouring '...' and "..." quotes. Null when a quote is left open. */
export function splitWords(text: string): string[] | null {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: string | null = null;
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = null;
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (quote) return null;
  if (inWord) words.push(cur);
  return words;
}

export function parseCommand(text: string): SshCommand {
  if (text.length > MAX_COMMAND) return { kind: 'error', message: `command longer than ${MAX_COMMAND} characters` };
  const words = splitWords(text);
  if (words === null) return { kind: 'error', message: 'a quote is not closed' };
  if (words.length === 0) return { kind: 'error', message: 'no command' };
  const [first, ...rest] = words;
  if (first === 'help' || first === '--help' || first === '-h') return rest.length === 0 ? { kind: 'help' } : { kind: 'error', message: 'help takes no arguments' };
  if (first === 'list') {
    if (rest.length === 0) return { kind: 'list', json: false };
    if (rest.length === 1 && rest[0] === '--json') return { kind: 'list', json: true };
    return { kind: 'error', message: `list: unexpected ${JSON.stringify(rest.find((w) => w !== '--json') ?? rest[0])} (list [--json])` };
  }
  if (first.startsWith('-')) return { kind: 'error', message: `unknown option ${JSON.stringify(first)}: give a console name first` };
  let mode: LockRequest | undefined;
  let force = false;
  let raw = false;
  let tail: number | undefined;
  for (let i = 0; i < rest.length; i++) {
    const w = rest[i];
    const eq = w.indexOf('=');
    const flag = w.startsWith('--') && eq > 0 ? w.slice(0, eq) : w;
    const inline = w.startsWith('--') && eq > 0 ? w.slice(eq + 1) : undefined;
    const value = (): string | undefined => inline ?? rest[++i];
    if (flag === '--force' || flag === '--raw') {
      if (inline !== undefined) return { kind: 'error', message: `${flag} takes no value` };
      if (flag === '--force') force = true;
      else raw = true;
    } else if (flag === '--mode') {
      const v = value();
      if (v === undefined) return { kind: 'error', message: '--mode needs a value' };
      const m = parseLockMode(v);
      if (!m) return { kind: 'error', message: `--mode: ${JSON.stringify(v.slice(0, 40))} is not one of readwrite, readonly, exclusive, excl_write, readonly_ok` };
      mode = m;
    } else if (flag === '--tail') {
      const v = value();
      if (v === undefined || !/^\d+$/.test(v) || Number(v) < 1 || Number(v) > MAX_TAIL_LINES) {
        return { kind: 'error', message: `--tail needs a number of lines, 1-${MAX_TAIL_LINES}` };
      }
      tail = Number(v);
    } else {
      return { kind: 'error', message: `unexpected ${JSON.stringify(w.slice(0, 40))} (NAME [--mode MODE] [--force] [--raw], NAME --tail N)` };
    }
  }
  if (tail !== undefined) {
    if (mode !== undefined || force || raw) return { kind: 'error', message: '--tail goes alone: it prints the log and attaches nothing' };
    return { kind: 'tail', target: first, lines: tail };
  }
  return { kind: 'attach', target: first, mode, force, raw };
}
