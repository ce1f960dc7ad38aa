/**
 * Admin API access: open on loopback without a token; with a token every call needs
 * `Authorization: Bearer`, and refusals are clear (401, stable code, a hint for
 * vspc-admin); HTTPS with --admin-cert/--admin-key; a non-loopback listener without a
 * token does not start.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { Child, runNode, vspcAdmin, VSPC_ADMIN_JS, VSPC_JS, type CliResult } from '../support/cli.js';
import { reservePortRange } from '../support/ports.js';
import { Cleanup, TestServer, makeCert, tempDir } from '../support/server.js';

const TOKEN = 'b5c0f6a1d2e34f56a7b8c9d0e1f2a3b4';

/** Runs `fn` (which must spawn synchronously) with extra environment variables. */
function withEnv<T>(env: Record<string, string | undefined>, fn: () => T): T {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(env)) {
    saved[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

function admin(address: string, args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return withEnv({ VSPC_ADMIN_TOKEN: undefined, ...env }, () => vspcAdmin(address, args));
}

describe('admin API with a token', () => {
  let s: TestServer;
  const dir = tempDir('vspc-auth-');
  const tokenFile = join(dir.dir, 'token');
  before(async () => {
    writeFileSync(tokenFile, `${TOKEN}\n`);
    chmodSync(tokenFile, 0o600);
    s = await TestServer.start({ ports: 2, config: { adminToken: TOKEN } });
  });
  after(async () => {
    await s?.dispose();
    dir.remove();
  });

  const call = (path: string, headers: Record<string, string> = {}) =>
    fetch(`http://127.0.0.1:${s.adminPort}${path}`, { headers, signal: AbortSignal.timeout(5000) });

  test('no token: 401 VSPC_AUTH_REQUIRED with WWW-Authenticate, on every path', async () => {
    for (const path of ['/api/v1/status', '/api/v1/ports', '/metrics', '/no/such/path']) {
      const res = await call(path);
      assert.equal(res.status, 401, path);
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="vspc"');
      const body = (await res.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'VSPC_AUTH_REQUIRED');
      assert.match(body.error.message, /requires a token: send "Authorization: Bearer <token>"/);
    }
  });

  test('a wrong token: 401 VSPC_AUTH_FAILED; the right one: 200', async () => {
    for (const h of [`Bearer ${TOKEN}x`, 'Bearer short', `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}`]) {
      const res = await call('/api/v1/status', { authorization: h });
      assert.equal(res.status, 401, h);
      const body = (await res.json()) as { error: { code: string } };
      assert.equal(body.error.code, h.startsWith('Basic') ? 'VSPC_AUTH_REQUIRED' : 'VSPC_AUTH_FAILED');
    }
    const ok = await call('/api/v1/status', { authorization: `Bearer ${TOKEN}` });
    assert.equal(ok.status, 200);
    const metrics = await call('/metrics', { authorization: `bearer ${TOKEN}` });
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /^vspc_admin_unauthorized_total ([7-9]|\d\d+)$/m);
  });

  test('refusals are logged without the token', () => {
    const refused = s.logs.filter((l) => l.message === 'admin API request refused: no valid token');
    assert.ok(refused.length >= 7);
    assert.ok(refused.every((l) => typeof l.peer === 'string' && typeof l.path === 'string'));
    assert.ok(!JSON.stringify(s.logs.lines).includes(TOKEN), 'the token never appears in the logs');
  });

  test('vspc-admin: a clear error without a token or with a wrong one; --token-file, VSPC_ADMIN_TOKEN and --token work', async () => {
    const none = await admin(s.adminAddress, ['status']);
    assert.equal(none.code, 1);
    assert.equal(none.stderr, 'vspc-admin: the admin API requires a token: give --token-file FILE, or set VSPC_ADMIN_TOKEN\n');
    const wrong = await admin(s.adminAddress, ['--token', 'not-the-token-at-all', 'status']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /^vspc-admin: the admin API did not accept the token/);
    for (const [args, env] of [
      [['--token-file', tokenFile, 'status'], {}],
      [['status'], { VSPC_ADMIN_TOKEN: TOKEN }],
      [['--token', TOKEN, 'status'], { VSPC_ADMIN_TOKEN: 'wrong-wrong-wrong-wrong' }],
      [['--token-file', tokenFile, 'status'], { VSPC_ADMIN_TOKEN: 'wrong-wrong-wrong-wrong' }],
    ] as Array<[string[], Record<string, string>]>) {
      const r = await admin(s.adminAddress, args, env);
      assert.equal(r.code, 0, `${args.join(' ')} ${JSON.stringify(env)}: ${r.stderr}`);
      assert.match(r.stdout, /^vmPorts: 0$/m);
    }
    const missing = await admin(s.adminAddress, ['--token-file', join(dir.dir, 'nope'), 'status']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^vspc-admin: --token-file: cannot read .*nope: ENOENT\n$/);
  });
});

describe('admin API over HTTPS', () => {
  let s: TestServer;
  let plain: TestServer;
  const dir = tempDir('vspc-auth-tls-');
  let certPath = '';
  before(async () => {
    const cert = makeCert(dir.dir);
    certPath = cert.certPath;
    s = await TestServer.start({ ports: 2, config: { adminToken: TOKEN, adminTls: { cert: cert.cert, key: cert.key } } });
    plain = await TestServer.start({ ports: 2 });
  });
  after(async () => {
    await s?.dispose();
    await plain?.dispose();
    dir.remove();
  });

  test('vspc-admin with --admin-ca (or an https:// address) and the token', async () => {
    const r = await admin(s.adminAddress, ['--admin-ca', certPath, 'status'], { VSPC_ADMIN_TOKEN: TOKEN });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^vmPorts: 0$/m);
    const url = await runNode(VSPC_ADMIN_JS, ['--admin', `https://${s.adminAddress}`, '--admin-ca', certPath, '--token', TOKEN, 'list', '--json']);
    assert.equal(url.code, 0, url.stderr);
    assert.equal(url.stdout, '[]\n');
    const res = await fetch(`http://127.0.0.1:${s.adminPort}/api/v1/status`).catch((err: Error) => err);
    assert.ok(res instanceof Error, 'plain HTTP is not answered');
  });

  test('clear errors: untrusted certificate, HTTP to HTTPS, HTTPS to HTTP', async () => {
    const untrusted = await admin(s.adminAddress, ['--admin-tls', 'status'], { VSPC_ADMIN_TOKEN: TOKEN });
    assert.equal(untrusted.code, 1);
    assert.match(untrusted.stderr, /^vspc-admin: cannot reach the vspc admin API at https:\/\/127\.0\.0\.1:\d+ \(\w+\); its certificate is not trusted .*give --admin-ca FILE\n$/);
    const httpToHttps = await admin(s.adminAddress, ['status'], { VSPC_ADMIN_TOKEN: TOKEN });
    assert.equal(httpToHttps.code, 1);
    assert.match(httpToHttps.stderr, /give --admin-tls \(or --admin https:\/\/HOST:PORT\)/);
    const httpsToHttp = await admin(plain.adminAddress, ['--admin-ca', certPath, 'status']);
    assert.equal(httpsToHttp.code, 1);
    assert.match(httpsToHttp.stderr, /the admin API does not speak HTTPS here; drop --admin-tls/);
  });
});

