// Byte and word tokenizers with exactly the Python runtime's rules (runtime/tokenizer.py):
// Python's whitespace (str.split) and line breaks (str.splitlines), UTF-8 with surrogateescape,
// U+FFFD for invalid bytes, `<unk>` for unknown words and `<eos>` after each line.

import { HybridError, show } from './errors.js';

export const UNK = '<unk>';
export const EOS = '<eos>';

// Python's str.isspace() characters and str.splitlines() boundaries (all in the BMP).
const SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const BREAK = '\\n\\v\\f\\r\\x1c-\\x1e\\x85\\u2028\\u2029';
const SPACE_RUN = new RegExp(`[${SPACE}]+`);
const IS_SPACE = new RegExp(`^[${SPACE}]$`);
const LINE_END = new RegExp(`\\r\\n|[${BREAK}]`, 'g');
const ENDS_WITH_BREAK = new RegExp(`[${BREAK}]$`);

/** Python's c.isspace() for one UTF-16 unit. */
export const isSpace = (c) => IS_SPACE.test(c);

/** Python's text.split(): words between runs of whitespace. */
export function splitWords(line) {
  return line.split(SPACE_RUN).filter((w) => w.length > 0);
}

/** Python's text.splitlines(): lines without their line break ("\r\n" is one). */
export function splitLines(text) {
  const lines = [];
  let start = 0;
  for (const m of text.matchAll(LINE_END)) {
    lines.push(text.slice(start, m.index));
    start = m.index + m[0].length;
  }
  if (start < text.length) lines.push(text.slice(start));
  return lines;
}

/** UTF-8 bytes of a string; lone surrogates U+DC80..U+DCFF stand for raw bytes (Python's surrogateescape). */
function utf8(text) {
  if (!/[\uD800-\uDFFF]/.test(text)) return new TextEncoder().encode(text);
  const out = [];
  let pos = 0; // in code points, as Python counts positions
  for (let i = 0; i < text.length; i++, pos++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        out.push(...new TextEncoder().encode(text.slice(i, i + 2)));
        i++;
        continue;
      }
    }
    if (c >= 0xdc80 && c <= 0xdcff) out.push(c - 0xdc00);
    else if (c >= 0xd800 && c <= 0xdfff) throw new HybridError(`text has a character that is not valid Unicode at position ${pos}`);
    else out.push(...new TextEncoder().encode(text[i]));
  }
  return Uint8Array.from(out);
}

const decodeUtf8 = (bytes) => new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes);

export class ByteTokenizer {
  constructor() {
    this.kind = 'byte';
    this.vocabSize = 256;
    this.unit = 'byte';
  }

  /** Token ids (Int32Array) of a string or of bytes; eosAtEnd is for WordTokenizer compatibility. */
  encode(text, eosAtEnd = true) {
    if (text instanceof Uint8Array) return Int32Array.from(text);
    if (typeof text !== 'string') throw new HybridError(`text must be a string, got ${typeof text}`);
    return Int32Array.from(utf8(text));
  }

  unknownWords() {
    return [];
  }

  decoder() {
    return new ByteDecoder();
  }

  decode(ids) {
    return decodeUtf8(Uint8Array.from(ids, Number));
  }

  toJSON() {
    return { type: 'byte', vocab_size: 256 };
  }
}

export class WordTokenizer {
  /** @param {string[]} vocab */
  constructor(vocab, unk = UNK, eos = EOS) {
    if (!vocab.includes(unk) || !vocab.includes(eos)) throw new HybridError(`word vocabulary must contain ${show(unk)} and ${show(eos)}`);
    this.index = new Map(vocab.map((w, i) => [w, i]));
    if (this.index.size !== vocab.length) throw new HybridError('word vocabulary has duplicate entries');
    this.kind = 'word';
    this.unit = 'word';
    this.vocab = vocab.slice();
    this.unk = unk;
    this.eos = eos;
    this.unkId = this.index.get(unk);
    this.eosId = this.index.get(eos);
  }

