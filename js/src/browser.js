// Browser entry: model directories as URLs, onnxruntime-web (wasm) as the engine. Without a
// bundler, map the bare name in the page (see demo/index.html):
//   <script type="importmap">{"imports": {"onnxruntime-web": "/js/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs"}}</script>

import * as ortWeb from 'onnxruntime-web';
import { loadWithReader } from './load.js';
import { urlReader } from './url-reader.js';

export * from './index.js';

/**
 * Load an exported model directory served at `url`.
 * @param {string|URL} url @param {{variant?: string, threads?: number, ort?: any, executionProviders?: string[], ioBinding?: boolean}} [opts]  ioBinding: accepted, no effect here (Node only)
 */
export async function loadModel(url, opts = {}) {
  const { ort = ortWeb, executionProviders = ['wasm'], ...rest } = opts ?? {};
  return loadWithReader(urlReader(url), ort, { ...rest, executionProviders });
}
