// Node.js entry: model directories as file paths, onnxruntime-node as the engine.
//   import { loadModel } from 'hybrid-onnx';
//   const model = await loadModel('models/hybrid-tiny', { variant: 'int8', threads: 1 });

import * as ortNode from 'onnxruntime-node';
import { loadWithReader } from './load.js';
import { dirReader } from './dir-reader.js';

export * from './index.js';
export { dirReader } from './dir-reader.js';

/**
 * Load an exported model directory from disk.
 * @param {string} dir @param {{variant?: string, threads?: number, ort?: any, executionProviders?: string[]}} [opts]
 */
export async function loadModel(dir, opts = {}) {
  const { ort = ortNode, executionProviders = ['cpu'], ...rest } = opts ?? {};
  return loadWithReader(dirReader(dir), ort, { ...rest, executionProviders });
}
