/**
 * What one idle console costs on vspc's heap, object by object.
 *
 *   node dist/bench/heap-diff.js [--kind esxi|unix] [--n 300] [--top 40] [--keep DIR] [--json FILE]
 *
 * Starts a vspc of its own (as the benchmark does: temporary database, loopback,
 * `--log-level warn`), takes a heap snapshot after a full GC, then makes N idle
 * consoles and takes a second one:
 *
 * - `esxi`: N simulated ESXi VMs (`SimulatedVm` from test/support/sim/, in this
 *   process) connect and register, as the scale phase's do;
 * - `unix`: N unix-socket endpoints listen in this process and are declared as
 *   `unix:` consoles by one reload (SIGHUP), as the unix phase's are.
 *
 * The two snapshots are subtracted by a key per object, and the differences are
 * printed per console (bytes and objects), largest first. The key is the node type and
 * name, and, so that unnamed things can be told apart:
 * - a closure: its function name and source position (`file:line:col`);
 * - a plain `Object`: its property names;
 * - an array, a V8-internal object (`system / ...`, `(...)`) or a native node: the
 *   key of the object that holds it and the name of the edge (its first retainer).
 * `(code)` is left out of the total: V8 compiles more as the process warms up, not per
 * console. The process's RSS, memoryUsage(), resident bytes by kind of mapping and V8's
 * spaces before and after are printed too, sampled as the benchmark samples them (after
 * a full GC, once the young generation has settled: harness.ts settledMemory);
 * `--rss-only` skips the snapshots (writing one grows the RSS), `--settle-ms` is how long
 * the consoles stay idle before the second sample.
 *
 * It needs `npx tsc -p tsconfig.json` first (it runs from dist/). The numbers are of
 * the heap after a full GC; RSS also holds what the heap committed and the native
 * memory of sockets and listeners (see docs/performance.md, "Idle memory").
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SimulatedVm } from '../test/support/sim/index.js';
import { benchIdentity, mapLimit, sleep } from './common.js';
import { privatePorts, settledMemory } from './harness.js';
import { killAll } from './ipc.js';
import { sampleProc } from './proc.js';
import { ServerProcess } from './server-process.js';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]]; location_fields?: string[] } };
  nodes: number[];
  edges: number[];
  strings: string[];
  locations?: number[];
}

/** Per-key totals of one snapshot: count and self bytes. */
type Totals = Map<string, { count: number; bytes: number }>;

/** Aggregates a snapshot by key (see the file comment). */
export function aggregate(s: Snapshot): Totals {
  const m = s.snapshot.meta;
  const NF = m.node_fields.length;
  const EF = m.edge_fields.length;
  const nType = m.node_fields.indexOf('type');
  const nName = m.node_fields.indexOf('name');
  const nSize = m.node_fields.indexOf('self_size');
  const nEdges = m.node_fields.indexOf('edge_count');
  const eType = m.edge_fields.indexOf('type');
  const eName = m.edge_fields.indexOf('name_or_index');
  const eTo = m.edge_fields.indexOf('to_node');
  const nodeTypes = m.node_types[0];
  const edgeTypes = m.edge_types[0];
  const { nodes, edges, strings } = s;
  const count = nodes.length / NF;
  const firstEdge = new Uint32Array(count + 1);
  for (let i = 0, e = 0; i < count; i++) {
    firstEdge[i] = e;
    e += nodes[i * NF + nEdges] * EF;
  }
  firstEdge[count] = edges.length;
  // First strong retainer of every node (node index, edge index).
  const retainer = new Int32Array(count).fill(-1);
  const retainerEdge = new Int32Array(count).fill(-1);
  for (let i = 0; i < count; i++) {
    for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += EF) {
      const t = edgeTypes[edges[e + eType]];
      if (t === 'weak' || t === 'shortcut') continue;
      const to = edges[e + eTo] / NF;
      if (retainer[to] === -1) {
        retainer[to] = i;
        retainerEdge[to] = e;
      }
    }
  }
  const typeOf = (i: number) => nodeTypes[nodes[i * NF + nType]];
  const nameOf = (i: number) => strings[nodes[i * NF + nName]];
  const edgeName = (e: number) => {
    const t = edgeTypes[edges[e + eType]];
    return t === 'element' || t === 'hidden' ? `[${edges[e + eName]}]` : strings[edges[e + eName]];
  };
  const edgeTo = (i: number, name: string): number => {
    for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += EF) {
      const t = edgeTypes[edges[e + eType]];
      if (t !== 'element' && t !== 'hidden' && strings[edges[e + eName]] === name) return edges[e + eTo] / NF;
    }
    return -1;
  };
  // Closures: source position from `locations`, the script's name through shared → script.
  const loc = new Map<number, string>();
  if (s.locations && m.location_fields) {
    const LF = m.location_fields.length;
    for (let k = 0; k < s.locations.length; k += LF) {
      const node = s.locations[k] / NF;
      const line = s.locations[k + 2] + 1;
      const col = s.locations[k + 3] + 1;
      let file = '?';
      const sfi = edgeTo(node, 'shared');
      if (sfi >= 0) {
        let script = edgeTo(sfi, 'script_or_debug_info');
        if (script < 0) script = edgeTo(sfi, 'script');
        // The Script node is named by its URL (node: for Node's own modules).
        if (script >= 0) file = nameOf(script).replace(/^file:\/\/.*?\/dist\//, '').replace(/^file:\/\/.*?\/node_modules\//, 'node_modules/');
      }
      loc.set(node, `${file}:${line}:${col}`);
    }
  }
  const own = (i: number): string => {
    const t = typeOf(i);
    const n = nameOf(i);
    if (t === 'closure') return `closure ${n || '(anonymous)'} @${loc.get(i) ?? '?'}`;
    if (t === 'object' && n === 'Object') {
      const props: string[] = [];
      for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += EF) if (edgeTypes[edges[e + eType]] === 'property') props.push(strings[edges[e + eName]]);
      return `Object{${props.slice(0, 12).join(',')}${props.length > 12 ? ',…' : ''}}`;
    }
    if (t === 'string' || t === 'concatenated string' || t === 'sliced string') return t;
    return `${t} ${n.length > 80 ? n.slice(0, 80) + '…' : n}`;
  };
  const needsOwner = (i: number): boolean => {
    const t = typeOf(i);
    const n = nameOf(i);
    return (
      t === 'array' ||
      t === 'hidden' ||
      t === 'native' ||
      t === 'number' ||
      t === 'object shape' ||
      t === 'concatenated string' ||
      n.startsWith('system /') ||
      n.startsWith('(') ||
      // Containers: who holds them tells more than their class.
      (t === 'object' && (n === 'Array' || n === 'Map' || n === 'Set' || n === 'WeakMap' || n === 'Object'))
    );
  };
  const key = (i: number): string => {
    let k = own(i);
    if (!needsOwner(i)) return k;
    // Up to three levels of owners, so that "(object properties) ← Foo.properties" and
    // "array ← (object elements) ← Foo" are told apart.
    let cur = i;
    for (let depth = 0; depth < 3 && needsOwner(cur); depth++) {
      const r = retainer[cur];
      if (r < 0) break;
      k += ` ← ${own(r)}.${edgeName(retainerEdge[cur])}`;
      cur = r;
    }
    return k;
  };
  const out: Totals = new Map();
  for (let i = 0; i < count; i++) {
    const k = key(i);
    const size = nodes[i * NF + nSize];
    const cur = out.get(k);
    if (cur) {
      cur.count++;
      cur.bytes += size;
    } else out.set(k, { count: 1, bytes: size });
  }
  return out;
}

