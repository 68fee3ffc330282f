// A stateful stream, as runtime/session.py: feed text as it arrives, read the next-token
// distribution, generate. Word models hold back a trailing word without whitespace after it (it
// may be the first half of a word) and a trailing "\r" (it may be the first half of "\r\n"); an
// empty prompt starts from a line break (byte models) or `<eos>` (word models). Generated text
// comes out whole: a UTF-8 character split across two stream() calls comes out in the second.

import { HybridError, isInteger, show } from './errors.js';
import { Rng, StopFilter, checkSampling, sample } from './sampling.js';
import { isSpace } from './tokenizer.js';

export class Session {
  constructor(model, { segment = 128 } = {}) {
    if (!isInteger(segment) || segment <= 0) throw new HybridError(`segment must be a positive integer, got ${show(segment)}`);
    this.model = model;
    this.tokenizer = model.tokenizer;
    this.segment = segment;
    this.lastStats = {};
    this.stepper = null; // made on first generation, reused after
    this.busy = false;
    this.reset();
  }

  /** Back to a fresh stream (zero state). */
  reset() {
    this.guard();
    this.state = this.model.initialState(1);
    this.logits = null; // next-token logits after the last token fed
    this.nTokens = 0;
    this.lastToken = null;
    this.partial = '';
    this.decoder = null; // the generated text's detokenizer, kept across stream() calls
    this.afterSpace = false; // word models: the text fed last ended in whitespace
  }

  guard() {
    if (this.busy) throw new HybridError('this session is busy (a feed or a generation is still running); await it first');
  }

  async exclusive(fn) {
    this.guard();
    this.busy = true;
    try {
      return await fn();
    } finally {
      this.busy = false;
    }
  }

  /** Append text to the stream; resolves to the number of tokens fed now. */
  feed(text) {
    if (typeof text !== 'string') throw new HybridError(`feed() takes a string, got ${typeof text}`);
    return this.exclusive(() => this.feedText(text));
  }

  async feedText(text) {
    if (this.tokenizer.kind === 'word') {
      text = this.partial + text;
      let cut = text.length;
      while (cut > 0 && !isSpace(text[cut - 1])) cut--;
      if (cut > 0 && text[cut - 1] === '\r') cut--; // "\r" then "\n" in the next feed is one line break
      [text, this.partial] = [text.slice(0, cut), text.slice(cut)];
    }
    const n = await this.feedIds(this.tokenizer.encode(text, false));
    if (text) this.afterSpace = !this.partial && isSpace(text[text.length - 1]);
    this.decoder = null;
    return n;
  }

  /** Append token ids to the stream; resolves to how many. */
  feedTokens(ids) {
    const arr = tokenIds(ids, this.model.vocabSize);
    return this.exclusive(() => this.feedIds(arr));
  }

  async feedIds(ids) {
    if (ids.length === 0) return 0;
    const V = this.model.vocabSize;
    let logits, t = 0;
    for (let p = 0; p < ids.length; p += this.segment) {
      const piece = ids.subarray(p, p + this.segment);
      ({ logits, state: this.state } = await this.model.forward(piece, 1, this.state));
      t = piece.length;
    }
    this.logits = logits.slice((t - 1) * V, t * V);
    this.nTokens += ids.length;
    this.lastToken = ids[ids.length - 1];
    this.decoder = null;
    this.afterSpace = false;
    return ids.length;
  }

  /** What generation feeds first: a held partial word, else (nothing fed yet) the start of a line. */
  pendingIds() {
    if (this.partial) return this.tokenizer.encode(this.partial, false);
    if (this.logits === null) return Int32Array.of(this.tokenizer.kind === 'word' ? this.tokenizer.eosId : 10);
    return new Int32Array(0);
  }

  async start() {
    if (this.partial) {
      const text = this.partial;
      this.partial = '';
      await this.feedIds(this.tokenizer.encode(text, false));
      this.afterSpace = isSpace(text[text.length - 1]);
    } else if (this.logits === null) {
      await this.feedIds(this.pendingIds());
    }
  }

  /** log P(next token) over the vocabulary (Float64Array), given everything fed so far. Reading
   * changes nothing: a held partial word (or the start of a line) runs on a copy of the state. */
  nextTokenLogprobs() {
    return this.exclusive(async () => {
      let logits = this.logits;
      const pending = this.pendingIds();
      if (pending.length) {
        let state = this.state, out, t = 0;
        const V = this.model.vocabSize;
        for (let p = 0; p < pending.length; p += this.segment) {
          const piece = pending.subarray(p, p + this.segment);
          ({ logits: out, state } = await this.model.forward(piece, 1, state));
          t = piece.length;
        }
        logits = out.subarray((t - 1) * V, t * V);
      }
      let m = -Infinity, s = 0;
      for (const v of logits) if (v > m) m = v;
      for (const v of logits) s += Math.exp(v - m);
      const lse = m + Math.log(s);
      return Float64Array.from(logits, (v) => v - lse);
    });
  }

