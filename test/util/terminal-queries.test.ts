import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MAX_QUERY_CSI_BYTES, MAX_QUERY_STRING_BYTES, stripTerminalQueries } from '../../src/util/terminal-queries.js';

/** Strips a latin1 string (one byte per char) and gives the result the same way. */
const s = (text: string) => stripTerminalQueries(Buffer.from(text, 'latin1')).toString('latin1');
const ESC = '\x1b';
const CSI = `${ESC}[`;
const ST = `${ESC}\\`;

/** Every kind of query the rule names, 7-bit form. */
const QUERIES = [
  '\x05', // ENQ
  `${ESC}Z`, // DECID
  `${CSI}5n`, `${CSI}6n`, `${CSI}?6n`, `${CSI}?15n`, `${CSI}?996n`, `${CSI}n`,
  `${CSI}c`, `${CSI}0c`, `${CSI}>c`, `${CSI}>0c`, `${CSI}=c`,
  `${CSI}x`, `${CSI}1x`,
  `${CSI}11t`, `${CSI}13t`, `${CSI}13;2t`, `${CSI}14t`, `${CSI}14;2t`, `${CSI}15t`, `${CSI}16t`, `${CSI}18t`, `${CSI}19t`, `${CSI}20t`, `${CSI}21t`,
  `${CSI}>0q`, `${CSI}>q`,
  `${CSI}?u`, `${CSI}?4m`, `${CSI}?1;1;0S`,
  `${CSI}?2004$p`, `${CSI}4$p`, `${CSI}1$w`, `${CSI}1$u`, `${CSI}1'|`, `${CSI}1;1;1;1;1;1*y`, `${CSI}"v`, `${CSI}+x`, `${CSI}&u`, `${CSI}1,u`,
  `${ESC}P$qm${ST}`, `${ESC}P$q"p${ST}`, `${ESC}P+q544e${ST}`, `${ESC}P+q544e;636f6c6f7273${ST}`,
  `${ESC}]4;1;?${ST}`, `${ESC}]4;1;?\x07`, `${ESC}]4;1;rgb:0/0/0;2;?\x07`, `${ESC}]10;?\x07`, `${ESC}]11;?${ST}`, `${ESC}]12;?\x07`, `${ESC}]10;?;?\x07`,
  `${ESC}]52;c;?\x07`, `${ESC}]52;;?${ST}`, `${ESC}]21;foreground=?\x07`,
];

/** Sequences that act (or are text) and must pass byte for byte. */
const KEPT = [
  `${CSI}0m`, `${CSI}1;31m`, `${CSI}38;5;208m`, `${CSI}38:2::1:2:3m`, `${CSI}m`, `${CSI}H`, `${CSI}10;20H`, `${CSI}2J`, `${CSI}K`, `${CSI}5A`, `${CSI}?25l`, `${CSI}?1049h`,
  `${CSI}?2004h`, `${CSI}1;24r`, `${CSI}s`, `${CSI}u`, `${CSI}>1u`, `${CSI}<u`, `${CSI}>4;2m`, `${CSI}>1n`, `${CSI}?6c`, `${CSI}2 q`, `${CSI}1q`, `${CSI}!p`, `${CSI}62;1"p`,
  `${CSI}8;24;80t`, `${CSI}22;0t`, `${CSI}23;0t`, `${CSI}t`, `${CSI}1t`, `${CSI}1*x`, `${CSI}1;1;2;2;1$x`, `${CSI}1S`,
  `${ESC}7`, `${ESC}8`, `${ESC}(B`, `${ESC}#8`, `${ESC}c`, `${ESC}M`, `${ESC}=`,
  `${ESC}]0;title\x07`, `${ESC}]2;?\x07`, `${ESC}]4;1;rgb:ff/00/00${ST}`, `${ESC}]8;;http://example.com/?q${ST}`, `${ESC}]52;c;Zm9v\x07`, `${ESC}]104\x07`,
  `${ESC}Pq#0;2;0;0;0~-${ST}`, `${ESC}P+p544e=31${ST}`, `${ESC}_Gf=24;AAAA${ST}`,
  '\r\n', '\x07', '\b\t',
];

