/**
 * Cluster nodes joined by the internal link, for tests: in-process vspc nodes
 * (TestServer) on one PostgreSQL database (test/support/postgres.ts), each with its
 * link on its own loopback address (127.0.0.2, 127.0.0.3, ...; port 0, advertised in
 * the database), the shared secret in a 0600 file, and optionally the SSH front door
 * and a TCP broker. Every node is closed by the cleanup.
 */
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { TestServer, tempDir, waitUntil, type Cleanup } from './server.js';
import { reservePortRange } from './ports.js';
import { readClusterSecret } from '../../src/config/table.js';
import type { VspcConfig } from '../../src/config/config.js';

export interface LinkedNode {
  id: string;
  /** The node's loopback address: client ports, its link. */
  host: string;
  ts: TestServer;
  /** The link's address as advertised. */
  link: { host: string; port: number };
}

export interface LinkedCluster {
  url: string;
  secretFile: string;
  nodes: LinkedNode[];
  /** Starts one more node (same database and secret). */
  start(id: string, host: string, extra?: Partial<VspcConfig>): Promise<LinkedNode>;
}

/** A 0600 file holding a fresh 64-character secret; returns its path. */
export function writeSecretFile(dir: string, name = 'cluster.secret'): string {
  const path = join(dir, name);
  writeFileSync(path, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  chmodSync(path, 0o600);
  return path;
}

/**
 * Nodes `ids` on `hosts` (same length) sharing database `url` and one port range
 * (ports are allocated cluster-wide in the database).
 */
export async function startLinkedCluster(
  url: string,
  c: Cleanup,
  specs: Array<{ id: string; host: string; config?: Partial<VspcConfig> }>,
  common: Partial<VspcConfig> = {},
): Promise<LinkedCluster> {
  const dir = tempDir('vspc-cluster-link-');
  c.add(() => dir.remove());
  const secretFile = writeSecretFile(dir.dir);
  const secret = readClusterSecret('--cluster-secret-file', secretFile);
  const portRange = await reservePortRange(40);
  const nodes: LinkedNode[] = [];
  const start = async (id: string, host: string, extra: Partial<VspcConfig> = {}): Promise<LinkedNode> => {
    const ts = await TestServer.start({
      portRange,
      config: {
        dbPath: url,
        nodeId: id,
        clientListenHost: host,
        clusterListen: { host, port: 0 },
        clusterSecret: secret,
        ...common,
        ...extra,
      },
    });
    c.add(() => ts.close());
    const node: LinkedNode = { id, host, ts, link: ts.server.addresses.cluster! };
    nodes.push(node);
    return node;
  };
  for (const s of specs) await start(s.id, s.host, s.config);
  return { url, secretFile, nodes, start };
}

/**
 * Resolves once `node` offers the console named `name` (its broker and SSH front door
 * list it and a SELECT finds it); rejects after `timeoutMs`. The owner registers a VM
 * before it knows the name, and writes the name to the database without waiting
 * (PgConsoleStore.rename is posted): until that write is done, another node sees the
 * console without a name and does not offer it. Also, a look-up over its 500 ms bound on
 * a loaded machine makes a node serve its last good list for 5 s. A test that reaches a
 * console through another node right after the VM connected to its owner waits for this
 * first.
 */
export async function offeredOn(node: LinkedNode, name: string, timeoutMs = 30_000): Promise<void> {
  const mirrors = node.ts.server.clusterMirrors;
  if (!mirrors) throw new Error(`node ${node.id} has no cluster link: it offers no other node's consoles`);
  await waitUntil(() => mirrors.remoteConsoles().some((h) => h.identity.name === name), timeoutMs, `${name} offered on node ${node.id}`);
}
