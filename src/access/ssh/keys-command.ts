/**
 * The keys command (--ssh-keys-command), like OpenSSH's AuthorizedKeysCommand and
 * oVirt's key service: asked about a key the authorized-keys file does not list, so an
 * inventory (vCenter tags, Proxmox pools, an LDAP group) decides who reaches what.
 *
 * Run without a shell (execFile): the option's words (program, then fixed arguments),
 * then the SSH login name, the key type, the key (base64) and its fingerprint. It
 * answers on stdout with one JSON object:
 *
 *   {"user": "alice", "consoles": ["web*", "db01"], "modes": ["readwrite", "readonly"],
 *    "idle": "30m", "maxSession": "8h", "from": "10.0.0.0/8"}      the key may log in
 *   {"deny": "not in the ops group"}                                 it may not
 *
 * `consoles` is required (a command answering `{}` by mistake must not open every
 * console); the other fields are optional, with the meaning of the file's options.
 * A non-zero exit, a timeout, output past the bound, or an answer that is not such an
 * object is a failure: logged, counted, and the key is not let in — never fatal, and
 * never ending a session that is already running.
 */
import { execFile } from 'node:child_process';
import type { Logger } from '../../domain/logger.js';
import { LOCK_MODES } from '../../domain/locks.js';
import { sanitizeText } from '../../util/text.js';
import {
  AddressPatterns,
  cleanUserName,
  ConsolePatterns,
  MODE_WORDS,
  modesFrom,
  parseDurationText,
  type KeyRights,
} from './rights.js';

export interface KeysCommandLimits {
  keysCommandTimeoutMs: number;
  keysCommandMaxOutput: number;
  keysCommandConcurrency: number;
}

export interface KeyQuery {
  /** The SSH login name (`console` in `ssh console@host`). */
  loginName: string;
  keyType: string;
  /** The public key blob, base64. */
  key: string;
  fingerprint: string;
}

export type KeysCommandResult =
  | { kind: 'allow'; rights: KeyRights }
  | { kind: 'deny'; reason: string }
  | { kind: 'failed'; reason: string };

/** Outcomes, for /metrics. */
export type KeysCommandOutcome = 'allowed' | 'denied' | 'failed' | 'busy';

const MAX_TEXT = 256;

export class KeysCommand {
  private readonly argv: string[];
  private running = 0;

  constructor(
    command: string,
    private readonly limits: KeysCommandLimits,
    private readonly logger: Logger,
    private readonly count: (outcome: KeysCommandOutcome) => void,
  ) {
    this.argv = command.trim().split(/\s+/);
  }

  get text(): string {
    return this.argv.join(' ');
  }

  /** Asks the command about one key. Never rejects. */
  lookup(q: KeyQuery): Promise<KeysCommandResult> {
    if (this.running >= this.limits.keysCommandConcurrency) {
      this.count('busy');
      this.logger.warn('SSH keys command busy: too many running at once; key not let in', {
        errorCode: 'VSPC_SSH_KEYS_COMMAND_FAILED',
        running: this.running,
        fingerprint: q.fingerprint,
      });
      return Promise.resolve({ kind: 'failed', reason: 'busy' });
    }
    this.running++;
    const started = Date.now();
    return new Promise<KeysCommandResult>((resolve) => {
      // Not the admin token: the command needs nothing of vspc's secrets.
      const { VSPC_ADMIN_TOKEN: _token, ...env } = process.env;
      execFile(
        this.argv[0],
        [...this.argv.slice(1), q.loginName, q.keyType, q.key, q.fingerprint],
        {
          timeout: this.limits.keysCommandTimeoutMs,
          killSignal: 'SIGKILL',
          maxBuffer: this.limits.keysCommandMaxOutput,
          encoding: 'utf8',
          env,
          windowsHide: true,
        },
        (err, stdout, stderr) => {
          this.running--;
          const durationMs = Date.now() - started;
          const stderrText = sanitizeText(String(stderr ?? '').trim()).slice(0, MAX_TEXT);
          if (err) {
            const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string | null; code?: string | number | null };
            const reason =
              e.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER'
                ? `output over ${this.limits.keysCommandMaxOutput} bytes`
                : e.killed || e.signal === 'SIGKILL'
                  ? `no answer within ${this.limits.keysCommandTimeoutMs} ms`
                  : typeof e.code === 'number'
                    ? `exit status ${e.code}`
                    : `cannot run: ${e.code ?? e.message}`;
            return resolve(this.failed(q, reason, durationMs, stderrText));
          }
          let answer: unknown;
          try {
            answer = JSON.parse(stdout);
          } catch {
            return resolve(this.failed(q, 'the answer is not JSON', durationMs, stderrText));
          }
          const result = interpret(answer, q);
          if (result.kind === 'failed') return resolve(this.failed(q, result.reason, durationMs, stderrText));
          this.count(result.kind === 'allow' ? 'allowed' : 'denied');
          this.logger.info(result.kind === 'allow' ? 'SSH keys command let a key in' : 'SSH keys command denied a key', {
            fingerprint: q.fingerprint,
            durationMs,
            ...(result.kind === 'allow'
              ? { user: result.rights.user, consoles: result.rights.consoles.toString() }
              : { reason: result.reason }),
          });
          resolve(result);
        },
      );
    });
  }

  private failed(q: KeyQuery, reason: string, durationMs: number, stderr: string): KeysCommandResult {
    this.count('failed');
    this.logger.warn('SSH keys command failed; key not let in', {
      errorCode: 'VSPC_SSH_KEYS_COMMAND_FAILED',
      command: this.argv[0],
      reason,
      durationMs,
      fingerprint: q.fingerprint,
      ...(stderr ? { stderr } : {}),
    });
    return { kind: 'failed', reason };
  }
}

