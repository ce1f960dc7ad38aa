/**
 * Shell completion (issue 12 item 12): `vspc-admin completion bash` is sourced in a
 * real bash, and its function fills COMPREPLY as bash's programmable completion would
 * call it: commands, options, option values, and console names asked of a running
 * admin API (nothing, quickly and silently, when it cannot be reached).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from '../../src/domain/registry.js';
import { VmotionCoordinator } from '../../src/domain/vmotion.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { AdminServer } from '../../src/admin/admin-server.js';
import { adminRoutes } from '../../src/admin/routes.js';
import { VERSION } from '../../src/version.js';
import { consoleCandidates } from '../../src/cli/completion.js';
import type { PortView } from '../../src/admin/views.js';
import { LogCapture } from '../support/log-capture.js';
import { runNode, VSPC_ADMIN_JS } from '../support/cli.js';
import { tempDir } from '../support/server.js';
import { reservePort } from '../support/ports.js';

function bash(script: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['--norc', '--noprofile', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('vspc-admin completion', { timeout: 120_000 }, () => {
  const dir = tempDir('vspc-completion-');
  const db = openDatabase(':memory:');
  const registry = new Registry(new ConsoleStore(db, { start: 40000, end: 40100 }));
  const logs = new LogCapture({ level: 'warn' });
  const api = new AdminServer(
    adminRoutes({
      registry,
      vmotion: new VmotionCoordinator({ timeoutMs: 60_000 }, logs.logger),
      logger: logs.logger,
      tlsPortOf: () => null,
      status: () => ({ version: VERSION, uptimeSeconds: 0, vmPorts: registry.size, vmPortsConnected: 0, clients: 0, vmConnections: 0, vmConnectionsRefused: 0, vmotions: {} }),
    }),
    logs.logger,
  );
  const shim = join(dir.dir, 'vspc-admin');
  const scriptPath = join(dir.dir, 'vspc-admin.bash');
  let admin = '';

  /** COMPREPLY for a command line typed up to the cursor (at its end), one entry a line. */
  async function complete(...lines: string[]): Promise<string[][]> {
    const calls = lines
      .map((l) => `COMP_LINE=${JSON.stringify(l)}; COMP_POINT=\${#COMP_LINE}; COMP_WORDS=(${JSON.stringify(shim)}); COMPREPLY=(); _vspc_admin; printf '%s\\n' "\${COMPREPLY[@]}"; echo '<end>'`)
      .join('\n');
    const r = await bash(`source ${JSON.stringify(scriptPath)}\n${calls}`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '', 'completion never prints to the terminal');
    return r.stdout
      .split('<end>\n')
      .slice(0, lines.length)
      .map((block) => block.split('\n').filter(Boolean).sort());
  }

  before(async () => {
    registry.register('esxi', '421a5b7709c38e219f00aa105c2e7d01', '', 'cmp-web01');
    registry.register('esxi', '421a5b7709c38e219f00aa105c2e7d01', 'com2', 'cmp-web01');
    registry.register('esxi', 'f'.repeat(32), '', 'cmp-db01');
    const addr = await api.listen({ host: '127.0.0.1', port: 0 });
    admin = `127.0.0.1:${addr.port}`;
    writeFileSync(shim, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(VSPC_ADMIN_JS)} "$@"\n`);
    chmodSync(shim, 0o755);
    const r = await runNode(VSPC_ADMIN_JS, ['completion', 'bash']);
    assert.equal(r.code, 0, r.stderr);
    writeFileSync(scriptPath, r.stdout);
  });
  after(async () => {
    await api.close();
    closeDatabase(db);
    dir.remove();
  });

  test('bash: console names from the admin API for a known prefix, NAME: and NAME:LABEL, any case, across the ":" word break', async () => {
    const [web, label, upper, port, db01] = await complete(
      `${shim} --admin ${admin} show cmp-w`,
      `${shim} --admin ${admin} connect --mode readonly cmp-web01:c`,
      `${shim} --admin ${admin} kick CMP-D`,
      `${shim} --admin ${admin} set-port 4000`,
      `${shim} --admin=${admin} log cmp-db`,
    );
    assert.deepEqual(web, ['cmp-web01:', 'cmp-web01:com2']);
    // bash replaces only what follows the last ':', so the reply is the rest of the word.
    assert.deepEqual(label, ['com2']);
    assert.deepEqual(upper, ['cmp-db01']);
    assert.deepEqual(port, ['40000', '40001', '40002']);
    assert.deepEqual(db01, ['cmp-db01']);
  });

  test('bash: commands, options and option values come from the program itself', async () => {
    const [cmds, opts, states, modes, shells, second] = await complete(
      `${shim} s`,
      `${shim} --admin ${admin} list --`,
      `${shim} list --state con`,
      `${shim} connect --mode read`,
      `${shim} completion `,
      `${shim} --admin ${admin} set-port cmp-db01 `,
    );
    assert.deepEqual(cmds, ['set-port', 'show', 'status']);
    assert.deepEqual(opts, ['--help', '--json', '--state']);
    assert.deepEqual(states, ['connected', 'connecting']);
    assert.deepEqual(modes, ['readonly', 'readonly_ok', 'readwrite']);
    assert.deepEqual(shells, ['bash', 'zsh']);
    assert.deepEqual(second, [], 'the port argument is not a console');
  });

  test('bash: an admin API that cannot be reached offers nothing, says nothing, and does not hang', async () => {
    const closed = await reservePort();
    const started = Date.now();
    const [none] = await complete(`${shim} --admin 127.0.0.1:${closed} show cmp`);
    assert.deepEqual(none, []);
    assert.ok(Date.now() - started < 15_000);
  });

  test('zsh (when installed): the script parses, and its function offers console names and option values (compadd stubbed)', async (t) => {
    const zshScript = join(dir.dir, '_vspc-admin');
    const r = await runNode(VSPC_ADMIN_JS, ['completion', 'zsh']);
    writeFileSync(zshScript, r.stdout);
    const probe = [
      `source ${JSON.stringify(zshScript)}`,
      "compadd() { print -r -- \"compadd $*\" }",
      `words=(${JSON.stringify(shim)} --admin ${admin} show cmp-w); CURRENT=5; _vspc_admin`,
      `words=(${JSON.stringify(shim)} list --state con); CURRENT=4; _vspc_admin`,
    ].join('\n');
    const z = await new Promise<{ code: number | null; stdout: string; stderr: string } | null>((resolve) => {
      const child = spawn('zsh', ['-f', '-c', probe], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      child.on('error', () => resolve(null));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    assert.ok(z !== null, 'zsh is not installed (test/support/guest/ensure-deps.sh installs it as root)');
    assert.equal(z.code, 0, z.stderr);
    assert.equal(z.stderr, '');
    assert.deepEqual(z.stdout.split('\n').filter(Boolean), [
      'compadd -U -- cmp-web01: cmp-web01:com2',
      'compadd -- connected disconnected migrating connecting listening waiting stopped elsewhere',
    ]);
  });

  test('completion: zsh prints a script too; another shell is a usage error naming the argument', async () => {
    const zsh = await runNode(VSPC_ADMIN_JS, ['completion', 'zsh']);
    assert.equal(zsh.code, 0, zsh.stderr);
    assert.match(zsh.stdout, /^#compdef vspc-admin\n/);
    assert.match(zsh.stdout, /__consoles/);
    const fish = await runNode(VSPC_ADMIN_JS, ['completion', 'fish']);
    assert.equal(fish.code, 2);
    assert.match(fish.stderr, /'fish' is invalid for argument 'shell'\. use bash or zsh/);
  });

  test('consoleCandidates: addresses by prefix in any case, ports for digits', () => {
    const views = registry.all().map((h) => ({ address: h.displayName === 'cmp-web01' ? 'cmp-web01:' : h.displayName, name: h.identity.name, key: h.identity.key, label: h.identity.label, port: h.identity.tcpPort }) as PortView);
    assert.deepEqual(consoleCandidates(views, 'CMP-'), ['cmp-db01', 'cmp-web01:', 'cmp-web01:com2']);
    assert.deepEqual(consoleCandidates(views, '4000'), ['40000', '40001', '40002']);
    assert.deepEqual(consoleCandidates(views, 'zzz'), []);
  });
});
