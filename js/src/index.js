// The environment-neutral entry: bring your own onnxruntime module and reader.
//   import { loadModel } from 'hybrid-onnx/core';
//   const model = await loadModel(reader, { ort });
// Node: src/node.js (files, onnxruntime-node); browser: src/browser.js (URLs, onnxruntime-web).

export { HybridError } from './errors.js';
export { FORMAT, FORMAT_VERSIONS, VARIANTS, readConfig } from './contract.js';
export { ByteTokenizer, WordTokenizer, ByteDecoder, WordDecoder, tokenizerFromJson } from './tokenizer.js';
export { Rng, StopFilter, checkSampling, filteredProbs, sample } from './sampling.js';
export { Model, Stepper } from './model.js';
export { Session } from './session.js';
export { evaluateTokens } from './evaluate.js';
export { loadWithReader } from './load.js';
export { urlReader } from './url-reader.js';

import { HybridError } from './errors.js';
import { loadWithReader } from './load.js';
import { urlReader } from './url-reader.js';

/**
 * Load a model directory with an injected onnxruntime module: `source` is a reader or a URL.
 * @param {string|URL|import('./load.js').Reader} source
 * @param {{ort: any, variant?: string, threads?: number, executionProviders?: string[]}} opts
 */
export async function loadModel(source, opts = {}) {
  if (!opts || !opts.ort) throw new HybridError('loadModel() needs the onnxruntime module as the ort option (or import hybrid-onnx in Node or a browser)');
  const reader = typeof source === 'string' || source instanceof URL ? urlReader(source) : source;
  return loadWithReader(reader, opts.ort, opts);
}