describe('a non-loopback admin listener', () => {
  const c = new Cleanup();
  after(() => c.run());

  test('without a token vspc does not start; with VSPC_ADMIN_TOKEN it does, and warns about clear text', async () => {
    const dir = tempDir();
    c.add(dir.remove);
    const ports = await reservePortRange(4);
    const args = [
      '--proxy-listen', `127.0.0.1:${ports.start}`,
      '--admin-listen', `0.0.0.0:${ports.start + 1}`,
      '--port-range', `${ports.start + 2}-${ports.end}`,
      '--db', join(dir.dir, 'vspc.db'),
    ];
    const refused = await withEnv({ VSPC_ADMIN_TOKEN: undefined }, () => runNode(VSPC_JS, args));
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /^vspc: --admin-listen: 0\.0\.0\.0 is not a loopback address, so the admin API needs a token: give --admin-token-file FILE, set VSPC_ADMIN_TOKEN, or use --admin-token\n$/);

    const child = withEnv({ VSPC_ADMIN_TOKEN: TOKEN }, () => new Child(VSPC_JS, args));
    c.add(() => child.kill());
    await child.waitForStderr(/"message":"vspc started"/);
    assert.match(child.stderr, /"message":"admin API listens on a non-loopback address without TLS: its token crosses the network in clear text"/);
    const address = `127.0.0.1:${ports.start + 1}`;
    assert.equal((await admin(address, ['status'])).code, 1);
    const ok = await admin(address, ['status'], { VSPC_ADMIN_TOKEN: TOKEN });
    assert.equal(ok.code, 0, ok.stderr);
    child.proc.kill('SIGTERM');
    assert.deepEqual(await child.waitExit(10_000), { code: 0, signal: null });
    assert.ok(!child.stderr.includes(TOKEN), 'the token never appears in the logs');
  });
});
