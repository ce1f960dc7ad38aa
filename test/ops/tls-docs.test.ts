/**
 * The commands certs/README.md (and README.md) give for reaching a telnets client port
 * really verify the certificate: run as written — only the port and the certificate
 * path replaced — against a running vspc with a self-signed certificate, they work
 * with that certificate as the CA and refuse another one.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TelnetUser } from '../support/sim/index.js';
import { esxiUuid, makeCert, ROOT, startServer, tempDir, withTimeout } from '../support/server.js';
import { reservePort } from '../support/ports.js';

const certsReadme = readFileSync(join(ROOT, 'certs/README.md'), 'utf8');
const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');

/** The one line of `text` (README code, maybe indented) that starts with `prefix`. */
function commandLine(text: string, prefix: string): string {
  const lines = text.split('\n').map((l) => l.trim().replace(/^`|`$/g, '')).filter((l) => l.startsWith(prefix));
  assert.equal(lines.length, 1, `exactly one "${prefix}..." command in the document: ${JSON.stringify(lines)}`);
  return lines[0];
}

function have(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
}

/** Runs a spawned process to its end (bounded); its exit code and output. */
function finished(p: ChildProcess, what: string, ms = 20_000): Promise<{ code: number | null; out: string }> {
  let out = '';
  p.stdout?.on('data', (d: Buffer) => (out += d.toString('latin1')));
  p.stderr?.on('data', (d: Buffer) => (out += d.toString('latin1')));
  return withTimeout(new Promise((resolve) => p.on('close', (code) => resolve({ code, out }))), ms, what);
}

/**
 * Connects to a port socat is about to listen on; bounded. Refused while it starts up;
 * the first connection that succeeds is the one (socat serves only one).
 */
async function connectWhenListening(port: number, ms = 10_000): Promise<TelnetUser> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await TelnetUser.connect({ host: '127.0.0.1', port, connectTimeoutMs: 2000 });
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after ${ms} ms: ${(err as Error).message}`);
    }
  }
}

describe('certs/README.md: the telnets commands verify the certificate', () => {
  test('openssl s_client, socat and telnet-ssl as documented: accepted with vspc\'s certificate as CA, refused with another', { timeout: 90_000 }, async (t) => {
    const dir = tempDir();
    t.after(() => dir.remove());
    const server = makeCert(dir.dir);
    const other = makeCert(join(dir.dir, 'other'));
    const { ts, cleanup } = await startServer(t, { tls: { cert: server.cert, key: server.key } });
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'tls-doc' }, cleanup);
    const tlsPort = hub.identity.tcpPort + ts.config.tlsPortOffset;
    const procs: ChildProcess[] = [];
    t.after(() => {
      for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    });
    const fill = (cmd: string, ca: string, extra: Record<string, string> = {}) => {
      let c = cmd.replaceAll('localhost:20000', `localhost:${tlsPort}`).replace(/ 20000$/, ` ${tlsPort}`).replaceAll('certs/vspc.crt', ca);
      for (const [from, to] of Object.entries(extra)) c = c.replaceAll(from, to);
      assert.doesNotMatch(c, /20000|certs\//, `every placeholder replaced in: ${c}`);
      return c;
    };

    // --- openssl s_client: exit code 0 and "Verify return code: 0 (ok)" only for the right CA and name.
    const sclient = commandLine(certsReadme, 'openssl s_client ');
    assert.equal(commandLine(readme, 'openssl s_client ').replace('20001', '20000'), sclient, 'README.md shows the same command');
    if (have('openssl')) {
      const run = (ca: string) => {
        const p = spawn('sh', ['-c', fill(sclient, ca)], { stdio: ['ignore', 'pipe', 'pipe'] });
        procs.push(p);
        return finished(p, 'openssl s_client');
      };
      const good = await run(server.certPath);
      assert.equal(good.code, 0, good.out);
      assert.match(good.out, /Verify return code: 0 \(ok\)/);
      const bad = await run(other.certPath);
      assert.notEqual(bad.code, 0, bad.out);
      assert.match(bad.out, /Verify return code: 18 \(self-signed certificate\)/);
    }

    // --- socat tunnel + telnet: VM output arrives with the right CA; with another the tunnel refuses.
    const socatLine = commandLine(certsReadme, 'socat TCP-LISTEN:');
    assert.equal(commandLine(readme, 'socat TCP-LISTEN:').replace('20001', '20000'), socatLine, 'README.md shows the same command');
    assert.match(socatLine, / &$/);
    if (have('socat')) {
      const tunnel = async (ca: string) => {
        const port = await reservePort();
        const [cmd, ...args] = fill(socatLine.replace(/ &$/, ''), ca, { 'TCP-LISTEN:2323': `TCP-LISTEN:${port}` }).split(/\s+/);
        const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
        procs.push(p);
        const done = finished(p, 'socat');
        const user = await connectWhenListening(port);
        cleanup.add(() => user.destroy());
        return { user, done };
      };
      const good = await tunnel(server.certPath);
      await good.user.waitFor('[vspc: tls-doc', 10_000);
      vm.send('through the verified tunnel');
      await good.user.waitFor('through the verified tunnel', 5000);
      good.user.destroy();
      assert.equal((await good.done).code, 0);

      const bad = await tunnel(other.certPath);
      await bad.user.whenClosed(10_000);
      assert.equal(bad.user.received.length, 0, 'nothing from vspc crossed the refused tunnel');
      const r = await bad.done;
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, /certificate verify failed/);
    }

    // --- telnet-ssl with the flags that make it verify.
    const telnetSsl = commandLine(certsReadme, 'telnet-ssl ');
    if (have('telnet-ssl')) {
      const run = (ca: string) => {
        const [cmd, ...args] = fill(telnetSsl, ca).split(/\s+/);
        // stdin stays open: telnet-ssl runs until it is killed or the connection fails.
        const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
        procs.push(p);
        return p;
      };
      const good = run(server.certPath);
      let out = '';
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          const on = (d: Buffer) => {
            out += d.toString('latin1');
            if (out.includes('[vspc: tls-doc')) resolve();
          };
          good.stdout!.on('data', on);
          good.stderr!.on('data', on);
          good.on('close', () => reject(new Error(`telnet-ssl exited: ${out}`)));
        }),
        15_000,
        'telnet-ssl to show the console',
      );
      good.kill('SIGKILL');
      const bad = await finished(run(other.certPath), 'telnet-ssl with another CA');
      assert.notEqual(bad.code, 0);
      assert.match(bad.out, /SSL: Rejecting connection/);
      assert.doesNotMatch(bad.out, /\[vspc: /);
    }
  });
});
