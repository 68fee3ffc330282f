// Loading a model directory through a reader (files in Node, URLs in the browser): the checks of
// runtime/modeldir.py and runtime/model.py, in the same order and with the same messages.

import { HybridError, isInteger, show } from './errors.js';
import { checkGraph, pickVariant, readConfig } from './contract.js';
import { checkModelBytes } from './onnxfile.js';
import { tokenizerFromJson } from './tokenizer.js';
import { Model } from './model.js';

/**
 * @typedef {object} Reader  a model directory's files, each by a name from config.json
 * @property {string} name  the directory or URL, for messages
 * @property {(file: string) => string} where  a file's path or URL, for messages
 * @property {() => Promise<string>} config  config.json's text (one error line when absent)
 * @property {(file: string) => Promise<boolean>} exists
 * @property {(file: string) => Promise<Uint8Array>} bytes
 */

const OPTIONS = ['variant', 'threads', 'ort', 'executionProviders', 'reader', 'attach', 'ioBinding'];

/** The `ioBinding` option: Node's C API stepper (node.js) or not; accepted everywhere, so that one
 * call serves Node and the browser (where generation always runs on session.run). */
export function ioBindingOption(value = true) {
  if (typeof value !== 'boolean') throw new HybridError(`ioBinding must be true or false, got ${show(value)}`);
  return value;
}

function parseJson(text, where) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HybridError(`${where}: malformed JSON (${String(e.message).split('\n')[0]})`);
  }
}

const utf8 = (bytes, where) => {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new HybridError(`${where}: not UTF-8 text`);
  }
};

/**
 * Load one variant of a model directory.
 * @param {Reader} reader @param {any} ort @param {object} opts
 */
export async function loadWithReader(reader, ort, opts = {}) {
  const unknown = Object.keys(opts).filter((k) => !OPTIONS.includes(k));
  if (unknown.length) throw new HybridError(`unknown option ${show(unknown[0])} (options: variant, threads, executionProviders, ioBinding)`);
  const { variant = 'auto', threads = 0, executionProviders } = opts;
  ioBindingOption(opts.ioBinding);
  if (!isInteger(threads) || threads < 0) throw new HybridError(`threads must be 0 (onnxruntime's default) or a positive integer, got ${show(threads)}`);
  const cfgWhere = reader.where('config.json');
  const contract = readConfig(parseJson(await reader.config(), cfgWhere), cfgWhere);
  const have = [];
  for (const v of ['fp32', 'int8', 'int4']) if (contract.files[v] && (await reader.exists(contract.files[v]))) have.push(v);
  if (!have.length) throw new HybridError(`${reader.name}: none of the model files listed in config.json exist (${Object.values(contract.files).join(', ')})`);
  const chosen = pickVariant(contract, have, variant, reader.name);
  const tokWhere = reader.where(contract.tokenizer);
  if (!(await reader.exists(contract.tokenizer))) throw new HybridError(`${tokWhere}: tokenizer file not found`);
  const tokenizer = tokenizerFromJson(parseJson(utf8(await reader.bytes(contract.tokenizer), tokWhere), tokWhere), tokWhere);
  if (tokenizer.vocabSize !== contract.model.vocab_size) {
    throw new HybridError(`${tokWhere}: vocabulary of ${tokenizer.vocabSize} tokens, but the model has ${contract.model.vocab_size}`);
  }
  const file = contract.files[chosen];
  const where = reader.where(file);
  const bytes = await reader.bytes(file);
  checkModelBytes(bytes, where);
  let session;
  try {
    session = await ort.InferenceSession.create(bytes, {
      executionProviders,
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3,
      // Masked attention scores are -inf: exp() of them goes through denormals, which make
      // Softmax several times slower on x86; flushing them changes no logit that matters.
      extra: { session: { set_denormal_as_zero: '1' } },
    });
  } catch (e) {
    const first = String(e?.message ?? e).trim().split('\n')[0];
    throw new HybridError(`${where}: onnxruntime cannot load this model (${first.slice(0, 200)})`);
  }
  checkGraph(contract, session, where);
  const model = new Model({ ort, session, contract, tokenizer, variant: chosen, name: reader.name });
  // `attach` (node.js) gives the model a second engine over the same bytes: the C API stepper.
  if (opts.attach) {
    try {
      await opts.attach(model, bytes, threads, where);
    } catch (e) {
      await session.release().catch(() => {});
      throw e;
    }
  }
  return model;
}
