/**
 * The error catalogue (issue 10 item 6): every code in src/ is in ERROR_CODES, every
 * code in ERROR_CODES is documented in docs/errors.md with its class, and the admin
 * API's 500 never echoes an internal code.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import { join, resolve } from 'node:path';
import { ERROR_CODES } from '../../src/errors.js';
import { AdminServer } from '../../src/admin/admin-server.js';
import { LogCapture } from '../support/log-capture.js';

const root = resolve(new URL('../../..', import.meta.url).pathname);

/** Environment variables and other names that look like codes but are not errors. */
const NOT_CODES = new Set(['VSPC_ADMIN_TOKEN', 'VSPC_BROKER_SOCKET', 'VSPC_ADMIN']);

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
}

test('every error code written in src/ is in the catalogue', () => {
  const unknown: string[] = [];
  for (const file of walk(join(root, 'src'))) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/['"`]((?:VSPC|TELNET|TLS)_[A-Z0-9_]+)['"`]/g)) {
      if (!NOT_CODES.has(m[1]) && !(m[1] in ERROR_CODES)) unknown.push(`${file.slice(root.length + 1)}: ${m[1]}`);
    }
    // A code built at run time cannot be catalogued: name every code literally.
    if (/`(?:VSPC|TELNET)_[A-Z0-9_]*\$\{/.test(text)) unknown.push(`${file.slice(root.length + 1)}: a code built from a template`);
  }
  assert.deepEqual(unknown, []);
});

test('docs/errors.md lists exactly the catalogue, each code with its class', () => {
  const doc = readFileSync(join(root, 'docs/errors.md'), 'utf8');
  const rows = new Map<string, string>();
  for (const m of doc.matchAll(/^\| `([A-Z0-9_]+)` \| (\w+) \|/gm)) rows.set(m[1], m[2]);
  assert.deepEqual([...rows.keys()].sort(), Object.keys(ERROR_CODES).sort());
  for (const [code, [cls]] of Object.entries(ERROR_CODES)) assert.equal(rows.get(code), cls, code);
});

test('a 500 from the admin API says VSPC_INTERNAL, never the internal code or message; the log has them', async () => {
  const logs = new LogCapture({ level: 'debug' });
  const api = new AdminServer(
    [
      {
        method: 'GET',
        path: '/boom',
        handle: () => {
          throw Object.assign(new Error('SQLITE_IOERR: disk I/O error at /var/lib/vspc/vspc.db'), { code: 'SQLITE_IOERR' });
        },
      },
    ],
    logs.logger,
  );
  const addr = await api.listen({ host: '127.0.0.1', port: 0 });
  try {
    const body = await new Promise<{ status: number; text: string }>((resolveReply, reject) => {
      http
        .get({ host: '127.0.0.1', port: addr.port, path: '/boom', agent: false }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolveReply({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
        })
        .on('error', reject);
    });
    assert.equal(body.status, 500);
    assert.equal((JSON.parse(body.text) as { error: { code: string } }).error.code, 'VSPC_INTERNAL');
    assert.ok(!/SQLITE|vspc\.db|disk/.test(body.text), body.text);
    const line = logs.find((l) => l.message === 'admin API call failed');
    assert.equal(line?.errorCode, 'SQLITE_IOERR');
  } finally {
    await api.close();
  }
});
