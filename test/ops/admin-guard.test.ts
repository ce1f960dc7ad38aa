/**
 * Issue 11 #2: a web page must not be able to drive the admin API (DNS rebinding,
 * cross-origin simple requests). Raw HTTP requests with the headers a browser sends.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { TestServer } from '../support/server.js';
import { vspcAdmin } from '../support/cli.js';

interface Reply {
  status: number;
  body: string;
}

function call(port: number, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const UUID = '42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01';

describe('admin API refuses browser-borne requests', () => {
  let s: TestServer;
  before(async () => {
    s = await TestServer.start({ ports: 2, config: { logDir: null } });
    const { vm } = await s.connectVm({ uuid: UUID, name: 'web01' });
    vm.send('password: hunter2\r\n');
  });
  after(async () => {
    await s?.dispose();
  });

  const own = () => `127.0.0.1:${s.adminPort}`;
  const code = (r: Reply) => (JSON.parse(r.body) as { error?: { code: string } }).error?.code;

  test('DNS rebinding: a foreign Host is refused (421) before any route runs', async () => {
    for (const path of ['/api/v1/ports', '/api/v1/show?vm=web01', '/metrics']) {
      const r = await call(s.adminPort, 'GET', path, { host: `attacker.example:${s.adminPort}` });
      assert.equal(r.status, 421, path);
      assert.equal(code(r), 'VSPC_ADMIN_BAD_HOST');
      assert.ok(!r.body.includes('web01'), 'nothing about the consoles leaks');
    }
    // IP literals, localhost and the bracketed IPv6 loopback are this machine.
    for (const host of [own(), `localhost:${s.adminPort}`, `[::1]:${s.adminPort}`]) {
      assert.equal((await call(s.adminPort, 'GET', '/api/v1/ports', { host })).status, 200, host);
    }
  });

  test('cross-origin: a foreign Origin or Sec-Fetch-Site is refused, a mutation never runs', async () => {
    const forget = '/api/v1/forget?vm=web01';
    const simple = await call(s.adminPort, 'POST', forget, { host: own(), origin: 'http://attacker.example', 'content-type': 'text/plain' }, 'x');
    assert.equal(simple.status, 403);
    assert.equal(code(simple), 'VSPC_ADMIN_CROSS_ORIGIN');
    const json = await call(s.adminPort, 'POST', forget, { host: own(), origin: 'http://attacker.example', 'content-type': 'application/json' }, '{}');
    assert.equal(json.status, 403);
    const nullOrigin = await call(s.adminPort, 'POST', forget, { host: own(), origin: 'null', 'content-type': 'application/json' }, '{}');
    assert.equal(nullOrigin.status, 403);
    const site = await call(s.adminPort, 'GET', '/api/v1/ports', { host: own(), 'sec-fetch-site': 'cross-site' });
    assert.equal(site.status, 403);
    const preflight = await call(s.adminPort, 'OPTIONS', forget, { host: own(), origin: `http://${own()}` });
    assert.equal(preflight.status, 403);
    assert.equal(code(preflight), 'VSPC_ADMIN_PREFLIGHT');
    assert.ok(s.hub(UUID), 'the record survived every attempt');
    // The API's own origin is fine (a page served by the API itself, were there one).
    const same = await call(s.adminPort, 'GET', '/api/v1/ports', { host: own(), origin: `http://${own()}`, 'sec-fetch-site': 'same-origin' });
    assert.equal(same.status, 200);
  });

  test('a mutation as a simple request (no JSON content type) is refused with 415 and changes nothing', async () => {
    for (const type of [undefined, 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const headers: Record<string, string> = { host: own() };
      if (type) headers['content-type'] = type;
      const r = await call(s.adminPort, 'POST', '/api/v1/kick?vm=web01', headers, 'x');
      assert.equal(r.status, 415, String(type));
      assert.equal(code(r), 'VSPC_ADMIN_CONTENT_TYPE');
    }
    assert.ok(s.hub(UUID));
  });

  test('every refusal is logged as a security event and counted by reason in /metrics', async () => {
    const res = await fetch(`http://${own()}/metrics`, { signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    const count = (reason: string) => Number(new RegExp(`^vspc_admin_refused_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
    assert.equal(count('host'), 3);
    assert.ok(count('origin') >= 4, text);
    assert.equal(count('preflight'), 1);
    assert.equal(count('content-type'), 4);
    const lines = s.logs.filter((l) => l.message.startsWith('admin API request refused: looks browser-borne'));
    assert.ok(lines.length >= 12);
    assert.ok(lines.every((l) => l.security === true));
  });

  test('request targets that are not valid paths are a 400 for that request, never a crash', async () => {
    for (const path of ['//x:abc', '//[', '//%', '//x:99999/api/v1/ports']) {
      const r = await call(s.adminPort, 'GET', path, { host: own() });
      assert.equal(r.status, 400, path);
    }
    assert.equal((await call(s.adminPort, 'GET', '/api/v1/status', { host: own() })).status, 200, 'still serving');
  });

  test('vspc-admin itself still changes things (it sends JSON)', async () => {
    const r = await vspcAdmin(own(), ['kick', 'web01']);
    assert.equal(r.code, 0, r.stderr);
  });
});
