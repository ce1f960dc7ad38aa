/**
 * Console log files (docs/console-logs.md): the public entry of `console-log/`.
 *
 * - `manager.ts`  ConsoleLogManager, the ConsoleObserver mapping consoles to writers
 * - `writer.ts`   AppendFileWriter: bounded asynchronous append-only file writer (no consoles)
 * - `rotation.ts` size-based rotation, N files kept
 * - `names.ts`    file names from identities, within NAME_MAX; `links.ts` the by-name links
 * - `format.ts`   the header line and vspc's own timestamped lines (and taking them out again)
 * - `tail.ts`     the last lines (or bytes) of a file, for `vspc-admin log` and scrollback
 * - `follow.ts`   a reader following a log as it is written (`vspc-admin log --follow`)
 */
export { ConsoleLogManager, CONSOLE_LOG_DEFAULTS, MAX_FOLLOWERS, type ConsoleLogOptions, type LogFollow } from './console-log/manager.js';
export type { FollowSink } from './console-log/follow.js';
export { describeEvent, withoutOwnLines } from './console-log/format.js';
export { readLastLines } from './console-log/tail.js';
export { LogFileError, type LogFileErrorCode } from './console-log/errors.js';
