/**
 * Test doubles for the maintained-source machinery: a synchronous recording logger,
 * fake links and connectors (dial and listen), a hub with an observer, and
 * event-driven waits on an EndpointRunner's state.
 */
import type { LazyFields, Logger, LogFields } from '../../src/domain/logger.js';
import { ConsoleHub, type ConsoleEvent } from '../../src/domain/console-hub.js';
import type { EndpointState } from '../../src/domain/seams.js';
import type { SourceError } from '../../src/sources/common/errors.js';
import type {
  BoundListener,
  DialConnector,
  Link,
  LinkSink,
  ListenConnector,
  ListenHandlers,
} from '../../src/sources/common/link.js';
import type { EndpointDetail, EndpointRunner } from '../../src/sources/common/runner.js';

export interface LogLine {
  level: 'error' | 'warn' | 'info' | 'debug';
  message: string;
  fields: LogFields;
}

/** A Logger that keeps every line, synchronously (children share the list). */
export function recordingLogger(base: LogFields = {}, lines: LogLine[] = []): Logger & { lines: LogLine[] } {
  const at =
    (level: LogLine['level']) =>
    (message: string, fields: LazyFields = {}): void => {
      lines.push({ level, message, fields: { ...base, ...(typeof fields === 'function' ? fields() : fields) } });
    };
  return {
    lines,
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    isLevelEnabled: () => true,
    child: (fields: LazyFields) => recordingLogger({ ...base, ...(typeof fields === 'function' ? fields() : fields) }, lines),
  };
}

let nextHubId = 1;

/** A hub for a maintained console, with the events its observer saw (and the output, unless `keepOutput` is false). */
export function makeHub(scrollback = 64 * 1024, keepOutput = true): { hub: ConsoleHub; events: ConsoleEvent[]; output: Buffer[] } {
  const events: ConsoleEvent[] = [];
  const output: Buffer[] = [];
  const id = nextHubId++;
  const hub = new ConsoleHub(
    { id, kind: 'qemu', key: `test-${id}`, label: 'serial0', name: `vm${id}`, tcpPort: 10000 + id },
    1024 * 1024,
    scrollback,
    { event: (_p, e) => events.push(e), output: keepOutput ? (_p, d) => output.push(d) : undefined },
  );
  return { hub, events, output };
}

export class FakeLink implements Link {
  static next = 1;
  readonly id = FakeLink.next++;
  readonly peer: string;
  note?: string;
  sink: LinkSink | null = null;
  written: Buffer[] = [];
  full = false;
  drain: (() => void) | null = null;
  closedWith: string | null = null;
  destroyedWith: string | null = null;
  breaks = 0;
  private ended = false;
  /** Set: close() reports closed at once; unset: the test calls finishClose(). */
  closeAtOnce = true;

  constructor(peer = 'fake-peer') {
    this.peer = peer;
  }
  start(sink: LinkSink): void {
    this.sink = sink;
  }
  write(data: Buffer): boolean {
    this.written.push(Buffer.from(data));
    return !this.full;
  }
  onDrain(listener: () => void): void {
    this.drain = listener;
  }
  sendBreak(): void {
    this.breaks++;
  }
  close(reason: string): void {
    if (this.closedWith !== null) return;
    this.closedWith = reason;
    if (this.closeAtOnce) this.finishClose();
  }
  finishClose(): void {
    this.end(null);
  }
  destroy(reason: string): void {
    this.destroyedWith ??= reason;
    this.end(null);
  }
  /** The far end delivers output. */
  emit(text: string | Buffer): void {
    this.sink!.data(typeof text === 'string' ? Buffer.from(text) : text);
  }
  /** The far end goes away. */
  drop(err: SourceError | null): void {
    this.end(err);
  }
  private end(err: SourceError | null): void {
    if (this.ended) return;
    this.ended = true;
    this.sink?.closed(err);
  }
}

interface PendingDial {
  signal: AbortSignal;
  resolve(link: Link): void;
  reject(err: unknown): void;
}

/** A dialer whose attempts the test settles by hand. */
export class FakeDialer implements DialConnector {
  readonly mode = 'dial' as const;
  readonly pending: PendingDial[] = [];
  dials = 0;
  /** When set, every dial is settled at once by this. */
  auto: ((signal: AbortSignal) => Promise<Link>) | null = null;
  dial(signal: AbortSignal): Promise<Link> {
    this.dials++;
    if (this.auto) return this.auto(signal);
    return new Promise<Link>((resolve, reject) => {
      const p = { signal, resolve, reject };
      this.pending.push(p);
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
  }
  /** The latest attempt. */
  get last(): PendingDial {
    const p = this.pending[this.pending.length - 1];
    if (!p) throw new Error('no dial attempt');
    return p;
  }
}

export class FakeListener implements BoundListener {
  readonly address = 'fake-listen';
  closed = false;
  async close(): Promise<void> {
    this.closed = true;
  }
}

export class FakeListenConnector implements ListenConnector {
  readonly mode = 'listen' as const;
  binds = 0;
  handlers: ListenHandlers | null = null;
  listener: FakeListener | null = null;
  /** Errors for the next binds, in order (then success). */
  failNext: SourceError[] = [];
  async listen(handlers: ListenHandlers): Promise<BoundListener> {
    this.binds++;
    const err = this.failNext.shift();
    if (err) throw err;
    this.handlers = handlers;
    this.listener = new FakeListener();
    return this.listener;
  }
}

/** Lets promise callbacks run (real setImmediate: mock.timers here mocks setTimeout and Date only). */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Resolves with the status once the runner is in `state` (at once if it is), rejects
 * after `timeoutMs` (real time: for socket-level and QEMU tests).
 */
export function waitForState(runner: EndpointRunner, state: EndpointState, timeoutMs = 10_000, what = `state ${state}`): Promise<EndpointDetail> {
  if (runner.state === state) return Promise.resolve(runner.status);
  return new Promise((resolve, reject) => {
    const onState = (s: EndpointDetail): void => {
      if (s.state !== state) return;
      clearTimeout(timer);
      runner.off('state', onState);
      resolve(s);
    };
    const timer = setTimeout(() => {
      runner.off('state', onState);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; status: ${JSON.stringify(runner.status)}`));
    }, timeoutMs);
    runner.on('state', onState);
  });
}

/** Resolves once `predicate(status)` holds (checked on every state event). */
export function waitForStatus(runner: EndpointRunner, predicate: (s: EndpointDetail) => boolean, timeoutMs = 10_000, what = 'a status'): Promise<EndpointDetail> {
  if (predicate(runner.status)) return Promise.resolve(runner.status);
  return new Promise((resolve, reject) => {
    const onState = (s: EndpointDetail): void => {
      if (!predicate(s)) return;
      clearTimeout(timer);
      runner.off('state', onState);
      resolve(s);
    };
    const timer = setTimeout(() => {
      runner.off('state', onState);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; status: ${JSON.stringify(runner.status)}`));
    }, timeoutMs);
    runner.on('state', onState);
  });
}
