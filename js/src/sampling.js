// Sampling and stop strings, as runtime/generate.py: temperature, then top-k (ties at the k-th
// value stay), then top-p (the most likely token always stays), then one uniform draw inverted
// through the CDF. Temperature 0 (or top_k 1) is argmax. The random numbers come from a small
// seeded generator (xoshiro128**), so a seed reproduces a generation on the same model file in
// every JavaScript engine; they are not numpy's, so a seed gives other text than in Python.

import { HybridError, isInteger, isNumber, show } from './errors.js';

/**
 * Checked sampling options with the Python runtime's defaults and messages.
 * @param {object} [opts]
 */
export function checkSampling(opts = {}) {
  if (opts === null || typeof opts !== 'object') throw new HybridError(`options must be an object, got ${show(opts)}`);
  const known = ['maxTokens', 'temperature', 'topK', 'topP', 'seed', 'stop', 'final'];
  const unknown = Object.keys(opts).filter((k) => !known.includes(k));
  if (unknown.length) throw new HybridError(`unknown option ${show(unknown[0])} (options: ${known.join(', ')})`);
  const { maxTokens = 200, temperature = 0.8, topK = 0, topP = 1.0, seed = null, stop = [] } = opts;
  const bad = (msg) => { throw new HybridError(msg); };
  if (!isInteger(maxTokens) || maxTokens <= 0) bad(`maxTokens must be a positive integer, got ${show(maxTokens)}`);
  if (!isNumber(temperature) || !(temperature >= 0 && temperature < Infinity)) bad(`temperature must be >= 0 (0 = greedy), got ${show(temperature)}`);
  if (!isInteger(topK) || topK < 0) bad(`topK must be an integer >= 0 (0 = off), got ${show(topK)}`);
  if (!isNumber(topP) || !(topP > 0 && topP <= 1)) bad(`topP must be in (0, 1] (1 = off), got ${show(topP)}`);
  if (seed !== null && seed !== undefined && (!isInteger(seed) || seed < 0)) bad(`seed must be a non-negative integer, got ${show(seed)}`);
  let stops = stop ?? [];
  if (typeof stops === 'string') stops = [stops];
  if (!Array.isArray(stops)) bad(`stop must be a string or a list of strings, got ${show(stop)}`);
  if (!stops.every((s) => typeof s === 'string' && s.length > 0)) bad('stop strings must be non-empty strings');
  return { maxTokens, temperature, topK, topP, seed: seed ?? null, stop: stops.slice() };
}

/** Index of the largest value (the first on ties), as numpy's argmax. */
export function argmax(x) {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** The distribution sample() draws from (Float64Array, sums to 1). */
export function filteredProbs(logits, temperature = 1.0, topK = 0, topP = 1.0) {
  const V = logits.length;
  let m = -Infinity;
  for (let i = 0; i < V; i++) if (logits[i] > m) m = logits[i];
  const x = new Float64Array(V);
  for (let i = 0; i < V; i++) x[i] = (logits[i] - m) / temperature; // max first: never inf - inf
  if (topK > 0 && topK < V) {
    const kth = Float64Array.from(x).sort()[V - topK];
    for (let i = 0; i < V; i++) if (!(x[i] >= kth)) x[i] = -Infinity;
  }
  let xm = -Infinity;
  for (let i = 0; i < V; i++) if (x[i] > xm) xm = x[i];
  const p = new Float64Array(V);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += (p[i] = Math.exp(x[i] - xm));
  for (let i = 0; i < V; i++) p[i] /= sum;
  if (topP < 1.0) {
    const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a] || a - b); // stable, most likely first
    const q = new Float64Array(V);
    let before = 0, kept = 0;
    for (const i of order) {
      if (!(before < topP)) break; // mass before this token already reaches top_p
      before += p[i];
      q[i] = p[i];
      kept += p[i];
    }
    for (let i = 0; i < V; i++) p[i] = q[i] / kept;
  }
  return p;
}

/** One token id from next-token logits; `rng` is a Rng. */
export function sample(logits, temperature, topK, topP, rng) {
  if (temperature === 0 || topK === 1) return argmax(logits);
  const p = filteredProbs(logits, temperature, topK, topP);
  const cdf = new Float64Array(p.length);
  let c = 0;
  for (let i = 0; i < p.length; i++) cdf[i] = (c += p[i]);
  const u = rng.random() * cdf[cdf.length - 1];
  let lo = 0, hi = cdf.length; // first index whose cdf exceeds u (searchsorted side='right')
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cdf[mid] <= u) lo = mid + 1;
    else hi = mid;
  }
  return Math.min(lo, p.length - 1);
}

/** xoshiro128** seeded through splitmix32 from a non-negative integer seed (or at random). */
export class Rng {
  constructor(seed = null) {
    if (seed === null) seed = Math.floor(Math.random() * 2 ** 52);
    let z = (seed % 2 ** 32) >>> 0;
    const hi = Math.floor(seed / 2 ** 32) >>> 0;
    const mix = () => {
      z = (z + 0x9e3779b9) | 0;
      let t = z ^ (z >>> 16);
      t = Math.imul(t, 0x21f0aaad);
      t ^= t >>> 15;
      t = Math.imul(t, 0x735a2d97);
      return (t ^ (t >>> 15)) >>> 0;
    };
    this.s = new Uint32Array([mix(), mix() ^ hi, mix(), mix()]);
  }

  next32() {
    const s = this.s;
    const r = Math.imul(((Math.imul(s[1], 5) << 7) | (Math.imul(s[1], 5) >>> 25)), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t;
    s[3] = (s[3] << 11) | (s[3] >>> 21);
    return r;
  }

  /** A double in [0, 1) with 53 random bits. */
  random() {
    return ((this.next32() >>> 5) * 67108864 + (this.next32() >>> 6)) / 9007199254740992;
  }
}

/** Cuts generated text at the first stop string; push() returns what is safe to show, holding
 * back anything that could still become the start of a stop string. */
export class StopFilter {
  constructor(stops) {
    this.stops = stops.filter((s) => s);
    this.pending = '';
    this.stopped = false;
  }

  push(text) {
    if (this.stopped) return '';
    this.pending += text;
    if (!this.stops.length) {
      const out = this.pending;
      this.pending = '';
      return out;
    }
    const hits = this.stops.map((s) => this.pending.indexOf(s)).filter((i) => i >= 0);
    if (hits.length) {
      this.stopped = true;
      const out = this.pending.slice(0, Math.min(...hits));
      this.pending = '';
      return out;
    }
    let hold = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, this.pending.length); n > hold; n--) {
        if (this.pending.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    const cut = this.pending.length - hold;
    const out = this.pending.slice(0, cut);
    this.pending = this.pending.slice(cut);
    return out;
  }

  flush() {
    const out = this.stopped ? '' : this.pending;
    this.pending = '';
    return out;
  }
}