export interface DiffRow {
  key: string;
  bytesPer: number;
  countPer: number;
}

export function diff(before: Totals, after: Totals, n: number): { rows: DiffRow[]; totalPer: number; codePer: number } {
  const keys = new Set([...before.keys(), ...after.keys()]);
  const rows: DiffRow[] = [];
  let total = 0;
  let code = 0;
  for (const k of keys) {
    const a = after.get(k) ?? { count: 0, bytes: 0 };
    const b = before.get(k) ?? { count: 0, bytes: 0 };
    const d = a.bytes - b.bytes;
    if (k.startsWith('code ') || k.includes('(code)')) {
      code += d;
      continue;
    }
    total += d;
    rows.push({ key: k, bytesPer: d / n, countPer: (a.count - b.count) / n });
  }
  rows.sort((x, y) => y.bytesPer - x.bytesPer);
  return { rows, totalPer: total / n, codePer: code / n };
}

/**
 * Resident bytes by kind of mapping (/proc/PID/smaps): `[heap]` is the main thread's
 * malloc (Node's and libuv's native objects), `anon` the other anonymous mappings (V8's
 * heap pages, large mallocs, other threads' arenas), `file` code and data of files.
 */
function readSmaps(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let kind = 'anon';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1];
      kind = name === '' ? 'anon' : name.startsWith('[') ? name : 'file';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) out.set(kind, (out.get(kind) ?? 0) + Number(rss[1]) * 1024);
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      kind: { type: 'string', default: 'esxi' },
      n: { type: 'string', default: '300' },
      top: { type: 'string', default: '40' },
      keep: { type: 'string' },
      json: { type: 'string' },
      // No heap snapshots (writing one grows the RSS): memory and /proc/PID/smaps only.
      'rss-only': { type: 'boolean', default: false },
      // How long the consoles stay idle before the second measurement.
      'settle-ms': { type: 'string', default: '1000' },
    },
  });
  const kind = values.kind;
  if (kind !== 'esxi' && kind !== 'unix') throw new Error('--kind is esxi or unix');
  const n = Number(values.n);
  const tmp = mkdtempSync(join(tmpdir(), 'vspc-heapdiff-'));
  const snapDir = values.keep ?? tmp;
  mkdirSync(snapDir, { recursive: true });
  const { range, proxyPort, adminPort } = await privatePorts(n + 16);
  const configPath = join(tmp, 'consoles.yaml');
  writeFileSync(configPath, 'consoles: []\n');
  const server = ServerProcess.spawn({
    dbPath: join(tmp, 'vspc.db'),
    proxyPort,
    adminPort,
    portRange: range,
    extraArgs: kind === 'unix' ? ['--config', configPath] : [],
  });
  const vms: SimulatedVm[] = [];
  const endpoints: net.Server[] = [];
  const conns: net.Socket[] = [];
  try {
    await server.waitReady();
    const paths: string[] = [];
    if (kind === 'unix') {
      for (let i = 0; i < n; i++) {
        const path = join(tmp, `ep-${i}.sock`);
        const srv = net.createServer((s) => {
          s.on('error', () => undefined);
          conns.push(s);
        });
        await new Promise<void>((resolve, reject) => {
          srv.once('error', reject);
          srv.listen({ path, backlog: 16 }, () => resolve());
        });
        endpoints.push(srv);
        paths.push(path);
      }
    }
    await sleep(500);
    const connectedBefore = (await server.status()).vmPortsConnected;
    // As the benchmark samples idle memory: once V8's young generation has settled.
    const mem0 = await settledMemory(server);
    await sleep(200);
    const rss0 = sampleProc(server.pid!)?.rssBytes ?? null;
    const smaps0 = readSmaps(server.pid!);
    const before = values['rss-only'] ? null : await server.heapSnapshot(join(snapDir, `${kind}-0.heapsnapshot`));
    if (!before && !values['rss-only']) throw new Error('no first snapshot');
    if (kind === 'esxi') {
      await mapLimit(
        Array.from({ length: n }, (_, i) => i),
        32,
        async (i) => {
          const id = benchIdentity(7, 1, i);
          const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: proxyPort, uuid: id.text, name: id.name, collectInput: false });
          await vm.whenProxied(10_000);
          vms.push(vm);
        },
      );
    } else {
      writeFileSync(configPath, ['consoles:', ...paths.map((p, i) => `  - name: hd-unix-${i}\n    source: unix:${p}`)].join('\n') + '\n');
      server.child.kill('SIGHUP');
    }
    const deadline = Date.now() + 120_000;
    while ((await server.status()).vmPortsConnected < connectedBefore + n) {
      if (Date.now() > deadline) throw new Error('consoles did not connect in 120 s');
      await sleep(100);
    }
    await sleep(Number(values['settle-ms']));
    const mem1 = await settledMemory(server);
    await sleep(200);
    const rss1 = sampleProc(server.pid!)?.rssBytes ?? null;
    const smaps1 = readSmaps(server.pid!);
    const kib = (a: number | null | undefined, b: number | null | undefined) => (a == null || b == null ? 'n/a' : `${((a - b) / n / 1024).toFixed(2)} KiB`);
    // With snapshots, the first one's own memory (malloc'd while writing it) is in the second RSS sample.
    const rssNote = values['rss-only'] ? '' : ' (includes writing the first snapshot: use --rss-only for RSS)';
    console.log(`${kind}: ${n} idle consoles; per console: RSS ${kib(rss1, rss0)}${rssNote}, heapUsed ${kib(mem1?.heapUsed, mem0?.heapUsed)}, heapTotal ${kib(mem1?.heapTotal, mem0?.heapTotal)}, external ${kib(mem1?.external, mem0?.external)}`);
    console.log(`RSS by mapping, per console${rssNote}: ${[...new Set([...smaps0.keys(), ...smaps1.keys()])].map((k) => `${k} ${kib(smaps1.get(k) ?? 0, smaps0.get(k) ?? 0)}`).join(', ')}`);
    const spaces = (m: typeof mem0) => Object.entries(m?.spaces ?? {}).filter(([, v]) => v.size > 0).map(([k, v]) => `${k.replace(/_space$/, '')} ${(v.size / 1048576).toFixed(1)}/${(v.used / 1048576).toFixed(1)}`).join(', ');
    console.log(`V8 spaces committed/used MiB, before: ${spaces(mem0)}`);
    console.log(`V8 spaces committed/used MiB, after:  ${spaces(mem1)}`);
    if (values['rss-only']) return;
    const after = await server.heapSnapshot(join(snapDir, `${kind}-${n}.heapsnapshot`));
    if (!after || !before) throw new Error('no second snapshot');
    const d = diff(aggregate(JSON.parse(readFileSync(before, 'utf8')) as Snapshot), aggregate(JSON.parse(readFileSync(after, 'utf8')) as Snapshot), n);
    console.log(`snapshot diff per console: ${d.totalPer.toFixed(0)} bytes without (code) (code: ${d.codePer.toFixed(0)} bytes)`);
    console.log('bytes/console  objects/console  key');
    for (const r of d.rows.slice(0, Number(values.top))) {
      console.log(`${r.bytesPer.toFixed(1).padStart(13)}  ${r.countPer.toFixed(2).padStart(15)}  ${r.key}`);
    }
    if (values.json) writeFileSync(values.json, JSON.stringify({ kind, n, totalPer: d.totalPer, codePer: d.codePer, rows: d.rows.filter((r) => Math.abs(r.bytesPer) >= 1) }, null, 1));
  } finally {
    for (const vm of vms) vm.destroy();
    for (const s of conns) s.destroy();
    for (const e of endpoints) e.close();
    await server.stop(10_000);
    killAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