  get vocabSize() {
    return this.vocab.length;
  }

  /** Ids of the words, `<eos>` after each line; eosAtEnd=false leaves out the `<eos>` of a last
   * line that has no line break (a prompt or a piece of a stream, not a whole text). */
  encode(text, eosAtEnd = true) {
    if (typeof text !== 'string') throw new HybridError(`text must be a string, got ${typeof text}`);
    const ids = [];
    for (const line of splitLines(text)) {
      for (const w of splitWords(line)) ids.push(this.index.get(w) ?? this.unkId);
      ids.push(this.eosId);
    }
    if (!eosAtEnd && ids.length && !ENDS_WITH_BREAK.test(text)) ids.pop();
    return Int32Array.from(ids);
  }

  /** Words outside the vocabulary (encoded as `<unk>`), in order of appearance. */
  unknownWords(text) {
    return [...new Set(splitWords(text).filter((w) => !this.index.has(w)))];
  }

  decoder() {
    return new WordDecoder(this);
  }

  decode(ids) {
    return Array.from(ids, (i) => {
      const w = this.vocab[Number(i)];
      return w === this.eos ? '\n' : `${w} `;
    }).join('').replaceAll(' \n', '\n');
  }

  toJSON() {
    return { type: 'word', vocab: this.vocab, unk: this.unk, eos: this.eos };
  }
}

/** Incremental detokenizer for generated bytes: an incomplete UTF-8 character waits for its
 * last byte; invalid sequences become U+FFFD, each piece exactly as Python's incremental decoder
 * with 'replace' gives it. TextDecoder agrees with Python on what is invalid and how many U+FFFD
 * it becomes, but Python also holds back ED A0..BF (a truncated surrogate) until the next byte,
 * where TextDecoder replaces it at once: that one case is held here too. */
export class ByteDecoder {
  constructor() {
    this.utf8 = new TextDecoder('utf-8', { ignoreBOM: true });
    this.one = new Uint8Array(1);
    this.afterED = false; // the decoder holds a lone 0xED
    this.held = -1; // a byte after 0xED not yet given to the decoder
  }

  decode(byte) {
    this.one[0] = byte;
    return this.utf8.decode(this.one, { stream: true });
  }

  push(token) {
    if (this.held >= 0) {
      const b = this.held;
      this.held = -1;
      return this.decode(b) + this.push(token);
    }
    if (this.afterED && token >= 0xa0 && token <= 0xbf) {
      this.held = token;
      this.afterED = false;
      return '';
    }
    this.afterED = token === 0xed;
    return this.decode(token);
  }

  flush() {
    const out = this.held >= 0 ? this.decode(this.held) : '';
    this.held = -1;
    this.afterED = false;
    return out + this.utf8.decode();
  }
}

/** Incremental detokenizer for generated words: a space between words, a line break for `<eos>`. */
export class WordDecoder {
  constructor(tok) {
    this.tok = tok;
    this.lineStart = true;
  }

  push(token) {
    if (token === this.tok.eosId) {
      this.lineStart = true;
      return '\n';
    }
    const sep = this.lineStart ? '' : ' ';
    this.lineStart = false;
    return sep + this.tok.vocab[token];
  }

  flush() {
    return '';
  }
}

/** A tokenizer from tokenizer.json's parsed content. */
export function tokenizerFromJson(obj, source = 'tokenizer.json') {
  const kind = obj && typeof obj === 'object' ? obj.type : undefined;
  if (kind === 'byte') return new ByteTokenizer();
  if (kind === 'word') {
    const vocab = obj.vocab;
    if (!Array.isArray(vocab) || !vocab.every((w) => typeof w === 'string')) throw new HybridError(`${source}: 'vocab' must be a list of strings`);
    return new WordTokenizer(vocab, obj.unk ?? UNK, obj.eos ?? EOS);
  }
  throw new HybridError(`${source}: unknown tokenizer type ${show(kind ?? null)} (expected 'byte' or 'word')`);
}
