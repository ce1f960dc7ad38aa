/** Glob discovery: operator patterns over real sockets and (symlinked) character devices. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GlobDiscovery } from '../../src/sources/discovery/glob.js';
import { Sockets, recordingLogger, summary, tempTree } from './discovery-support.js';

test('glob: sockets matching *.sock, named by a template; plain files, hidden and other names ignored', async (t) => {
  const { root, cleanup } = tempTree();
  const sockets = new Sockets();
  t.after(async () => {
    await sockets.closeAll();
    cleanup();
  });
  const dir = join(root, 'myvms');
  mkdirSync(dir);
  await sockets.listen(join(dir, 'vm1.sock'));
  await sockets.listen(join(dir, 'vm2.sock'));
  await sockets.listen(join(dir, '.hidden.sock'));
  await sockets.listen(join(dir, 'vm3.socket'));
  writeFileSync(join(dir, 'vm4.sock'), 'a plain file');
  const { logger } = recordingLogger();
  const d = new GlobDiscovery({ logger, pattern: `${dir}/*.sock`, spec: 'unix:{path}', name: 'vm {stem}' });
  assert.deepEqual(summary(await d.scan()), [`glob:${dir}/vm1.sock: vm vm1 unix:${dir}/vm1.sock`, `glob:${dir}/vm2.sock: vm vm2 unix:${dir}/vm2.sock`]);
  assert.deepEqual([...d.watchDirs()], [dir]);
  await sockets.close(join(dir, 'vm1.sock'));
  assert.deepEqual(
    (await d.scan()).map((c) => [c.key, c.label, c.origin]),
    [[`${dir}/vm2.sock`, '', `${dir}/vm2.sock`]],
  );
});

test('glob: by-id style symlinks to character devices, device settings from the spec, dangling links ignored', async (t) => {
  const { root, cleanup } = tempTree();
  t.after(cleanup);
  const byId = join(root, 'serial', 'by-id');
  mkdirSync(byId, { recursive: true });
  symlinkSync('/dev/null', join(byId, 'usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0'));
  symlinkSync('/dev/zero', join(byId, 'usb-Prolific_PL2303-if00-port0'));
  symlinkSync(join(root, 'gone'), join(byId, 'usb-unplugged-if00-port0'));
  writeFileSync(join(byId, 'usb-not-a-device'), '');
  const { logger } = recordingLogger();
  const d = new GlobDiscovery({ logger, pattern: `${byId}/usb-*`, spec: 'device:{path}?baud=9600&parity=even' });
  const found = await d.scan();
  assert.deepEqual(
    found.map((c) => [c.key, c.name]),
    [
      [`${byId}/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0`, 'usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0'],
      [`${byId}/usb-Prolific_PL2303-if00-port0`, 'usb-Prolific_PL2303-if00-port0'],
    ],
  );
  assert.deepEqual(found[0].spec, { type: 'device', path: `${byId}/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0`, line: { baudRate: 9600, dataSize: 8, parity: 'even', stopBits: '1', flow: 'none' } });
  // A literal last segment: that one path (a char device), nothing when absent.
  assert.equal((await new GlobDiscovery({ logger, pattern: '/dev/null', spec: 'device:{path}' }).scan()).length, 1);
  assert.equal((await new GlobDiscovery({ logger, pattern: join(root, 'absent', '*'), spec: 'device:{path}' }).scan()).length, 0);
});

test('glob: a wildcard directory level, {dir} naming, and the match bound', async (t) => {
  const { root, cleanup } = tempTree();
  const sockets = new Sockets();
  t.after(async () => {
    await sockets.closeAll();
    cleanup();
  });
  for (const vm of ['alpha', 'beta']) {
    mkdirSync(join(root, 'vms', vm), { recursive: true });
    await sockets.listen(join(root, 'vms', vm, 'console.sock'));
  }
  mkdirSync(join(root, 'vms', 'empty'));
  writeFileSync(join(root, 'vms', 'file'), '');
  const { logger, lines } = recordingLogger();
  const d = new GlobDiscovery({ logger, pattern: `${root}/vms/*/console.sock`, spec: 'unix:{path}', name: '{dir}' });
  assert.deepEqual(
    (await d.scan()).map((c) => c.name),
    ['alpha', 'beta'],
  );
  assert.deepEqual([...d.watchDirs()], [join(root, 'vms'), join(root, 'vms', 'alpha'), join(root, 'vms', 'beta'), join(root, 'vms', 'empty')]);
  const bounded = new GlobDiscovery({ logger, pattern: `${root}/vms/*/console.sock`, spec: 'unix:{path}', maxMatches: 1 });
  assert.equal((await bounded.scan()).length, 1);
  assert.ok(lines.some((l) => l.level === 'warn' && l.message.includes('more than 1 paths')));
});

test('glob: configuration errors name the field', () => {
  const { logger } = recordingLogger();
  const bad: Array<[Partial<{ pattern: string; spec: string; name: string }>, RegExp]> = [
    [{ pattern: 'relative/*' }, /discovery\.globs\[1\]\.pattern: .* is not an absolute path pattern/],
    [{ pattern: '/dev/**' }, /"\*\*" is not supported/],
    [{ pattern: '/dev/../etc/*' }, /"\.\." is not allowed/],
    [{ pattern: '/' }, /matches no file/],
    [{ spec: 'unix:/run/fixed.sock' }, /spec: .* must contain \{path\}/],
    [{ spec: 'tcp:{path}' }, /spec: /],
    [{ spec: 'device:{path}?baud=fast' }, /spec: baud "fast"/],
    [{ spec: 'unix-listen:{path}' }, /unix:\{path\} or device:\{path\}, not unix-listen/],
    [{ name: '{vmid}' }, /name: unknown placeholder \{vmid\}/],
  ];
  for (const [override, message] of bad) {
    assert.throws(() => new GlobDiscovery({ logger, pattern: '/dev/ttyUSB*', spec: 'device:{path}', field: 'discovery.globs[1]', ...override }), { code: 'VSPC_CONFIG_INVALID', message }, JSON.stringify(override));
  }
});

test('glob: a symbolic link where a socket is expected is not followed (it could point at a QEMU monitor or docker.sock)', async (t) => {
  const { root, cleanup } = tempTree();
  const sockets = new Sockets();
  t.after(async () => {
    await sockets.closeAll();
    cleanup();
  });
  const priv = join(root, 'priv');
  const dir = join(root, 'watched');
  mkdirSync(priv, { mode: 0o700 });
  mkdirSync(dir);
  await sockets.listen(join(priv, 'qmp.sock'));
  await sockets.listen(join(dir, 'real.sock'));
  symlinkSync(join(priv, 'qmp.sock'), join(dir, 'innocent.sock'));
  const { logger, lines } = recordingLogger();
  const d = new GlobDiscovery({ logger, pattern: `${dir}/*.sock`, spec: 'unix:{path}', name: '{stem}' });
  assert.deepEqual(summary(await d.scan()), [`glob:${dir}/real.sock: real unix:${dir}/real.sock`]);
  const warned = lines.filter((l) => String(l.message).includes('a symbolic link where a socket is expected'));
  assert.equal(warned.length, 1);
});
