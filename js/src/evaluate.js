// Evaluation with the protocol of `hybrid eval` (runtime/evaluate.py), so the numbers match:
//
// * streams (default): the tokens are cut into B contiguous streams, B = max(1, min(streams,
//   (n-1) // 2)), stream b covering tokens [b*L, (b+1)*L) with L = (n-1) // B and predicting the
//   next one; all B read side by side in segments of T tokens with the state carried.
// * ctx (llama.cpp's perplexity): chunks of N tokens from a fresh state, only positions
//   N/2 .. N-2 scored (predicting the next token); `streams` chunks at a time, segments of T.
//
// bpc = mean NLL in nats / ln 2 (per byte); perplexity = exp(mean NLL).

import { HybridError, isInteger, show } from './errors.js';
import { checkTokenRange } from './session.js';

/** Sum of NLL (nats) of each target under rows of logits [rows, V] (float64 log-sum-exp). */
function addNll(tally, logits, V, rowStart, rowEnd, target) {
  for (let r = rowStart; r < rowEnd; r++) {
    const o = r * V;
    let m = -Infinity;
    for (let j = 0; j < V; j++) if (logits[o + j] > m) m = logits[o + j];
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[o + j] - m);
    tally.nll += Math.log(s) + m - logits[o + target(r)];
    tally.count += 1;
  }
}

export const metricValue = (nll, metric) => (metric === 'bpc' ? nll / Math.LN2 : Math.exp(Math.min(nll, 700)));

/**
 * Score token ids with `model`; returns a JSON-ready object as `hybrid eval --json`.
 * @param {{streams?: number, segment?: number, ctx?: number, maxTokens?: number}} [opts]
 */
export async function evaluateTokens(model, tokens, opts = {}) {
  const known = ['streams', 'segment', 'ctx', 'maxTokens'];
  const unknown = Object.keys(opts ?? {}).filter((k) => !known.includes(k));
  if (unknown.length) throw new HybridError(`unknown option ${show(unknown[0])} (options: ${known.join(', ')})`);
  const { streams = 16, segment = 128, ctx = 0, maxTokens = 0 } = opts;
  for (const [name, v] of [['streams', streams], ['segment', segment]]) {
    if (!isInteger(v) || v <= 0) throw new HybridError(`${name} must be a positive integer, got ${show(v)}`);
  }
  if (!isInteger(ctx) || ctx < 0 || ctx === 1) throw new HybridError(`ctx must be 0 (off) or an integer >= 2, got ${show(ctx)}`);
  if (!isInteger(maxTokens) || maxTokens < 0) throw new HybridError(`maxTokens must be >= 0 (0 = whole text), got ${show(maxTokens)}`);
  checkTokenRange(tokens, model.vocabSize);
  const n = maxTokens ? Math.min(tokens.length, maxTokens + 1) : tokens.length;
  if (n < 2) throw new HybridError(`text: too short to evaluate (${n} token${n !== 1 ? 's' : ''}; need at least 2)`);
  const tally = { nll: 0, count: 0 };
  const t0 = performance.now();
  const info = ctx ? await runCtx(model, tokens, n, streams, segment, ctx, tally) : await runStreams(model, tokens, n, streams, segment, tally);
  const seconds = (performance.now() - t0) / 1e3;
  const nll = tally.nll / Math.max(tally.count, 1);
  return {
    metric: model.metric,
    [model.metric]: metricValue(nll, model.metric),
    nll,
    bits_per_token: nll / Math.LN2,
    tokens: tally.count,
    ...info,
    seconds,
    tokens_per_s: seconds > 0 ? info.tokens_processed / seconds : 0,
    variant: model.variant,
    model: model.name,
  };
}

async function runStreams(model, tokens, n, streams, T, tally) {
  const B = Math.max(1, Math.min(streams, Math.floor((n - 1) / 2)));
  const L = Math.floor((n - 1) / B);
  const V = model.vocabSize;
  let state = model.initialState(B);
  for (let p = 0; p < L; p += T) {
    const t = Math.min(T, L - p);
    const x = new BigInt64Array(B * t);
    for (let b = 0; b < B; b++) for (let j = 0; j < t; j++) x[b * t + j] = BigInt(tokens[b * L + p + j]);
    let logits;
    ({ logits, state } = await model.forward(x, B, state));
    addNll(tally, logits, V, 0, B * t, (r) => tokens[Math.floor(r / t) * L + p + (r % t) + 1]);
  }
  return { protocol: 'streams', streams: B, segment: T, tokens_processed: B * L };
}

async function runCtx(model, tokens, n, streams, T, N, tally) {
  const chunks = Math.floor(n / N);
  if (chunks === 0) throw new HybridError(`text: ${n} tokens is shorter than one ctx chunk of ${N}`);
  const first = Math.floor(N / 2);
  const V = model.vocabSize;
  for (let g = 0; g < chunks; g += streams) {
    const G = Math.min(chunks, g + streams) - g;
    let state = model.initialState(G);
    for (let p = 0; p < N; p += T) {
      const t = Math.min(T, N - p);
      const x = new BigInt64Array(G * t);
      for (let c = 0; c < G; c++) for (let j = 0; j < t; j++) x[c * t + j] = BigInt(tokens[(g + c) * N + p + j]);
      let logits;
      ({ logits, state } = await model.forward(x, G, state));
      // Positions j in [max(p, first), min(p + t, N - 1)) predict token j + 1.
      const lo = Math.max(p, first), hi = Math.min(p + t, N - 1);
      for (let c = 0; c < G && lo < hi; c++) {
        addNll(tally, logits, V, c * t + (lo - p), c * t + (hi - p), (r) => tokens[(g + c) * N + p + (r - c * t) + 1]);
      }
    }
  }
  return { protocol: 'ctx', ctx: N, chunks, streams: Math.min(streams, chunks), segment: T, tokens_processed: chunks * N };
}
