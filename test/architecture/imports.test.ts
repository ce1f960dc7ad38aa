/**
 * The layering in docs/architecture.md, enforced: every relative import in src/ is
 * checked against the table of what each folder may import. A new arrow that points
 * the wrong way (the domain importing a source, a protocol importing the domain, ...)
 * fails here with the file and the import named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const root = resolve(new URL('../../..', import.meta.url).pathname);
const src = join(root, 'src');

/** The layer a file of src/ belongs to: its first folder (sources/access: with their kind), or the file itself. */
function layerOf(file: string): string {
  const parts = relative(src, file).split('/');
  if (parts.length === 1) return parts[0].replace(/\.ts$/, '');
  if ((parts[0] === 'sources' || parts[0] === 'access') && parts.length > 2) return `${parts[0]}/${parts[1]}`;
  return parts[0];
}

/** Leaves everyone may import: pure helpers and the error classes. */
const LEAVES = ['util', 'errors', 'version'];

/** What each layer may import besides itself and LEAVES. `*` = anything in src. */
const ALLOWED: Record<string, string[] | '*'> = {
  util: [],
  errors: ['util'],
  version: [],
  protocol: [],
  domain: [],
  storage: ['domain'],
  logging: ['domain'],
  config: ['domain'],
  admin: ['domain', 'logging', 'config', 'version', 'protocol'],
  agent: ['protocol'],
  cli: '*',
  server: '*',
};

function allowed(from: string, to: string): boolean {
  if (from === to || LEAVES.includes(to)) return true;
  // Sources share their reconnect machinery (sources/common), never each other's code.
  if (from.startsWith('sources/')) return ['domain', 'protocol', 'sources/common'].includes(to);
  // The files at the root of sources/ put the kinds together (the connector registry, managed consoles).
  if (from === 'sources') return ['domain', 'protocol'].includes(to) || to.startsWith('sources/');
  // Access methods share their listener machinery (access/common), never each other's code.
  if (from.startsWith('access/')) return ['domain', 'protocol', 'access/common'].includes(to);
  const rule = ALLOWED[from];
  if (rule === undefined) return false;
  return rule === '*' || rule.includes(to);
}

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s+['"](\.[^'"]+)['"]/g)) out.push(m[1]);
  for (const m of text.matchAll(/\bimport\(\s*['"](\.[^'"]+)['"]\s*\)/g)) out.push(m[1]);
  return out;
}

test('every folder of src/ imports only what docs/architecture.md allows', () => {
  const files = walk(src);
  assert.ok(files.length > 40, 'the walk found the sources');
  const violations: string[] = [];
  for (const file of files) {
    const from = layerOf(file);
    for (const spec of importsOf(file)) {
      const target = resolve(dirname(file), spec).replace(/\.js$/, '.ts');
      const where = `${relative(root, file)} imports ${spec}`;
      if (!target.startsWith(src + '/')) {
        violations.push(`${where}: outside src/ (the product must not depend on test/ or bench/)`);
        continue;
      }
      const to = layerOf(target);
      if (!allowed(from, to)) violations.push(`${where}: ${from} may not import ${to}`);
    }
  }
  assert.deepEqual(violations, []);
});

test('the rule table itself rejects the arrows the architecture forbids', () => {
  // A check that cannot fail proves nothing: these are the arrows the rules exist for.
  assert.equal(allowed('domain', 'storage'), false);
  assert.equal(allowed('domain', 'sources/esxi'), false);
  assert.equal(allowed('protocol', 'domain'), false);
  assert.equal(allowed('sources/esxi', 'access/telnet'), false);
  assert.equal(allowed('access/telnet', 'sources/esxi'), false);
  assert.equal(allowed('storage', 'admin'), false);
  assert.equal(allowed('sources/esxi', 'domain'), true);
  assert.equal(allowed('sources/qemu', 'sources/esxi'), false);
  assert.equal(allowed('sources/qemu', 'sources/common'), true);
  assert.equal(allowed('sources', 'sources/qemu'), true);
  assert.equal(allowed('sources', 'access/telnet'), false);
  assert.equal(allowed('access/raw', 'access/common'), true);
  assert.equal(allowed('access/unix', 'access/telnet'), false);
  assert.equal(allowed('access/common', 'access/pty'), false);
  assert.equal(allowed('agent', 'protocol'), true);
  assert.equal(allowed('agent', 'domain'), false);
  assert.equal(allowed('protocol', 'agent'), false);
});