describe('stripTerminalQueries', () => {
  test('each query is removed whole, between text', () => {
    for (const q of QUERIES) assert.equal(s(`a${q}b`), 'ab', JSON.stringify(q));
  });

  test('colours, cursor movement, modes, titles and other strings pass byte for byte', () => {
    for (const k of KEPT) assert.equal(s(`a${k}b`), `a${k}b`, JSON.stringify(k));
    const all = `x${KEPT.join('y')}z`;
    const buf = Buffer.from(all, 'latin1');
    assert.equal(stripTerminalQueries(buf), buf, 'nothing removed: the very same buffer');
  });

  test("a busybox prompt keeps everything but its ESC [ 6 n", () => {
    const prompt = `\r\n${CSI}1;32m~ #${CSI}0m ${CSI}6n`;
    assert.equal(s(`${prompt}ls\r\nbin  etc${prompt}`), `\r\n${CSI}1;32m~ #${CSI}0m ls\r\nbin  etc\r\n${CSI}1;32m~ #${CSI}0m `);
  });

  test('UTF-8 text passes unchanged, and so do characters whose bytes include 0x80-0x9F', () => {
    const text = 'café 東京 🚀 Û ‛ ÿ\u00a0— ok';
    const b = Buffer.from(text, 'utf8');
    assert.ok(b.includes(0x9b) && b.includes(0x80), 'the text has continuation bytes in the C1 range');
    assert.equal(stripTerminalQueries(b).toString('utf8'), text);
    const withQuery = Buffer.from(`${text}\x1b[6n${text}`, 'utf8');
    assert.equal(stripTerminalQueries(withQuery).toString('utf8'), text + text);
    // An OSC title in UTF-8 with such bytes is one string, not cut by them.
    const title = Buffer.from('\x1b]0;Ûber\x07x', 'utf8');
    assert.deepEqual(stripTerminalQueries(title), title);
  });

  test('C1 introducers: UTF-8 (C2 9B, C2 9D, C2 90, C2 9A) and raw bytes that cannot be UTF-8', () => {
    const b = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));
    assert.equal(stripTerminalQueries(b('a', [0xc2, 0x9b], '6nb')).toString('latin1'), 'ab');
    assert.equal(stripTerminalQueries(b('a', [0xc2, 0x9d], '11;?', [0xc2, 0x9c], 'b')).toString('latin1'), 'ab');
    assert.equal(stripTerminalQueries(b('a', [0xc2, 0x90], '$qm', [0xc2, 0x9c], 'b')).toString('latin1'), 'ab');
    assert.equal(stripTerminalQueries(b('a', [0xc2, 0x9a], 'b')).toString('latin1'), 'ab');
    assert.equal(stripTerminalQueries(b('a', [0x9b], '6nb')).toString('latin1'), 'ab', 'a raw 0x9B after ASCII is CSI');
    // The ring cut a C2 9B in half: the lone 9B still starts the query.
    assert.equal(stripTerminalQueries(b([0x9b], 'c rest')).toString('latin1'), ' rest');
    const kept = b('a', [0xc2, 0x9b], '1mb');
    assert.deepEqual(stripTerminalQueries(kept), kept);
  });

  test('a query a terminal parses after C0 controls inside the sequence: removed, the controls kept', () => {
    assert.equal(s(`a${CSI}6\r\nnb`), 'a\r\nb');
    assert.equal(s(`a${ESC}\r[6nb`), 'a\rb');
    // An ENQ inside a kept sequence is executed by a terminal (answerback): removed alone.
    assert.equal(s(`a${CSI}1\x05mb`), `a${CSI}1mb`);
    // Inside a string a terminal does not execute it: kept.
    assert.equal(s(`a${ESC}]0;t\x05t\x07b`), `a${ESC}]0;t\x05t\x07b`);
  });

  test('a raw C1 string introducer that a removal splices into a UTF-8 character: its ENQ does not come out at ground', () => {
    // E2 [ENQ or query] 80 9D: in the input 9D is a raw OSC (the byte before 80 is not a
    // lead); in the output E2 80 9D is U+201D, and what was the OSC's body is text, where
    // a terminal executes (answers) an ENQ. The body's ENQ must go as well.
    for (const removed of ['\x05', `${CSI}6n`]) {
      for (const intro of ['\x9d', '\x90', '\x98', '\x9e', '\x9f']) {
        for (const end of ['\x07', '\x9c', '']) {
          const input = `\xe2${removed}\x80${intro}0;x\x05y${end}`;
          const out = s(input);
          assert.ok(!out.includes('\x05'), `${JSON.stringify(input)} -> ${JSON.stringify(out)}`);
          assert.equal(s(out), out, `idempotent for ${JSON.stringify(input)}`);
        }
      }
    }
    // A 7-bit or UTF-8 (C2 9D) introducer cannot be spliced away: its body keeps its ENQ.
    assert.equal(s(`\xe2\x05\x80\xc2\x9d0;x\x05y\x07`), `\xe2\x80\xc2\x9d0;x\x05y\x07`);
  });

  test('sequences aborted or cancelled as a terminal does; nothing left that makes a new query', () => {
    // CAN / SUB cancel: never answered, kept.
    assert.equal(s(`a${CSI}6\x18nb`), `a${CSI}6\x18nb`);
    assert.equal(s(`a${ESC}]11;?\x1ab`), `a${ESC}]11;?\x1ab`);
    // ESC aborts a CSI: the next one is a query of its own.
    assert.equal(s(`a${CSI}1${CSI}6nb`), `a${CSI}1${ST}b`);
    // ESC ESC [ 6 n [ 6 n: removing the query alone would leave ESC [ 6 n.
    assert.equal(s(`${ESC}${CSI}6n[6n`), `${ESC}${ST}[6n`);
    // A string ended by the query's ESC stays ended.
    assert.equal(s(`${ESC}]0;t${CSI}6nvisible`), `${ESC}]0;t${ST}visible`);
    // ESC inside a string ends it: a query right after is a query.
    assert.equal(s(`${ESC}Pq#0${CSI}5n!`), `${ESC}Pq#0${ST}!`);
    // A malformed CSI (private marker after parameters) is never dispatched: kept.
    assert.equal(s(`${CSI}6?n`), `${CSI}6?n`);
  });

  test('split at the ring start: a fragment is text, as for the terminal', () => {
    for (const q of [`${CSI}6n`, `${ESC}P$qm${ST}`, `${ESC}]11;?\x07`, `${CSI}14;2t`]) {
      for (let cut = 1; cut < q.length; cut++) {
        const frag = q.slice(cut);
        const out = s(`${frag}|${q}|`);
        assert.equal(out, `${frag}||`, JSON.stringify(frag));
      }
    }
  });

  test('open at the end: kept as it is (live output finishes it)', () => {
    for (const q of [`${CSI}6n`, `${ESC}P$qm${ST}`, `${ESC}]11;?\x07`, `${CSI}1;31m`]) {
      for (let cut = 1; cut < q.length; cut++) {
        const head = q.slice(0, cut);
        // ESC ends a string whatever follows (a terminal answers the DECRQSS then): the
        // query goes, the ESC stays for the live `\\` (a lone ST).
        const want = head === `${ESC}P$qm${ESC}` ? ESC : head;
        assert.equal(s(`x${CSI}6n${head}`), `x${want}`, JSON.stringify(head));
      }
    }
  });

  test('bounded: over-long sequences are never taken for queries and pass through', () => {
    const longCsi = `${CSI}6${';'.repeat(MAX_QUERY_CSI_BYTES)}n`;
    assert.equal(s(`a${longCsi}b`), `a${longCsi}b`);
    const atBound = `${CSI}6${';'.repeat(MAX_QUERY_CSI_BYTES - 4)}n`;
    assert.equal(atBound.length, MAX_QUERY_CSI_BYTES);
    assert.equal(s(`a${atBound}b`), 'ab');
    const longOsc = `${ESC}]11;?${'x'.repeat(MAX_QUERY_STRING_BYTES)}\x07`;
    assert.equal(s(longOsc), longOsc);
    const longDcs = `${ESC}P$q${'m'.repeat(MAX_QUERY_STRING_BYTES)}${ST}`;
    assert.equal(s(longDcs), longDcs);
    // C0 controls do not count: removing the ENQs must not make a query of what is left.
    const enqs = `${CSI}6${'\x05'.repeat(MAX_QUERY_CSI_BYTES * 2)}n`;
    assert.equal(s(enqs), '', 'a short query with executed ENQs in it');
    const longWithEnq = `${CSI}6${';'.repeat(MAX_QUERY_CSI_BYTES)}\x05n`;
    assert.equal(s(longWithEnq), `${CSI}6${';'.repeat(MAX_QUERY_CSI_BYTES)}n`);
    // Garbage that never ends a string: everything kept (open at the end), in linear time.
    const junk = Buffer.concat([Buffer.from(`${ESC}P$q`), Buffer.alloc(1 << 20, 0x41)]);
    assert.equal(stripTerminalQueries(junk), junk);
  });

  test('linear time on adversarial input (many sequence starts, aborted sequences, C1 bytes)', () => {
    const patterns = [`${ESC}`, `${CSI}1`, `${ESC}]11;?`, `${ESC}P$q`, '\x9b', '\xc2\x9d', `${CSI}6n`, '\x05'];
    for (const p of patterns) {
      const big = Buffer.from(p.repeat(Math.ceil((1 << 20) / p.length)), 'latin1');
      // No timing assertion: a quadratic scan of 1 MiB (10^12 steps) would not finish
      // within the test's time bound; a linear one takes milliseconds.
      const out = stripTerminalQueries(big);
      assert.ok(out.length <= big.length * 1.5 + 2);
    }
  });

  test('properties: output is the input less whole sequences, idempotent, never longer than 1.5x', () => {
    const alphabet = ['a', 'é', '\x1b', '[', ']', 'P', '$', 'q', '?', ';', '6', 'n', 'c', '>', '\x07', '\\', '\x05', '\x18', '\xc2', '\x9b', '\x9c', '\x9d', '\x90', '\x9a', 'm', '1', 't', '\r'];
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...alphabet), { maxLength: 80 }), (chars) => {
        const input = Buffer.from(chars.join(''), 'latin1');
        const once = stripTerminalQueries(input);
        assert.ok(once.length <= input.length * 1.5 + 2);
        assert.deepEqual(stripTerminalQueries(once), once, `idempotent for ${JSON.stringify(input.toString('latin1'))}`);
      }),
      { seed: 7, numRuns: 5000 },
    );
    // Query-free text of printable ASCII and UTF-8 comes back unchanged.
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (text) => {
        const clean = text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '');
        const b = Buffer.from(clean, 'utf8');
        assert.equal(stripTerminalQueries(b), b);
      }),
      { seed: 3, numRuns: 2000 },
    );
  });

  test('sans-I/O: the input is never modified', () => {
    const input = Buffer.from(`a${CSI}6nb${ESC}]11;?\x07c`, 'latin1');
    const copy = Buffer.from(input);
    stripTerminalQueries(input);
    assert.deepEqual(input, copy);
  });
});