  /** The generated text as one string; options as stream(). */
  async generate(opts = {}) {
    let out = '';
    for await (const piece of this.stream(opts)) out += piece;
    return out;
  }

  /**
   * Generate up to maxTokens, yielding text as it comes; ends early at a stop string (not
   * yielded). The generated tokens stay in the stream's state, also when the caller stops early.
   * A character cut off at the end is held for the next call, or with `final` yielded as U+FFFD.
   * @param {{maxTokens?: number, temperature?: number, topK?: number, topP?: number, seed?: number|null, stop?: string|string[], final?: boolean}} [opts]
   */
  stream(opts = {}, { feedFirst = null } = {}) {
    const cfg = checkSampling(opts);
    this.guard();
    return this.pieces(cfg, Boolean(opts.final), feedFirst);
  }

  /** Generated token ids (no detokenizing, no stop strings). */
  generateTokens(opts = {}) {
    if (opts && opts.stop !== undefined) throw new HybridError('generateTokens() takes no stop strings (use stream())');
    const cfg = checkSampling(opts);
    return this.exclusive(async () => {
      await this.start();
      const ids = [];
      for await (const t of this.tokens(cfg)) ids.push(t);
      return ids;
    });
  }

  async *tokens(cfg) {
    const rng = new Rng(cfg.seed);
    if (this.stepper === null) this.stepper = this.model.stepper(this.state);
    else this.stepper.load(this.state);
    const stepper = this.stepper;
    let logits = this.logits, n = 0;
    const t0 = performance.now();
    try {
      for (let i = 0; i < cfg.maxTokens; i++) {
        const token = sample(logits, cfg.temperature, cfg.topK, cfg.topP, rng);
        logits = await stepper.step(token);
        n += 1;
        this.lastToken = token;
        yield token;
      }
    } finally {
      const ms = performance.now() - t0;
      this.state = stepper.snapshot();
      this.logits = logits.slice();
      this.nTokens += n;
      this.lastStats = { tokens: n, seconds: ms / 1e3, ms_per_token: ms / Math.max(n, 1), tokens_per_s: ms > 0 ? (1e3 * n) / ms : 0, stopped: false };
    }
  }

  async *pieces(cfg, final, feedFirst) {
    this.guard();
    this.busy = true;
    const stops = new StopFilter(cfg.stop);
    let tokens = null;
    try {
      if (feedFirst !== null) await this.feedText(feedFirst);
      await this.start();
      if (this.decoder === null) {
        this.decoder = this.tokenizer.decoder();
        if (this.tokenizer.kind === 'word') this.decoder.lineStart = this.lastToken === this.tokenizer.eosId || this.afterSpace;
      }
      const decoder = this.decoder;
      tokens = this.tokens(cfg);
      for await (const token of tokens) {
        const piece = stops.push(decoder.push(token));
        if (piece) yield piece;
        if (stops.stopped) break;
      }
      const tail = stops.push(final ? decoder.flush() : '') + stops.flush();
      if (tail) yield tail;
    } finally {
      if (tokens) await tokens.return(); // runs tokens' cleanup now: the state is saved before we return
      this.lastStats.stopped = stops.stopped;
      if (final) this.decoder = null;
      this.busy = false;
    }
  }
}

/** Token ids as an Int32Array, or a one-line error (not integers, out of range). */
function tokenIds(ids, vocabSize) {
  if (typeof ids === 'string') throw new HybridError('token ids must be integers, got a string; feed() takes text');
  if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') throw new HybridError(`token ids must be an array of integers, got ${show(ids)}`);
  const arr = Array.from(ids, (x) => (typeof x === 'bigint' ? Number(x) : x));
  const bad = arr.find((x) => !isInteger(x));
  if (bad !== undefined) throw new HybridError(`token ids must be integers, got ${show(bad)}`);
  checkTokenRange(arr, vocabSize);
  return Int32Array.from(arr);
}

export function checkTokenRange(ids, vocabSize) {
  if (!ids.length) return;
  let lo = Infinity, hi = -Infinity;
  for (const x of ids) {
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  if (lo < 0 || hi >= vocabSize) throw new HybridError(`token ids must be in [0, ${vocabSize}), got ${lo}..${hi}`);
}
