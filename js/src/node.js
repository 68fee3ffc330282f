// Node.js entry: model directories as file paths, onnxruntime-node as the engine.
//   import { loadModel } from 'hybrid-onnx';
//   const model = await loadModel('models/hybrid-tiny', { variant: 'int8', threads: 1 });

import * as ortNode from 'onnxruntime-node';
import { HybridError } from './errors.js';
import { ioBindingOption, loadWithReader } from './load.js';
import { dirReader } from './dir-reader.js';
import { createSession, loadCapi } from './ort-capi.js';
import { CapiStepper } from './capi-stepper.js';

export * from './index.js';
export { dirReader } from './dir-reader.js';

/**
 * Load an exported model directory from disk. Generation steps run on onnxruntime's C API with
 * IOBinding (capi-stepper.js; `model.stepperKind` is 'capi') unless `ioBinding: false`, another
 * `ort` module or another execution provider is given, or the C API cannot be loaded here:
 * then on onnxruntime-node's session.run ('binding').
 * @param {string} dir
 * @param {{variant?: string, threads?: number, ort?: any, executionProviders?: string[], ioBinding?: boolean}} [opts]
 */
export async function loadModel(dir, opts = {}) {
  const { ort = ortNode, executionProviders = ['cpu'], ...rest } = opts ?? {};
  const ioBinding = ioBindingOption(rest.ioBinding);
  const cpuOnly = Array.isArray(executionProviders) && executionProviders.length === 1 && executionProviders[0] === 'cpu';
  const capi = ioBinding && ort === ortNode && cpuOnly ? await loadCapi().catch(() => null) : null;
  const attach = capi ? (model, bytes, threads, where) => attachCapi(capi, model, bytes, threads, where) : undefined;
  return loadWithReader(dirReader(dir), ort, { ...rest, executionProviders, attach });
}

// A model dropped without release(): its C API session goes with it (steppers first).
const dropped = new FinalizationRegistry(({ capi, session, handles }) => {
  for (const h of handles) h.free();
  capi.fns.ReleaseSession(session);
});

/** The model's second session, on the C API, over the same bytes; its steppers are CapiSteppers. */
function attachCapi(capi, model, bytes, threads, where) {
  let session;
  try {
    session = createSession(capi, bytes, threads);
  } catch (e) {
    throw new HybridError(`${where}: ${e.message}`);
  }
  const handles = new Set();
  Object.assign(model, { capi, capiSession: session, nativeHandles: handles, stepperKind: 'capi' });
  model.makeStepper = (m, state) => new CapiStepper(m, state);
  const token = {};
  dropped.register(model, { capi, session, handles }, token);
  model.releaseNative = () => {
    dropped.unregister(token);
    for (const h of handles) h.free();
    handles.clear();
    capi.fns.ReleaseSession(session);
    model.makeStepper = null;
    model.releaseNative = null;
  };
}
