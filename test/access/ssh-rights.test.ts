/**
 * The SSH front door's pure parts: the authorized-keys format and its vspc options,
 * console and address patterns, lock-mode choice, the keys command's JSON, the failure
 * buckets, the command line and the menu's line editor.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAuthorizedKeys } from '../../src/access/ssh/authorized-keys.js';
import { AddressPatterns, chooseRequest, ConsolePatterns, holdAllowed, type KeyRights } from '../../src/access/ssh/rights.js';
import { interpret } from '../../src/access/ssh/keys-command.js';
import { FailureBuckets } from '../../src/access/ssh/rate-limit.js';
import { parseCommand, splitWords } from '../../src/access/ssh/command-line.js';
import { LineEditor } from '../../src/access/ssh/line-editor.js';
import { fingerprintOf } from '../../src/access/ssh/fingerprint.js';
import { tempDir } from '../support/server.js';

const dir = tempDir('vspc-ssh-unit-');
process.on('exit', () => dir.remove());

function key(name: string, type: 'ed25519' | 'ecdsa' | 'rsa' = 'ed25519'): { pub: string; type: string; b64: string; fingerprint: string } {
  const path = join(dir.dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', type, ...(type === 'rsa' ? ['-b', '2048'] : []), '-N', '', '-C', `${name}@laptop`, '-f', path], { stdio: 'pipe' });
  const pub = readFileSync(`${path}.pub`, 'utf8').trim();
  const [t, b64] = pub.split(' ');
  const fingerprint = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${path}.pub`], { encoding: 'utf8' }).split(/\s+/)[1];
  return { pub, type: t, b64, fingerprint };
}

const alice = key('alice');
const bob = key('bob', 'ecdsa');
const carol = key('carol', 'rsa');

function only(text: string): KeyRights {
  const keys = parseAuthorizedKeys(text, '/etc/vspc/authorized_keys');
  assert.equal(keys.size, 1);
  return [...keys.values()][0].rights;
}

function refused(text: string, pattern: RegExp): void {
  assert.throws(() => parseAuthorizedKeys(text, '/etc/vspc/authorized_keys'), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'VSPC_CONFIG_INVALID');
    assert.match(err.message, pattern);
    return true;
  });
}

const id = (name: string | null, label = '', key = '421a5b7709c38e219f00aa105c2e7d01') => ({ kind: 'esxi', key, label, name });

describe('authorized keys file', () => {
  test('keys of each type, comments, blank lines, CRLF; fingerprints as ssh-keygen prints them', () => {
    const keys = parseAuthorizedKeys(`# vspc keys\r\n\n${alice.pub}\r\n  ${bob.pub}\n${carol.pub}\n`, 'ak');
    assert.equal(keys.size, 3);
    const fps = [...keys.values()].map((k) => k.fingerprint).sort();
    assert.deepEqual(fps, [alice.fingerprint, bob.fingerprint, carol.fingerprint].sort());
    assert.equal(keys.get(alice.b64)?.type, 'ssh-ed25519');
    assert.equal(fingerprintOf(Buffer.from(alice.b64, 'base64')), alice.fingerprint);
  });

  test('without options: every console, every mode and force, the comment as user name, the global limits', () => {
    const r = only(alice.pub);
    assert.equal(r.user, 'alice@laptop');
    assert.equal(r.modes, null);
    assert.equal(r.force, true);
    assert.equal(r.consoles.allows(id('anything')), true);
    assert.equal(r.idleMs, null);
    assert.equal(r.maxSessionMs, null);
    assert.equal(r.from, null);
    assert.equal(r.where, 'authorized_keys:1');
  });

  test('vspc options, quoted values with blanks and escaped quotes, OpenSSH no-op restrictions', () => {
    const r = only(
      `restrict,vspc-consoles="web*,db01:com2,!web-secret",vspc-modes="readonly,readwrite",vspc-user="Alice \\"A\\" Smith",vspc-idle="30m",vspc-max-session="8h",from="10.0.0.0/8,127.0.0.1",no-port-forwarding ${alice.pub}`,
    );
    assert.equal(r.user, 'Alice "A" Smith');
    assert.deepEqual([...r.modes!].sort(), ['readonly', 'readwrite']);
    assert.equal(r.force, false);
    assert.equal(r.idleMs, 30 * 60_000);
    assert.equal(r.maxSessionMs, 8 * 3_600_000);
    assert.equal(r.from!.allows('10.1.2.3'), true);
    assert.equal(r.from!.allows('::ffff:127.0.0.1'), true);
    assert.equal(r.from!.allows('192.168.0.1'), false);
    assert.equal(r.consoles.allows(id('web01')), true);
    assert.equal(r.consoles.allows(id('web-secret')), false);
    assert.equal(r.consoles.allows(id('db01', 'com2')), true);
    assert.equal(r.consoles.allows(id('db01', 'com1')), false);
    assert.equal(r.consoles.allows(id('db01')), false);
  });

  test('a key comment with controls is sanitised; no comment gives key-<fingerprint>', () => {
    const [t, b64] = alice.pub.split(' ');
    assert.equal(only(`${t} ${b64} evil\u001b]0;x\u0007`).user, 'evil?]0;x?');
    assert.equal(only(`${t} ${b64}`).user, `key-${alice.fingerprint.slice(7, 15)}`);
  });

  test('problems are refused with the file and line', () => {
    refused(`# ok\n${alice.pub}\ncommand="/bin/sh" ${bob.pub}\n`, /authorized_keys:3: unknown option "command"/);
    refused(`vspc-console="web*" ${alice.pub}`, /:1: unknown option "vspc-console"/);
    refused(`vspc-modes="readonly,root" ${alice.pub}`, /vspc-modes: unknown mode "root"/);
    refused(`vspc-consoles="web*,,db" ${alice.pub}`, /vspc-consoles: an empty item/);
    refused(`vspc-consoles=web ${alice.pub}`, /double quotes/);
    refused(`vspc-consoles="web ${alice.pub}`, /closing quote is missing/);
    refused(`vspc-idle="soon" ${alice.pub}`, /vspc-idle: "soon" is not a duration/);
    refused(`from="10.0.0.0/33" ${alice.pub}`, /from: "10.0.0.0\/33": the prefix length must be 0-32/);
    refused(`from="example/8" ${alice.pub}`, /is not an IP address/);
    refused(`vspc-user="a",vspc-user="b" ${alice.pub}`, /given twice/);
    refused(`restrict="yes" ${alice.pub}`, /takes no value/);
    refused(`${alice.pub}\n${alice.pub.replace('alice@laptop', 'again')}\n`, /:2: the same key as line 1/);
    refused('ssh-dss AAAAB3NzaC1kc3MAAACBAP== old', /unsupported key type "ssh-dss"/);
    refused('sk-ssh-ed25519@openssh.com AAAA x', /unsupported key type/);
    refused('ssh-ed25519 !!!notbase64', /not base64/);
    refused(`ssh-ed25519 ${bob.b64}`, /is a ecdsa-sha2-nistp256 key, not ssh-ed25519|not a valid ssh-ed25519 key/);
    refused('hello', /expected|unknown option/);
  });
});

describe('console patterns', () => {
  test('names (every serial port), NAME:LABEL (one), UUIDs, negation, any case', () => {
    const p = new ConsolePatterns(['WEB*', 'db01:com2', '421a5b77-09c3-8e21-9f00-aa105c2e7d01', '!web-x*']);
    assert.equal(p.allows(id('web01')), true);
    assert.equal(p.allows(id('web01', 'com1')), true);
    assert.equal(p.allows(id('web-x1')), false);
    assert.equal(p.allows(id('db01', 'com2', 'ffffffffffffffffffffffffffffffff')), true);
    assert.equal(p.allows(id('db01', '', 'ffffffffffffffffffffffffffffffff')), false);
    assert.equal(p.allows(id(null)), true, 'by UUID, before the VM named itself');
    assert.equal(p.allows(id('other', '', 'ffffffffffffffffffffffffffffffff')), false);
    assert.equal(new ConsolePatterns(['!db*']).allows(id('web01')), false, 'only negations allow nothing');
  });

  test('address patterns: CIDR v4 and v6, globs, negation first', () => {
    const a = new AddressPatterns('!10.9.0.0/16,10.0.0.0/8,fd00::/8,192.168.1.*');
    assert.equal(a.allows('10.1.1.1'), true);
    assert.equal(a.allows('10.9.1.1'), false);
    assert.equal(a.allows('fd12::1'), true);
    assert.equal(a.allows('fe80::1'), false);
    assert.equal(a.allows('192.168.1.77'), true);
    assert.equal(a.allows('::ffff:192.168.1.77'), true);
    assert.equal(a.allows('192.168.2.1'), false);
    assert.equal(AddressPatterns.problem('10.0.0.0/8, ,x'), 'an empty address pattern in "10.0.0.0/8, ,x"');
  });
});

describe('lock modes a key may take', () => {
  const rights = (text: string) => only(`${text} ${alice.pub}`);
  test('asked, defaulted, refused', () => {
    const ro = rights('vspc-modes="readonly"');
    assert.deepEqual(chooseRequest(ro, undefined, 'readwrite', false), { request: 'readonly' });
    assert.deepEqual(chooseRequest(ro, 'readonly_ok', 'readwrite', false), { request: 'readonly' });
    assert.match((chooseRequest(ro, 'exclusive', 'readwrite', false) as { error: string }).error, /may not take EXCLUSIVE \(allowed: readonly\)/);
    assert.match((chooseRequest(ro, 'readonly', 'readwrite', true) as { error: string }).error, /may not use --force/);
    const rw = rights('vspc-modes="readwrite,exclusive,force"');
    assert.deepEqual(chooseRequest(rw, undefined, 'readwrite', false), { request: 'readwrite' });
    assert.deepEqual(chooseRequest(rw, 'exclusive', 'readwrite', true), { request: 'exclusive' });
    assert.deepEqual(chooseRequest(rw, undefined, 'excl_write', false), { request: 'readwrite' }, 'the console default is not allowed: the first allowed');
    const all = rights('');
    assert.deepEqual(chooseRequest(all, undefined, 'excl_write', true), { request: 'excl_write' });
  });

  test('a held mode is still allowed after a reload, or not', () => {
    const ro = only(`vspc-modes="readonly" ${alice.pub}`);
    assert.equal(holdAllowed(ro, 'readonly'), true);
    assert.equal(holdAllowed(ro, 'readwrite'), false);
    const ok = only(`vspc-modes="readonly_ok" ${alice.pub}`);
    assert.equal(holdAllowed(ok, 'readwrite'), true);
    assert.equal(holdAllowed(ok, 'exclusive'), false);
  });
});

describe('keys command answers', () => {
  const q = { loginName: 'console', fingerprint: alice.fingerprint };
  test('allow with rights; deny with a reason', () => {
    const a = interpret({ user: 'carol', consoles: ['web*'], modes: ['readonly', 'force'], idle: '15m', maxSession: 3600, from: ['10.0.0.0/8'] }, q);
    assert.equal(a.kind, 'allow');
    if (a.kind !== 'allow') return;
    assert.equal(a.rights.user, 'carol');
    assert.equal(a.rights.consoles.allows(id('web01')), true);
    assert.equal(a.rights.consoles.allows(id('db01')), false);
    assert.deepEqual([...a.rights.modes!], ['readonly']);
    assert.equal(a.rights.force, true);
    assert.equal(a.rights.idleMs, 15 * 60_000);
    assert.equal(a.rights.maxSessionMs, 3_600_000);
    assert.equal(a.rights.from!.allows('10.2.3.4'), true);
    assert.equal(a.rights.source, 'command');
    assert.deepEqual(interpret({ deny: 'not in ops' }, q), { kind: 'deny', reason: 'not in ops' });
    const noUser = interpret({ consoles: ['*'] }, q);
    assert.equal(noUser.kind === 'allow' && noUser.rights.user, 'console');
  });

  test('anything else is a failure, never an allow', () => {
    for (const [answer, reason] of [
      [{}, /"consoles" must be a non-empty array/],
      [[], /not a JSON object/],
      [{ consoles: 'web*' }, /"consoles" must be/],
      [{ consoles: ['*'], modes: ['root'] }, /unknown mode "root"/],
      [{ consoles: ['*'], idle: 'later' }, /durations/],
      [{ consoles: ['*'], admin: true }, /unknown field "admin"/],
      [{ consoles: ['*'], from: '1.2.3.4/99' }, /prefix length/],
      [{ consoles: ['*'], user: 5 }, /"user" must be a string/],
      [{ deny: 5 }, /"deny" must be/],
    ] as const) {
      const r = interpret(answer, q);
      assert.equal(r.kind, 'failed', JSON.stringify(answer));
      assert.match((r as { reason: string }).reason, reason);
    }
  });
});

describe('failure buckets', () => {
  test('burst failures empty the bucket; it refills one token per period; refunds; pruning', () => {
    const b = new FailureBuckets({ burst: 3, refillMs: 1000 });
    assert.equal(b.allows('a', 0), true);
    assert.equal(b.fail('a', 0), true);
    assert.equal(b.fail('a', 0), true);
    assert.equal(b.fail('a', 0), false, 'the third failure empties it');
    assert.equal(b.allows('a', 0), false);
    assert.equal(b.allows('b', 0), true, 'other addresses are not affected');
    assert.equal(b.retryAfter('a', 0), 1000);
    assert.equal(b.allows('a', 999), false);
    assert.equal(b.allows('a', 1000), true);
    b.refund('a', 5, 1000);
    assert.equal(b.fail('a', 1000), true);
    assert.equal(b.fail('a', 1000), true);
    b.prune(100_000);
    assert.equal(b.size, 0, 'full buckets are forgotten');
  });

  test('the number of addresses tracked is bounded', () => {
    const b = new FailureBuckets({ burst: 2, refillMs: 1_000_000, maxAddresses: 100 });
    for (let i = 0; i < 1000; i++) b.fail(`10.0.${i >> 8}.${i & 255}`, 0);
    assert.ok(b.size <= 100, String(b.size));
  });
});

describe('SSH command line', () => {
  test('list, help, attach with mode and force, tail', () => {
    assert.deepEqual(parseCommand('list'), { kind: 'list', json: false });
    assert.deepEqual(parseCommand(' list  --json '), { kind: 'list', json: true });
    assert.deepEqual(parseCommand('help'), { kind: 'help' });
    assert.deepEqual(parseCommand('web01'), { kind: 'attach', target: 'web01', mode: undefined, force: false, raw: false });
    assert.deepEqual(parseCommand('web01:com2 --mode readonly'), { kind: 'attach', target: 'web01:com2', mode: 'readonly', force: false, raw: false });
    assert.deepEqual(parseCommand('"My VM" --mode=EXCL-WRITE --force --raw'), { kind: 'attach', target: 'My VM', mode: 'excl_write', force: true, raw: true });
    assert.deepEqual(parseCommand('web01 --tail 20'), { kind: 'tail', target: 'web01', lines: 20 });
  });

  test('errors', () => {
    for (const [text, message] of [
      ['', /no command/],
      ['list --yaml', /list: unexpected "--yaml"/],
      ['web01 --mode root', /--mode: "root" is not one of/],
      ['web01 --mode', /--mode needs a value/],
      ['web01 --tail 0', /--tail needs a number/],
      ['web01 --tail 5 --force', /--tail goes alone/],
      ['sh -c id', /unexpected "-c"/],
      ['--force', /give a console name first/],
      ["'open", /quote is not closed/],
      ['x'.repeat(2000), /longer than/],
    ] as const) {
      const c = parseCommand(text);
      assert.equal(c.kind, 'error', text);
      assert.match((c as { message: string }).message, message);
    }
    assert.deepEqual(splitWords(`a 'b c' "d"e`), ['a', 'b c', 'de']);
  });
});

describe('menu line editor', () => {
  test('typing, backspace, Ctrl-U, escape sequences, UTF-8 split across chunks, Enter, quit', () => {
    const e = new LineEditor();
    let r = e.feed(Buffer.from('web0x\x7f1\x1b[A'));
    assert.equal(r.echo, 'web0x\b \b1');
    assert.deepEqual(r.events, []);
    const euro = Buffer.from('€');
    r = e.feed(Buffer.concat([Buffer.from(' '), euro.subarray(0, 1)]));
    r = e.feed(Buffer.concat([euro.subarray(1), Buffer.from('\r\n')]));
    assert.deepEqual(r.events, [{ kind: 'line', text: 'web01 €' }]);
    r = e.feed(Buffer.from('abc\x15q\r'));
    assert.deepEqual(r.events, [{ kind: 'line', text: 'q' }]);
    assert.deepEqual(e.feed(Buffer.from('\x04')).events, [{ kind: 'quit' }]);
    assert.deepEqual(e.feed(Buffer.from('x\x04\x03')).events, [{ kind: 'quit' }], 'Ctrl-D quits only on an empty line');
    const long = e.feed(Buffer.alloc(5000, 0x61));
    assert.ok(long.echo.length <= 512);
  });
});