/** The command's JSON → a decision; `failed` names what is wrong with it. */
export function interpret(answer: unknown, q: Pick<KeyQuery, 'loginName' | 'fingerprint'>): KeysCommandResult {
  if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) return { kind: 'failed', reason: 'the answer is not a JSON object' };
  const a = answer as Record<string, unknown>;
  const known = new Set(['user', 'consoles', 'modes', 'idle', 'maxSession', 'from', 'deny']);
  const unknown = Object.keys(a).filter((k) => !known.has(k));
  if (unknown.length > 0) return { kind: 'failed', reason: `unknown field ${JSON.stringify(unknown[0].slice(0, 40))}` };
  if ('deny' in a) {
    if (typeof a.deny !== 'string' && a.deny !== true) return { kind: 'failed', reason: '"deny" must be a string (the reason) or true' };
    return { kind: 'deny', reason: typeof a.deny === 'string' ? sanitizeText(a.deny).slice(0, MAX_TEXT) : 'denied' };
  }
  const strings = (v: unknown): string[] | null => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : null);
  const consoles = strings(a.consoles);
  if (!consoles || consoles.length === 0) return { kind: 'failed', reason: '"consoles" must be a non-empty array of patterns (["*"] for all)' };
  for (const p of consoles) {
    const problem = ConsolePatterns.problem(p);
    if (problem) return { kind: 'failed', reason: `"consoles": ${problem}` };
  }
  let words: string[] | null = null;
  if (a.modes !== undefined) {
    const m = strings(a.modes);
    if (!m) return { kind: 'failed', reason: '"modes" must be an array of lock modes' };
    words = m.map((w) => w.toLowerCase().replace(/-/g, '_'));
    const bad = words.find((w) => !MODE_WORDS.includes(w));
    if (bad !== undefined) return { kind: 'failed', reason: `"modes": unknown mode ${JSON.stringify(bad.slice(0, 40))} (use ${[...LOCK_MODES, 'force'].join(', ')})` };
  }
  const duration = (name: 'idle' | 'maxSession'): number | null | 'bad' => {
    const v = a[name];
    if (v === undefined) return null;
    if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return Math.round(v * 1000);
    if (typeof v !== 'string') return 'bad';
    return parseDurationText(v) ?? 'bad';
  };
  const idleMs = duration('idle');
  const maxSessionMs = duration('maxSession');
  if (idleMs === 'bad' || maxSessionMs === 'bad') return { kind: 'failed', reason: '"idle"/"maxSession" must be durations ("30m", "8h") or seconds' };
  let from: AddressPatterns | null = null;
  if (a.from !== undefined) {
    const text = Array.isArray(a.from) && a.from.every((x) => typeof x === 'string') ? (a.from as string[]).join(',') : a.from;
    if (typeof text !== 'string') return { kind: 'failed', reason: '"from" must be a string or an array of address patterns' };
    const problem = AddressPatterns.problem(text);
    if (problem) return { kind: 'failed', reason: `"from": ${problem}` };
    from = new AddressPatterns(text);
  }
  if (a.user !== undefined && typeof a.user !== 'string') return { kind: 'failed', reason: '"user" must be a string' };
  const { modes, force } = modesFrom(words);
  return {
    kind: 'allow',
    rights: {
      user: cleanUserName(a.user as string | undefined, cleanUserName(q.loginName, `key-${q.fingerprint.slice(7, 15)}`)),
      consoles: new ConsolePatterns(consoles),
      modes,
      force,
      idleMs,
      maxSessionMs,
      from,
      source: 'command',
      where: 'keys command',
    },
  };
}
