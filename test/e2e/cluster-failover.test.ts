/**
 * Failover of the consoles vspc maintains itself (declared `consoles:`; discovered ones
 * go through the same ManagedConsoles) in a cluster: every node runs the same
 * configuration, the first claims each console, the others keep it as "elsewhere" and
 * take it over within seconds when the owner dies — here two vspc processes on one real
 * PostgreSQL (test/support/postgres.ts), consoles served by the test on unix sockets,
 * the owner SIGKILLed: the survivor connects to the sockets, binds the same ports, and
 * a client reads the console's bytes there.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { TestCluster } from '../support/cluster.js';
import { Cleanup, tempDir, withTimeout } from '../support/server.js';
import { TelnetUser } from '../support/sim/index.js';

let pgServer: TestPostgres;

before(async () => {
  pgServer = await startPostgres();
});
after(async () => {
  await pgServer?.stop();
});

/** A serial console as QEMU serves it (`-serial unix:PATH,server=on`): each connection gets what `say` writes. */
class UnixConsole {
  readonly server: net.Server;
  readonly sockets = new Set<net.Socket>();
  connections = 0;
  private waiters: Array<() => void> = [];

  constructor(readonly path: string) {
    this.server = net.createServer((s) => {
      this.connections++;
      this.sockets.add(s);
      s.on('error', () => s.destroy());
      s.on('close', () => this.sockets.delete(s));
      s.resume();
      for (const w of this.waiters.splice(0)) w();
    });
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(this.path, resolve));
  }

  /** Resolves once a connection beyond the first `n` arrived (the next node's). */
  whenConnections(n: number, timeoutMs: number): Promise<void> {
    const wait = new Promise<void>((resolve) => {
      const check = (): void => {
        if (this.connections >= n && this.sockets.size > 0) resolve();
        else this.waiters.push(check);
      };
      check();
    });
    return withTimeout(wait, timeoutMs, `${this.path}: connection ${n}`);
  }

  say(text: string): void {
    for (const s of this.sockets) s.write(text);
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const owners = async (db: string): Promise<Map<string, string | null>> => {
  const rows = await pgServer.query<{ key: string; owner: string | null }>(
    `SELECT c.key, (SELECT substr(a.application_name, 6) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                     WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 30291 AND l.objid = c.id) AS owner
       FROM consoles c ORDER BY c.key`,
    [],
    db,
  );
  return new Map(rows.map((r) => [r.key, r.owner]));
};

test('declared consoles: the other node takes them over within seconds of the owner\'s SIGKILL, on the same ports, and a client reads them there', async (t) => {
  const url = await pgServer.createDatabase();
  const db = url.slice(url.lastIndexOf('/') + 1, url.indexOf('?'));
  const dir = tempDir('vspc-failover-');
  const c = new Cleanup();
  t.after(async () => {
    await c.run();
    dir.remove();
  });
  const consoles = ['con1', 'con2', 'con3'].map((n) => new UnixConsole(join(dir.dir, `${n}.sock`)));
  for (const u of consoles) {
    await u.listen();
    c.add(() => u.close());
  }
  const config = `consoles:\n${consoles.map((u, i) => `  - name: con${i + 1}\n    source: unix:${u.path}\n`).join('')}`;
  const cluster = await TestCluster.start({ nodes: 2, dbUrl: url, config, consolePorts: 20 });
  c.add(() => cluster.stop());
  const [first, second] = cluster.nodes;

  // The first node started claims all three; the second knows they are served elsewhere.
  for (const u of consoles) await u.whenConnections(1, 10_000);
  await second.waitForLogCount((l) => l.message === 'console served by another vspc node; this node takes it over if that node goes', 3, 10_000, 'consoles elsewhere');
  assert.equal(second.logs().find((l) => l.message === 'console served by another vspc node; this node takes it over if that node goes')?.owner, 'node-1');
  const before = await owners(db);
  assert.deepEqual([...before.values()], ['node-1', 'node-1', 'node-1']);
  const ports = new Map((await pgServer.query<{ key: string; p: number }>('SELECT key, tcp_port AS p FROM consoles', [], db)).map((r) => [r.key, r.p]));

  // A client on the owner reads con1.
  const u1 = await TelnetUser.connect({ host: first.host, port: ports.get('con1')! });
  c.add(() => u1.destroy());
  consoles[0].say('before the kill\r\n');
  await u1.waitFor('before the kill', 5000);

  const killedAt = Date.now();
  await first.kill();
  await second.waitForLogCount((l) => l.message === 'console taken over: no other vspc node serves it', 3, 15_000, 'takeovers');
  for (const u of consoles) await u.whenConnections(2, 10_000);
  const recovered = Date.now() - killedAt;
  t.diagnostic(`3 declared consoles taken over ${recovered} ms after the owner's SIGKILL`);
  const taken = second.logs().filter((l) => l.message === 'console taken over: no other vspc node serves it');
  assert.deepEqual(new Map(taken.map((l) => [l.console, l.port])), ports, 'each console on its own port, unchanged');
  assert.deepEqual([...(await owners(db)).values()], ['node-2', 'node-2', 'node-2']);

  // Same port, on the survivor: a client reads what the console prints now.
  const u2 = await TelnetUser.connect({ host: second.host, port: ports.get('con1')! });
  c.add(() => u2.destroy());
  consoles[0].say('after the kill\r\n');
  await u2.waitFor('after the kill', 5000);
  // And what it types reaches the console.
  const typed = new Promise<string>((resolve) => {
    const s = [...consoles[2].sockets][0];
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('typed')) resolve(got);
    });
  });
  const u3 = await TelnetUser.connect({ host: second.host, port: ports.get('con3')! });
  c.add(() => u3.destroy());
  u3.send('typed');
  await withTimeout(typed, 5000, 'input reaching con3 through the survivor');
});

test('a node restarted after a takeover does not take its consoles back: it keeps them as elsewhere', async (t) => {
  const url = await pgServer.createDatabase();
  const db = url.slice(url.lastIndexOf('/') + 1, url.indexOf('?'));
  const dir = tempDir('vspc-failover-');
  const c = new Cleanup();
  t.after(async () => {
    await c.run();
    dir.remove();
  });
  const con = new UnixConsole(join(dir.dir, 'only.sock'));
  await con.listen();
  c.add(() => con.close());
  const cluster = await TestCluster.start({ nodes: 2, dbUrl: url, config: `consoles:\n  - name: only\n    source: unix:${con.path}\n`, consolePorts: 10 });
  c.add(() => cluster.stop());
  const [first, second] = cluster.nodes;
  await con.whenConnections(1, 10_000);
  await first.kill();
  await second.waitForLog((l) => l.message === 'console taken over: no other vspc node serves it', 15_000, 'takeover');
  await first.start();
  await first.waitForLog((l) => l.message === 'console served by another vspc node; this node takes it over if that node goes' && l.owner === 'node-2', 10_000, 'elsewhere at start');
  assert.deepEqual([...(await owners(db)).values()], ['node-2']);
  assert.equal(con.sockets.size, 1, 'one node connected to the console');
});
