/**
 * Reading the config file (`vspc --config FILE`: JSON when the name ends in `.json`,
 * else YAML): parse it, check each top-level key against the keys it may have and
 * each value's type, and locate any node as "file:line:col" for error messages. What the keys are and what their values
 * mean is not decided here (table.ts, load.ts); see docs/operations.md and
 * docs/decisions/0006-yaml-config.md.
 */
import { readFileSync } from 'node:fs';
import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Document, type Pair } from 'yaml';
import { ConfigError } from '../errors.js';
import { checkJsonSyntax } from './json-syntax.js';

/** Throws a ConfigError at the position of `at` (of its key with `onKey`): "file:line:col: a.b.c: message". */
export type Fail = (at: Array<string | number>, message: string, onKey?: boolean) => never;

/** How a key's value is checked before the option parsers see it. */
export type KeyKind =
  | { kind: 'string' }
  | { kind: 'boolean' }
  | { kind: 'choice'; choices: readonly string[] }
  /** A structured value with its own checker (the `vms:` list). */
  | { kind: 'custom'; check: (value: unknown, fail: Fail) => unknown };

/** A read and type-checked config file. */
export interface ConfigFile {
  path: string;
  /** Top-level values: strings for valued keys, booleans for switches, a custom checker's result for the others. */
  values: Map<string, unknown>;
  /** "path:line:col" of the value at `at` (or of its key, with `key`). */
  where(at: ReadonlyArray<string | number>, key?: boolean): string;
}

/** Reads, parses and type-checks a config file; every error names the key and its position. */
export function readConfigFile(path: string, keys: ReadonlyMap<string, KeyKind>): ConfigFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`--config: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      field: '--config',
      value: path,
    });
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: true });
  const pos = (offset: number | undefined) => {
    const p = lines.linePos(offset ?? 0);
    return `${path}:${p.line}:${p.col}`;
  };
  // A .json file is JSON: what YAML would also accept (a trailing comma, a comment,
  // unquoted keys) is an error. Then the YAML reading below gives the positions.
  if (/\.json$/i.test(path)) {
    const bad = checkJsonSyntax(text);
    if (bad) throw new ConfigError(`${pos(bad.offset)}: JSON syntax error: ${bad.message}`, { field: '--config', file: path });
  }
  const firstError = doc.errors[0];
  if (firstError) {
    const msg = firstError.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
    throw new ConfigError(`${pos(firstError.pos[0])}: ${msg}`, { field: '--config', file: path });
  }
  const where = (at: ReadonlyArray<string | number>, key = false): string => locate(doc, at, key, pos);
  const fail: Fail = (at, message, onKey = false) => {
    throw new ConfigError(`${where(at, onKey)}: ${at.join('.')}: ${message}`, { field: at.join('.'), file: path });
  };

  const values = new Map<string, unknown>();
  if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) return { path, values, where };
  if (!isMap(doc.contents)) {
    throw new ConfigError(`${pos(doc.contents.range?.[0])}: the config file must be a mapping of keys to values`, { field: '--config', file: path });
  }
  const js = doc.toJS() as Record<string, unknown>;
  for (const item of doc.contents.items as Pair[]) {
    const name = isScalar(item.key) ? String(item.key.value) : String(item.key);
    const kind = keys.get(name);
    if (!kind) {
      const near = suggest(name, [...keys.keys()]);
      fail([name], `unknown key${near ? ` (did you mean "${near}"?)` : ''}`, true);
      continue;
    }
    values.set(name, checkValue(name, js[name], kind, fail));
  }
  return { path, values, where };
}

function checkValue(name: string, v: unknown, kind: KeyKind, fail: Fail): unknown {
  if (v === null || v === undefined) fail([name], 'has no value');
  switch (kind.kind) {
    case 'boolean':
      if (typeof v !== 'boolean') fail([name], `expected true or false, got ${JSON.stringify(v)}`);
      return v;
    case 'choice':
      if (typeof v !== 'string' || !kind.choices.includes(v)) fail([name], `expected one of ${kind.choices.join(', ')}, got ${JSON.stringify(v)}`);
      return v;
    case 'string':
      if (typeof v === 'number' && Number.isFinite(v)) return String(v);
      if (typeof v !== 'string') fail([name], `expected a string or number, got ${describe(v)}`);
      return v;
    case 'custom':
      return kind.check(v, fail);
  }
}

/** Runs an option parser and re-throws its error at the file position of `at`. */
export function asConfigError<T>(at: Array<string | number>, fail: Fail, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return fail(at, err.message.replace(/^[^:]*: /, ''));
  }
}

/** A value's kind, for "expected …, got …". */
export function describe(v: unknown): string {
  if (v === null) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** The closest known key, for "did you mean" (edit distance at most 3). */
function suggest(name: string, known: string[]): string | null {
  let best: string | null = null;
  let bestD = 4;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}

/** Position of the node at `at` (its key with `key`), falling back to the nearest parent. */
function locate(doc: Document, at: ReadonlyArray<string | number>, key: boolean, pos: (offset: number | undefined) => string): string {
  let node: unknown = doc.contents;
  let offset: number | undefined = (doc.contents as { range?: number[] } | null)?.range?.[0];
  for (let i = 0; i < at.length; i++) {
    const seg = at[i];
    const last = i === at.length - 1;
    if (isMap(node)) {
      const pair = (node.items as Pair[]).find((p) => (isScalar(p.key) ? p.key.value : p.key) === seg);
      if (!pair) break;
      const keyNode = pair.key as { range?: number[] } | null;
      const valueNode = pair.value as { range?: number[] } | null;
      offset = (last && key ? keyNode?.range?.[0] : (valueNode?.range?.[0] ?? keyNode?.range?.[0])) ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as { range?: number[] } | undefined;
      if (!item) break;
      offset = item.range?.[0] ?? offset;
      node = item;
    } else break;
  }
  return pos(offset);
}
