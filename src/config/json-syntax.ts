/**
 * A strict JSON (RFC 8259) syntax check that says where the text goes wrong, for
 * config files named `*.json`. `JSON.parse` rejects the same texts but does not always
 * give a position (`Unexpected token ']', ... is not valid JSON`), and YAML, which
 * reads the file afterwards for its positions, would accept a trailing comma. Only
 * the syntax is checked here; no value is built.
 */

export interface JsonSyntaxError {
  /** Offset (UTF-16 code units) of the offending character, or the text's length at its end. */
  offset: number;
  message: string;
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

/** null when `text` is one JSON value (surrounded by whitespace only), else where and why it is not. */
export function checkJsonSyntax(text: string): JsonSyntaxError | null {
  let i = 0;
  const fail = (message: string, at = i): never => {
    throw Object.assign(new Error(message), { offset: at });
  };
  const what = (at: number) => (at >= text.length ? 'the end of the file' : `${JSON.stringify(text[at])}`);
  const ws = () => {
    while (i < text.length && WS.has(text.charCodeAt(i))) i++;
  };
  const literal = (word: string) => {
    if (text.startsWith(word, i)) i += word.length;
    else fail(`unexpected ${what(i)}`);
  };
  const string = () => {
    const start = i;
    i++; // the opening quote
    for (;;) {
      if (i >= text.length) fail('unterminated string', start);
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return;
      }
      if (c < 0x20) fail('control character in a string (write it as an escape, e.g. \\n)');
      if (c === 0x5c) {
        const e = text[i + 1];
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail('bad \\u escape: four hex digits expected');
          i += 6;
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else fail(`bad escape \\${e ?? ''}`);
        continue;
      }
      i++;
    }
  };
  const number = () => {
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m) fail(`unexpected ${what(i)}`);
    i += m![0].length;
  };
  const value = (depth: number): void => {
    if (depth > 512) fail('nested too deeply');
    ws();
    const c = text[i];
    if (c === '{') return container('}', depth, true);
    if (c === '[') return container(']', depth, false);
    if (c === '"') return string();
    if (c === 't') return literal('true');
    if (c === 'f') return literal('false');
    if (c === 'n') return literal('null');
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return number();
    fail(`a value expected, found ${what(i)}`);
  };
  const container = (close: string, depth: number, object: boolean): void => {
    i++; // the opening bracket
    ws();
    if (text[i] === close) {
      i++;
      return;
    }
    for (;;) {
      ws();
      if (object) {
        if (text[i] !== '"') fail(`a key (a string in double quotes) expected, found ${what(i)}`);
        string();
        ws();
        if (text[i] !== ':') fail(`":" expected after the key, found ${what(i)}`);
        i++;
      }
      value(depth + 1);
      ws();
      if (text[i] === close) {
        i++;
        return;
      }
      if (text[i] !== ',') fail(`"," or "${close}" expected, found ${what(i)}`);
      const comma = i;
      i++;
      ws();
      if (text[i] === close) fail(`trailing comma before "${close}" (JSON allows none)`, comma);
    }
  };
  try {
    if (text.charCodeAt(0) === 0xfeff) i = 1; // a byte order mark
    value(0);
    ws();
    if (i < text.length) fail(`unexpected ${what(i)} after the JSON value`);
    return null;
  } catch (err) {
    const offset = (err as { offset?: number }).offset;
    if (offset === undefined) throw err;
    return { offset, message: (err as Error).message };
  }
}
