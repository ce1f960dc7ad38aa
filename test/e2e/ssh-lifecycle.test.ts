/**
 * The SSH front door over time: the host key stays the same across a restart (ssh with
 * strict host key checking connects again), a reload ends the sessions whose rights
 * were withdrawn (key removed, consoles narrowed, mode no longer allowed) and leaves
 * the others alone, a broken authorized-keys file fails the reload and changes nothing,
 * the keys command lets keys in, denies them and fails without harm, and a shutdown
 * tells every session.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClientView, StatusView } from '../../src/admin/views.js';
import { esxiUuid, tempDir, waitUntil } from '../support/server.js';
import { haveOpenSsh, keyLine, makeKey, runSsh, SshProcess, sshArgs, startSshServer, type SshServer } from '../support/ssh.js';

// A missing prerequisite fails the suite with this message (npm test installs them as root).
const missing = haveOpenSsh() ? null : 'the OpenSSH client is not installed (test/support/guest/ensure-deps.sh)';

/** POST /api/v1/reload (with a stand-in for the config file re-read: only the SSH keys change here). */
async function reload(s: SshServer): Promise<{ status: number; body: Record<string, unknown> }> {
  s.ts.server.reloadConfig ??= () => ({ file: null, applied: [], restartNeeded: [] });
  const res = await fetch(`http://${s.ts.adminAddress}/api/v1/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('SSH front door over time', () => {
  before(() => assert.ok(missing === null, missing ?? ''));
  test('the host keys stay the same across a restart: strict host key checking passes', async (t) => {
    const d = tempDir('vspc-ssh-restart-');
    t.after(() => d.remove());
    const key = makeKey(d.dir, 'alice');
    const dbPath = join(d.dir, 'vspc.db');
    const first = await startSshServer(t, [keyLine(key)], { dir: d.dir, server: { dbPath } });
    const before = (await first.ts.api<StatusView>('/api/v1/status')).ssh!.hostKeys;
    assert.equal((await runSsh(sshArgs(first, key, ['console@127.0.0.1', 'list']), first.cleanup)).code, 0);
    await first.cleanup.run();
    await first.ts.close();

    const second = await startSshServer(t, [keyLine(key)], { dir: d.dir, server: { dbPath } });
    assert.deepEqual((await second.ts.api<StatusView>('/api/v1/status')).ssh!.hostKeys, before);
    const again = await runSsh(sshArgs(second, key, ['-o', 'StrictHostKeyChecking=yes', 'console@127.0.0.1', 'list']), second.cleanup);
    assert.equal(again.code, 0, again.stderr);
    assert.ok(second.ts.logs.find((l) => l.message === 'SSH host key' && l.type === 'ssh-ed25519'), 'read, not created');
  });

  test('a host key file others can read stops vspc from starting', async (t) => {
    const d = tempDir('vspc-ssh-mode-');
    t.after(() => d.remove());
    const key = makeKey(d.dir, 'alice');
    const first = await startSshServer(t, [keyLine(key)], { dir: d.dir });
    await first.ts.close();
    chmodSync(join(d.dir, 'hostkeys', 'ssh_host_ecdsa_key'), 0o640);
    await assert.rejects(startSshServer(t, [keyLine(key)], { dir: d.dir }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'VSPC_SSH_HOST_KEY_INSECURE');
      assert.match(err.message, /ssh_host_ecdsa_key is accessible by group or others \(mode 0640\)/);
      return true;
    });
  });

  test('reload: withdrawn rights end those sessions with a message; the others go on; new logins follow the file', async (t) => {
    const d = tempDir('vspc-ssh-reload-');
    t.after(() => d.remove());
    const gone = makeKey(d.dir, 'gone');
    const narrowed = makeKey(d.dir, 'narrowed');
    const demoted = makeKey(d.dir, 'demoted');
    const kept = makeKey(d.dir, 'kept');
    const lines = (narrowedConsoles: string, demotedModes: string, withGone: boolean) => [
      ...(withGone ? [keyLine(gone, 'vspc-user="gone"')] : []),
      keyLine(narrowed, `vspc-user="narrowed",vspc-consoles="${narrowedConsoles}"`),
      keyLine(demoted, `vspc-user="demoted",vspc-modes="${demotedModes}"`),
      keyLine(kept, 'vspc-user="kept"'),
    ];
    const s = await startSshServer(t, lines('*', 'readwrite,readonly', true));
    const web01 = await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    const attach = async (key: typeof gone, user: string) => {
      const p = new SshProcess(sshArgs(s, key, ['console@127.0.0.1', 'web01']), s.cleanup);
      await p.waitFor(new RegExp(`READWRITE as ${user}`));
      return p;
    };
    const sGone = await attach(gone, 'gone');
    const sNarrowed = await attach(narrowed, 'narrowed');
    const sDemoted = await attach(demoted, 'demoted');
    const sKept = await attach(kept, 'kept');
    await waitUntil(() => web01.hub.clients.size === 4, 5000, 'four attached');

    s.writeKeys(lines('db*', 'readonly', false));
    const r = await reload(s);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body.applied, ['sshAuthorizedKeys']);

    const rGone = await sGone.exit();
    assert.equal(rGone.code, 4);
    assert.match(rGone.stderr, /\[vspc: your key no longer has access to vspc\]/);
    const rNarrowed = await sNarrowed.exit();
    assert.equal(rNarrowed.code, 4);
    assert.match(rNarrowed.stderr, /\[vspc: your rights to web01 were withdrawn\]/);
    const rDemoted = await sDemoted.exit();
    assert.equal(rDemoted.code, 4);
    assert.match(rDemoted.stderr, /\[vspc: your key may no longer hold READWRITE on web01\]/);
    await waitUntil(() => web01.hub.clients.size === 1, 5000, 'only kept is left');
    const left = await s.ts.api<ClientView[]>('/api/v1/clients');
    assert.deepEqual(left.map((x) => x.user), ['kept']);
    assert.equal(sKept.stdout.includes('withdrawn'), false);

    // New logins follow the new file: the removed key is refused, the narrowed one sees db* only.
    assert.equal((await runSsh(sshArgs(s, gone, ['console@127.0.0.1', 'list']), s.cleanup)).code, 255);
    const demotedAgain = await runSsh(sshArgs(s, demoted, ['console@127.0.0.1', 'web01']), s.cleanup);
    assert.match(demotedAgain.stderr, /READONLY as demoted/);
    const metrics = await fetch(`http://${s.ts.adminAddress}/metrics`).then((x) => x.text());
    assert.match(metrics, /^vspc_ssh_sessions_ended_total\{reason="withdrawn"\} 1$/m);
    sKept.endInput();
    assert.equal((await sKept.exit()).code, 0);
  });

  test('reload with a broken authorized-keys file is refused with the line, and changes nothing', async (t) => {
    const d = tempDir('vspc-ssh-badreload-');
    t.after(() => d.remove());
    const key = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(key, 'vspc-user="alice"')]);
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    const session = new SshProcess(sshArgs(s, key, ['console@127.0.0.1', 'web01']), s.cleanup);
    await session.waitFor(/READWRITE as alice/);
    s.writeKeys(['# fine', `vspc-consoels="web*" ${key.pub}`]);
    const r = await reload(s);
    assert.equal(r.status, 400);
    assert.match(JSON.stringify(r.body), /authorized_keys:2: unknown option \\"vspc-consoels\\"/);
    assert.match(JSON.stringify(r.body), /the running configuration is unchanged/);
    assert.equal((await runSsh(sshArgs(s, key, ['console@127.0.0.1', 'list']), s.cleanup)).code, 0, 'the old keys still apply');
    assert.equal(session.stderr.includes('withdrawn'), false);
    session.endInput();
    assert.equal((await session.exit()).code, 0);
  });

  test('an authorized-keys file others may write is refused at reload (as sshd StrictModes), naming the fix; fixed, it is read', async (t) => {
    const d = tempDir('vspc-ssh-strict-');
    t.after(() => d.remove());
    const key = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(key, 'vspc-user="alice"')]);
    s.writeKeys([keyLine(key, 'vspc-user="alice"'), keyLine(makeKey(d.dir, 'mallory'), 'vspc-user="mallory"')]);
    chmodSync(s.keysFile, 0o666);
    const r = await reload(s);
    assert.equal(r.status, 400);
    assert.match(JSON.stringify(r.body), /--ssh-authorized-keys: \S+authorized_keys is writable by everyone \(mode 0666\)/);
    assert.match(JSON.stringify(r.body), /chmod go-w/);
    assert.equal((await runSsh(sshArgs(s, key, ['console@127.0.0.1', 'list']), s.cleanup)).code, 0, 'the old keys still apply');
    chmodSync(s.keysFile, 0o644);
    const again = await reload(s);
    assert.equal(again.status, 200, JSON.stringify(again.body));
  });

  test('the keys command decides for keys the file does not list: allow with rights, deny, fail without harm', async (t) => {
    const d = tempDir('vspc-ssh-keyscmd-');
    t.after(() => d.remove());
    const filed = makeKey(d.dir, 'filed');
    const carol = makeKey(d.dir, 'carol');
    const dave = makeKey(d.dir, 'dave');
    const erin = makeKey(d.dir, 'erin');
    const script = join(d.dir, 'inventory.sh');
    // $1 = the fixed argument, then login name, key type, key, fingerprint.
    writeFileSync(
      script,
      `#!/bin/sh
case "$5" in
  ${carol.fingerprint}) echo '{"user": "carol", "consoles": ["web*"], "modes": ["readonly"]}' ;;
  ${dave.fingerprint}) echo '{"deny": "dave is not in the ops group"}' ;;
  ${erin.fingerprint}) sleep 10 ;;
  *) echo "unknown key $5" >&2; exit 1 ;;
esac
`,
    );
    chmodSync(script, 0o755);
    const s = await startSshServer(t, [keyLine(filed)], {
      config: { sshKeysCommand: `${script} prod`, sshLimits: { keysCommandTimeoutMs: 300 } as never },
    });
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'db01' }, s.cleanup);

    const list = await runSsh(sshArgs(s, carol, ['console@127.0.0.1', 'list']), s.cleanup);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^web01\s/m);
    assert.ok(!list.stdout.includes('db01'));
    const attach = await runSsh(sshArgs(s, carol, ['console@127.0.0.1', 'web01']), s.cleanup);
    assert.match(attach.stderr, /READONLY as carol/);

    const denied = await runSsh(sshArgs(s, dave, ['console@127.0.0.1', 'list']), s.cleanup);
    assert.equal(denied.code, 255);
    await s.ts.logs.waitFor((l) => l.message === 'SSH authentication failed' && /dave is not in the ops group/.test(String(l.reason)));

    const slow = await runSsh(sshArgs(s, erin, ['console@127.0.0.1', 'list']), s.cleanup);
    assert.equal(slow.code, 255);
    await s.ts.logs.waitFor((l) => l.errorCode === 'VSPC_SSH_KEYS_COMMAND_FAILED' && /no answer within 300 ms/.test(String(l.reason)));
    // The file's keys never ask the command, and vspc is unharmed.
    assert.equal((await runSsh(sshArgs(s, filed, ['console@127.0.0.1', 'list']), s.cleanup)).code, 0);
    const metrics = await fetch(`http://${s.ts.adminAddress}/metrics`).then((x) => x.text());
    assert.match(metrics, /^vspc_ssh_keys_command_total\{outcome="allowed"\} [1-9]/m);
    assert.match(metrics, /^vspc_ssh_keys_command_total\{outcome="denied"\} [1-9]/m);
    assert.match(metrics, /^vspc_ssh_keys_command_total\{outcome="failed"\} [1-9]/m);
  });

  test('shutdown tells every SSH session, at the menu or on a console', async (t) => {
    const d = tempDir('vspc-ssh-shutdown-');
    t.after(() => d.remove());
    const key = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(key, 'vspc-user="alice"')]);
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    const session = new SshProcess(sshArgs(s, key, ['console@127.0.0.1', 'web01']), s.cleanup);
    await session.waitFor(/READWRITE as alice/);
    await s.ts.close();
    const r = await session.exit();
    assert.equal(r.code, 4);
    assert.match(r.stderr, /vspc is shutting down/);
  });
});
