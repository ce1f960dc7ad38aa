import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { hasUnsafeText, neutralizeTerminalStrings, sanitizeText } from '../../src/util/text.js';

const STRING_STARTS = [0x5d, 0x50, 0x5f, 0x5e, 0x58]; // ] P _ ^ X after ESC

describe('sanitizeText', () => {
  test('controls and invisible formatting become ?, everything else stays', () => {
    assert.equal(sanitizeText('a\u0000b\u001bc\u007fd\u0085e\u009bf'), 'a?b?c?d?e?f');
    assert.equal(sanitizeText('x\u202ey\u2066z\u200ew\u200dv\ufeffu\u2028t'), 'x?y?z?w?v?u?t');
    assert.equal(sanitizeText('web-01 café 東京 🚀'), 'web-01 café 東京 🚀');
    assert.equal(hasUnsafeText('ok'), false);
    assert.equal(hasUnsafeText('o\u202ek'), true);
    assert.equal(hasUnsafeText('o\u202ek'), true, 'no state carried between calls');
  });

  test('the result never has a character that hasUnsafeText flags, and keeps the length in code points', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
        const out = sanitizeText(s);
        assert.equal(hasUnsafeText(out), false);
        assert.equal([...out].length, [...s].length);
      }),
      { seed: 11, numRuns: 2000 },
    );
  });
});

describe('neutralizeTerminalStrings', () => {
  const n = (s: string) => neutralizeTerminalStrings(Buffer.from(s, 'latin1')).toString('latin1');

  test('OSC (BEL or ST), DCS, APC, PM and SOS strings are dropped whole; CSI and text stay', () => {
    assert.equal(n('a\x1b]0;title\x07b'), 'ab');
    assert.equal(n('a\x1b]52;c;Zm9v\x1b\\b'), 'ab');
    assert.equal(n('a\x1bPq#0;2\x1b\\b'), 'ab');
    assert.equal(n('a\x1b_apc\x1b\\b\x1b^pm\x07c\x1bXsos\x1b\\d'), 'abcd');
    assert.equal(n('\x1b[1;31mred\x1b[0m\x1b[2J\x1b[H'), '\x1b[1;31mred\x1b[0m\x1b[2J\x1b[H');
    assert.equal(n('open \x1b]0;never closed'), 'open ');
    // A dropped string never splices its neighbours into a new introducer.
    assert.equal(n('\x1b\x1b]x\x07]0;t\x07'), '\x1b?0;t\x07');
    assert.equal(neutralizeTerminalStrings(Buffer.from([0xc2, 0x1b, 0x5d, 0x07, 0x9d])).toString('latin1'), '\xc2?');
  });

  test('C1 controls in UTF-8 are replaced; their string forms are dropped', () => {
    const u = (s: string) => neutralizeTerminalStrings(Buffer.from(s, 'utf8')).toString('utf8');
    assert.equal(u('a\u009b2Jb'), 'a?2Jb');
    assert.equal(u('a\u009d0;t\u0007b'), 'ab');
    assert.equal(u('a\u009d0;t\u009cb'), 'ab');
    assert.equal(u('é ü 東'), 'é ü 東');
  });

  test('no output ever holds a string introducer or a UTF-8 C1 control; plain printable input is unchanged', () => {
    fc.assert(
      // Biased towards the bytes that matter, so splices are actually tried.
      fc.property(fc.array(fc.oneof(fc.constantFrom(0x1b, 0x5d, 0x50, 0x07, 0x5c, 0xc2, 0x9b, 0x9d, 0x9c), fc.integer({ min: 0, max: 255 })), { maxLength: 300 }), (bytes) => {
        const out = neutralizeTerminalStrings(Buffer.from(bytes));
        for (let i = 0; i < out.length; i++) {
          if (out[i] === 0x1b) assert.ok(!STRING_STARTS.includes(out[i + 1]), `ESC ${out[i + 1]} at ${i}`);
          if (out[i] === 0xc2) assert.ok(!(out[i + 1] >= 0x80 && out[i + 1] <= 0x9f), `C1 at ${i}`);
        }
      }),
      { seed: 12, numRuns: 3000 },
    );
    fc.assert(
      fc.property(fc.stringMatching(/^[ -~\r\n\t]*$/), (s) => {
        assert.equal(neutralizeTerminalStrings(Buffer.from(s)).toString(), s);
      }),
      { seed: 13, numRuns: 500 },
    );
  });
});
