/**
 * The pure parts of discovery against hostile input: the name sanitiser, the XML
 * scanner (entities, skipped constructs, limits, malformed input, linear time), the
 * Proxmox conf and socket-name parsers, wildcard matching and templates.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { sanitizeName } from '../../src/sources/discovery/text.js';
import { decodeEntities, scanXml } from '../../src/sources/discovery/xml.js';
import { parseProxmoxConfName, parseSerialSocketName } from '../../src/sources/discovery/proxmox.js';
import { matchSegment, parseTemplate, renderTemplate } from '../../src/sources/discovery/glob.js';
import { Glob } from '../../src/util/glob.js';
import { parseLibvirtDomain } from '../../src/sources/discovery/libvirt.js';
import { FileMemo, statSignature } from '../../src/sources/discovery/files.js';
import type { Stats } from 'node:fs';

test('sanitizeName: util/text.ts replaces controls, bidi and format characters with ?; trimmed, bounded, null when empty', () => {
  assert.equal(sanitizeName('web01'), 'web01');
  assert.equal(sanitizeName('  we\u0000b\u001b[31m01\r\n '), 'we?b?[31m01', 'the line end is trimmed, not replaced');
  assert.equal(sanitizeName('a\u007fb\u0085c\u009bd'), 'a?b?c?d');
  assert.equal(sanitizeName('evil\u202egnp.exe'), 'evil?gnp.exe');
  assert.equal(sanitizeName('\u2066x\u2069\u200e\u200f\u202a'), '?x????');
  assert.equal(sanitizeName('Ünïcødé 🖥 сервер'), 'Ünïcødé 🖥 сервер');
  assert.equal(sanitizeName(' \t\r\n '), null);
  assert.equal(sanitizeName(''), null);
  assert.equal(sanitizeName('🖥'.repeat(300))?.length, 2 * 256, 'bounded in code points, pairs kept whole');
  assert.equal(sanitizeName('abcdef', 3), 'abc');
});

test('sanitizeName never leaves an unsafe character, whatever the input', () => {
  const unsafe = /[\p{Cc}\p{Cf}\u2028\u2029]/u;
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 400 }), (s) => {
      const out = sanitizeName(s);
      return out === null || (!unsafe.test(out) && out === out.trim() && [...out].length <= 256);
    }),
    { numRuns: 500 },
  );
});

test('decodeEntities: the five named entities and numeric references; anything else kept', () => {
  assert.equal(decodeEntities('a &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos;'), `a <b> & "c" 'd'`);
  assert.equal(decodeEntities('&#65;&#x42;&#X43;'), 'ABC');
  assert.equal(decodeEntities('&#0;'), '\u0000', 'decoded; the sanitiser removes it later');
  assert.equal(decodeEntities('&#x110000;&#xD800;'), '\ufffd\ufffd');
  assert.equal(decodeEntities('&nbsp; &unknown; & &; &#; &#xZZ; &amp'), '&nbsp; &unknown; & &; &#; &#xZZ; &amp');
});

interface Ev {
  t: 'open' | 'close' | 'text';
  v: string;
  path: string;
}

function events(xml: string): { result: ReturnType<typeof scanXml>; events: Ev[] } {
  const out: Ev[] = [];
  const result = scanXml(xml, {
    open: (name, attrs, path) => out.push({ t: 'open', v: `${name}${[...attrs].map(([k, v]) => ` ${k}=${v}`).join('')}`, path: path.join('/') }),
    close: (name, path) => out.push({ t: 'close', v: name, path: path.join('/') }),
    text: (text, path) => {
      if (text.trim()) out.push({ t: 'text', v: text, path: path.join('/') });
    },
  });
  return { result, events: out };
}

test('scanXml reports elements with attributes, paths and text; skips comments, PIs and DOCTYPE; CDATA is text', () => {
  const { result, events: ev } = events(
    `<?xml version="1.0"?><!DOCTYPE domain [ <!ENTITY x "y"> ]><!-- <serial> in a comment --><domain a="1" b = 'two &amp; three'><name>web<![CDATA[<01>]]></name><devices><serial type="pty"/></devices></domain>`,
  );
  assert.deepEqual(result, { ok: true, elements: 4 });
  assert.deepEqual(ev, [
    { t: 'open', v: 'domain a=1 b=two & three', path: '' },
    { t: 'open', v: 'name', path: 'domain' },
    { t: 'text', v: 'web', path: 'domain/name' },
    { t: 'text', v: '<01>', path: 'domain/name' },
    { t: 'close', v: 'name', path: 'domain' },
    { t: 'open', v: 'devices', path: 'domain' },
    { t: 'open', v: 'serial type=pty', path: 'domain/devices' },
    { t: 'close', v: 'serial', path: 'domain/devices' },
    { t: 'close', v: 'devices', path: 'domain' },
    { t: 'close', v: 'domain', path: '' },
  ]);
});

test('scanXml tolerates a stray or missing end tag, and keeps the first of duplicate attributes', () => {
  const { result, events: ev } = events(`<a><b x="1" x="2"></c><d></a>`);
  assert.equal(result.ok, true);
  assert.deepEqual(
    ev.map((e) => `${e.t} ${e.v} @${e.path}`),
    ['open a @', 'open b x=1 @a', 'open d @a/b', 'close d @a/b', 'close b @a', 'close a @'],
  );
});

test('scanXml rejects what it cannot read, with a reason and an offset, and never throws', () => {
  const bad: Array<[string, RegExp]> = [
    ['<domain><name>x</name>', /unterminated element <domain>/],
    ['<domain', /unterminated tag/],
    ['<domain a=1/>', /not quoted/],
    ['<domain a/>', /has no value/],
    ['<domain a="1/>', /unterminated value/],
    ['<!-- never closed', /unterminated comment/],
    ['<![CDATA[ open', /unterminated CDATA/],
    ['<?xml ', /unterminated processing instruction/],
    ['< domain/>', /starts no tag/],
    ['<a/ >', /stray "\/"/],
    ['<a></a', /unterminated end tag/],
  ];
  for (const [xml, reason] of bad) {
    const r = scanXml(xml, {});
    assert.equal(r.ok, false, xml);
    if (!r.ok) assert.match(r.error, reason, xml);
  }
});

test('scanXml bounds elements, depth and attributes', () => {
  const limits = { maxElements: 10, maxDepth: 4, maxAttributes: 3 };
  assert.match(String((scanXml('<a/>'.repeat(11), {}, limits) as { error?: string }).error), /more than 10 elements/);
  assert.match(String((scanXml('<a><a><a><a><a/></a></a></a></a>', {}, limits) as { error?: string }).error), /deeper than 4/);
  assert.match(String((scanXml(`<a p="1" q="2" r="3" s="4"/>`, {}, limits) as { error?: string }).error), /more than 3 attributes/);
  assert.equal(scanXml('<a><a><a><a/></a></a></a>', {}, limits).ok, true);
});

test('scanXml and parseLibvirtDomain never throw on arbitrary input', () => {
  const xmlish = fc.stringMatching(/^[<>/="' a-z!?\[\]&;#x0-9-]{0,200}$/);
  fc.assert(
    fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), xmlish), (s) => {
      scanXml(s, { open() {}, close() {}, text() {} });
      parseLibvirtDomain(s);
      parseProxmoxConfName(s);
      return true;
    }),
    { numRuns: 1000 },
  );
});

test('scanXml runs in linear time on adversarial input (no quadratic rescans)', () => {
  // Each shape would make a naive scanner rescan the rest of the input per token.
  const shapes: Array<[string, (n: number) => string]> = [
    ['entities without ";" in an attribute', (n) => `<a b="${'&'.repeat(n)}"/>`],
    ['entities without ";" in text', (n) => `<a>${'&a'.repeat(n / 2)}</a>`],
    ['many attributes', (n) => `<r>${`<a ${'x="1" '.repeat(50)}/>`.repeat(n / 300)}</r>`],
    ['deep nesting and a long text', (n) => '<a>'.repeat(100) + 'x'.repeat(n) + '</a>'.repeat(100)],
    ['stray end tags', (n) => `<r>${'</a>'.repeat(n / 4)}</r>`],
    ['comments', (n) => `<r>${'<!-- - -->'.repeat(n / 10)}</r>`],
    ['an unterminated comment at the end', (n) => `<r>${'<b/>'.repeat(n / 4)}<!--`],
  ];
  // At the 1 MiB file bound a linear scan takes milliseconds; a quadratic one (each
  // token rescanning the rest) takes ~10^11 steps, minutes. The bound leaves a wide
  // margin both ways, so it is no timing test in the flaky sense.
  const n = 1024 * 1024;
  for (const [what, make] of shapes) {
    const text = make(n);
    const t0 = Date.now();
    scanXml(text, { text() {} });
    const ms = Date.now() - t0;
    assert.ok(ms < 10_000, `${what}: ${text.length} characters took ${ms} ms`);
  }
});

test('parseSerialSocketName: <vmid>.serial<N> only, one spelling per vmid', () => {
  assert.deepEqual(parseSerialSocketName('100.serial0'), { vmid: '100', label: 'serial0' });
  assert.deepEqual(parseSerialSocketName('999999999.serial3'), { vmid: '999999999', label: 'serial3' });
  for (const name of ['100.qmp', '100.pid', '100.vnc', '100.mon', '100.serial', '100.serial10', '0100.serial0', 'abc.serial0', '.serial0', '1000000000.serial0', '100.serial0.old', '100.serialx'])
    assert.equal(parseSerialSocketName(name), null, name);
});

test('parseProxmoxConfName: the main section only; the last name: wins; garbage gives null', () => {
  const conf = [
    '#Web front end',
    '#with a: colon in the description',
    'boot: order=scsi0',
    'name: old-name',
    'name:  web01  ',
    'serial0: socket',
    '',
    '[PENDING]',
    'name: web01-renamed-pending',
    '',
    '[before-upgrade]',
    'name: web01-snap',
    'snaptime: 1700000000',
  ].join('\r\n');
  assert.equal(parseProxmoxConfName(conf), 'web01');
  assert.equal(parseProxmoxConfName('[snap]\nname: only-in-snapshot\n'), null);
  assert.equal(parseProxmoxConfName('memory: 2048\n'), null);
  assert.equal(parseProxmoxConfName('name:\n'), null);
  assert.equal(parseProxmoxConfName('hostname: x\nnamex: y\n'), null);
  assert.equal(parseProxmoxConfName('name: evil\u001b]0;pwned\u0007\u202e\n'), 'evil?]0;pwned??');
  assert.equal(parseProxmoxConfName('\u0000\u00ff\ufffd'.repeat(1000)), null);
});

test('matchSegment: * and ?, no regex, hidden files need an explicit dot', () => {
  const yes: Array<[string, string]> = [
    ['*', 'ttyUSB0'],
    ['*.sock', 'vm1.sock'],
    ['*.sock', '.sock.sock'.slice(1)],
    ['usb-*-if00-port0', 'usb-FTDI_FT232R_A1-if00-port0'],
    ['tty??', 'ttyS0'],
    ['*a*a*c', 'xxaxxaxxc'],
    ['.*', '.hidden'],
    ['', ''],
  ];
  const no: Array<[string, string]> = [
    ['*', '.hidden'],
    ['?idden', '.idden'],
    ['*.sock', 'vm1.socket'],
    ['tty??', 'ttyS10'],
    ['*a*a*c', 'xxaxxaxxb'],
    ['abc', 'abcd'],
  ];
  for (const [p, n] of yes) assert.equal(matchSegment(p, n), true, `${p} ~ ${n}`);
  for (const [p, n] of no) assert.equal(matchSegment(p, n), false, `${p} !~ ${n}`);
  // The backtracking-RegExp killer stays linear: counted in the matcher's steps, not timed
  // (a 100 ms bound failed whenever a loaded machine descheduled the test for that long).
  const killer = new Glob('*a*a*a*a*a*a*a*c');
  const text = 'a'.repeat(255);
  assert.equal(matchSegment(killer, text), false);
  const { steps } = killer.match(text);
  // Glob.match: one step per character read, plus at most (n + 1)·(m + 1) for the matching.
  assert.ok(steps <= text.length + (text.length + 1) * (killer.pattern.length + 1), `${steps} steps for ${text.length} characters`);
});

test('templates: {path} {basename} {stem} {dir}; unknown or unbalanced placeholders are config errors', () => {
  const parts = parseTemplate('{dir}/{stem} ({basename}) at {path}', 'name');
  assert.equal(renderTemplate(parts, '/run/vms/web01/console.sock'), 'web01/console (console.sock) at /run/vms/web01/console.sock');
  assert.equal(renderTemplate(parseTemplate('{stem}', 'n'), '/dev/.hidden'), '.hidden');
  assert.equal(renderTemplate(parseTemplate('{stem}', 'n'), '/dev/ttyUSB0'), 'ttyUSB0');
  assert.throws(() => parseTemplate('{host}', 'globs[0].name'), { code: 'VSPC_CONFIG_INVALID', message: /globs\[0\]\.name: unknown placeholder \{host\}/ });
  assert.throws(() => parseTemplate('unix:{path', 'spec'), /unterminated/);
  assert.throws(() => parseTemplate('unix:path}', 'spec'), /without "\{"/);
});

test('FileMemo: a read within the mtime granularity of the last change is not trusted; a later one is', () => {
  const st = (mtimeMs: number) => ({ dev: 1, ino: 2, size: 10, mtimeMs, ctimeMs: mtimeMs }) as Stats;
  const memo = new FileMemo<string>(2000);
  const now = Date.now();
  // Read 500 ms after a change on a whole-second filesystem: another change within the
  // same second would keep mtime, ctime and size, so the next scan must read again.
  memo.set('/c', statSignature(st(now - 500)), now - 500, now, 'first');
  assert.equal(memo.get('/c', st(now - 500)), undefined);
  memo.set('/c', statSignature(st(now - 500)), now - 500, now + 2000, 'settled');
  assert.equal(memo.get('/c', st(now - 500)), 'settled');
  assert.equal(memo.get('/c', st(now + 1)), undefined, 'another signature');
  memo.set('/gone', null, now, now, 'x');
  assert.equal(memo.get('/gone', st(now)), undefined);
  memo.retain(new Set());
  assert.equal(memo.size, 0);
});
