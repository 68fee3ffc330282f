// The model directory contract (docs/model-directory.md, format `hybrid-onnx`): which config.json
// a reader accepts, which files it names, which tensors a stream carries and which inputs are
// made afresh for every call. Everything that depends on format_version lives here, so a new
// version changes this module only. Checks and messages follow runtime/modeldir.py.

import { HybridError, show } from './errors.js';

export const FORMAT = 'hybrid-onnx';
// 1: the graph carries a float past_mask [batch, mem_len] itself (in `state`, returns present_mask).
// 2: it takes onnxruntime-genai's int64 attention_mask [batch, total_sequence_length] instead; the
//    reader keeps the memory's occupancy (maskLen = mem_len slots) and feeds [mask, ones].
// 3: the attention memory is a ring of ringLen = mem_len + 1 slots, written in place; the graph
//    reads only the attention_mask's length, from the stream's length (ringMaskLength).
export const FORMAT_VERSIONS = [1, 2, 3];
export const ATTENTION_MASK = 'attention_mask';
export const VARIANTS = ['fp32', 'int8', 'int4'];
// `auto` takes the first variant present in this order (as the Python runtime).
export const AUTO_ORDER = ['int8', 'fp32', 'int4'];

function need(ok, where, msg) {
  if (!ok) throw new HybridError(`${where}: ${msg}`);
}

/**
 * A file name from config.json, checked on its text alone: relative, inside the directory
 * (no '..', no absolute path in either syntax, no NUL). Readers check links on top (node.js).
 * @param {unknown} name @param {string} where
 */
export function checkFileName(name, where) {
  need(typeof name === 'string' && name.length > 0, where, `file name ${show(name)} must be a non-empty string`);
  const why = name.includes('\0') ? 'holds a NUL byte'
    : /^[\\/]|^[A-Za-z]:|^\w+:\/\//.test(name) ? 'is an absolute path or URL'
      : name.split(/[\\/]/).includes('..') ? "climbs out with '..'"
        : null;
  need(why === null, where, `refusing file name ${show(name)} from config.json: it ${why}`);
  return name;
}

const isDims = (shape) => Array.isArray(shape) && shape.length >= 2 && shape[0] === 'batch'
  && shape.slice(1).every((d) => Number.isSafeInteger(d) && d >= 0);

/**
 * Check a parsed config.json against the contract; returns what a reader needs.
 * @param {unknown} cfg @param {string} where  the config file's name, for messages
 */
export function readConfig(cfg, where) {
  need(cfg !== null && typeof cfg === 'object' && !Array.isArray(cfg), where, 'expected a JSON object');
  const fmt = cfg.format;
  if (fmt === 'hybrid-run') {
    throw new HybridError(`${where}: is a training run, not an exported model; export it first: hybrid export RUN_DIR --out MODEL_DIR`);
  }
  need(fmt === FORMAT, where, `unknown format ${show(fmt)} (this reader reads ${show(FORMAT)})`);
  const version = cfg.format_version;
  need(FORMAT_VERSIONS.includes(version), where,
    `format_version ${show(version)} is not supported (this reader reads ${FORMAT} version ${FORMAT_VERSIONS.join(', ')})`);
  const model = cfg.model;
  need(model && typeof model === 'object' && Number.isSafeInteger(model.vocab_size) && model.vocab_size > 0,
    where, "'model' must be an object with a positive integer vocab_size");
  need(cfg.metric === 'bpc' || cfg.metric === 'ppl', where, `'metric' must be 'bpc' or 'ppl', got ${show(cfg.metric)}`);
  const files = cfg.files;
  need(files && typeof files === 'object' && !Array.isArray(files) && Object.keys(files).length > 0
    && Object.values(files).every((v) => typeof v === 'string'), where, "'files' must map variants to file names");
  const unknown = Object.keys(files).filter((k) => !VARIANTS.includes(k));
  need(unknown.length === 0, where, `'files' has unknown variants ${show(unknown.sort())} (known: ${VARIANTS.join(', ')})`);
  for (const name of Object.values(files)) checkFileName(name, where);
  const tokenizer = checkFileName(cfg.tokenizer ?? 'tokenizer.json', where);
  const mem = attentionMask(cfg, version, where);
  const maskLen = version === 2 ? mem : null;
  const ringLen = version >= 3 && mem ? mem + 1 : null;
  need(Array.isArray(cfg.state), where, "'state' must be a list");
  const state = cfg.state.map((s, i) => {
    need(s && typeof s === 'object' && typeof s.input === 'string' && typeof s.output === 'string'
      && isDims(s.shape) && (s.dtype ?? 'float32') === 'float32', where,
    `state[${i}] must have input, output, dtype float32 and shape ['batch', sizes...]`);
    return { input: s.input, output: s.output, shape: s.shape.slice(1), size: s.shape.slice(1).reduce((a, b) => a * b, 1) };
  });
  // Versions 2 and 3: the memory holds mem_len slots (2) or a ring of mem_len + 1 (3).
  const slots = maskLen ?? ringLen;
  need(!slots || state.every((s) => !isMemory(s) || (s.shape.length === 3 && s.shape[1] === slots)),
    where, `the attention memory's key/value state must hold ${slots} slots (model.mem_len = ${mem})`);
  return { version, model, metric: cfg.metric, files: { ...files }, tokenizer, state, maskLen, ringLen };
}

/** The attention_mask of versions 2 and 3: int64, only with an attention memory; returns mem_len,
 * or null when the graph takes no mask (version 1, or no attention memory). */
function attentionMask(cfg, version, where) {
  const inputs = cfg.inputs ?? {};
  need(inputs && typeof inputs === 'object' && !Array.isArray(inputs), where, "'inputs' must be an object");
  if (!(ATTENTION_MASK in inputs)) return null;
  const spec = inputs[ATTENTION_MASK], mem = cfg.model.mem_len;
  need(version >= 2, where, `${show(ATTENTION_MASK)} is an input of version 2 graphs, this is version ${version}`);
  need(spec && spec.dtype === 'int64', where, `inputs.${ATTENTION_MASK} must be int64`);
  need(Number.isSafeInteger(mem) && mem > 0, where, `a graph with an ${ATTENTION_MASK} needs model.mem_len > 0, got ${show(mem)}`);
  return mem;
}

/** An attention block's key or value memory (the ring a version-3 graph writes in place). */
export function isMemory(spec) {
  return /\.(key|value)$/.test(spec.input);
}

/** The graph inputs a call feeds besides input_ids and the carried state. */
export function extraInputNames(contract) {
  return contract.maskLen || contract.ringLen ? [ATTENTION_MASK] : [];
}

/**
 * Version 3's attention_mask length before a call, from the stream's length: the length itself
 * below ringLen, then ringLen + length mod ringLen (the graph needs only the length modulo
 * ringLen once the memory is full), so the mask stays shorter than 2 ringLen + the call.
 */
export function ringMaskLength(length, ringLen) {
  return length < ringLen ? length : ringLen + (length % ringLen);
}

/**
 * Version 2's attention_mask for a call of T tokens: per row the memory's occupancy (`mask`,
 * batch x maskLen of 0/1) then T ones, as int64 [batch, maskLen + T]; and the occupancy after
 * the call, the last maskLen entries of each row.
 */
export function attentionMaskFeed(mask, batch, maskLen, T) {
  const L = maskLen + T;
  const full = new BigInt64Array(batch * L).fill(1n);
  const next = new Uint8Array(batch * maskLen);
  for (let b = 0; b < batch; b++) {
    for (let j = 0; j < maskLen; j++) full[b * L + j] = mask[b * maskLen + j] ? 1n : 0n;
    for (let j = 0; j < maskLen; j++) next[b * maskLen + j] = Number(full[b * L + T + j]);
  }
  return { full, next, dims: [batch, L] };
}

/** Version 2's one-token attention_mask [occupancy, 1] (a BigInt64Array of maskLen + 1), loaded
 * from a state's occupancy (maskLen of 0/1); returns whether the memory is full. */
export function loadStepMask(mask, maskLen, occupancy) {
  for (let j = 0; j < maskLen; j++) mask[j] = occupancy[j] ? 1n : 0n;
  mask[maskLen] = 1n;
  return occupancy.every((x) => x);
}

/** The step mask after one token: the memory is the last maskLen of [mask, 1]; returns whether full. */
export function shiftStepMask(mask) {
  mask.copyWithin(0, 1);
  return mask.every((x) => x === 1n);
}

/** The occupancy (Uint8Array of maskLen) that a step mask holds, as a state carries it. */
export function stepMaskOccupancy(mask, maskLen) {
  return Uint8Array.from(mask.subarray(0, maskLen), Number);
}

/**
 * Pick a variant among `have` (those whose file exists) as the Python runtime does.
 * @param {ReturnType<typeof readConfig>} contract @param {string[]} have @param {unknown} variant @param {string} where
 */
export function pickVariant(contract, have, variant, where) {
  if (variant === 'auto') {
    const v = AUTO_ORDER.find((x) => have.includes(x));
    if (!v) throw new HybridError(`${where}: none of the model files listed in config.json exist`);
    return v;
  }
  if (!VARIANTS.includes(variant)) throw new HybridError(`unknown variant ${show(variant)} (choose auto, ${VARIANTS.join(', ')})`);
  if (!have.includes(variant)) {
    const listed = contract.files[variant];
    const why = listed ? `${listed} is missing` : 'it was not exported';
    throw new HybridError(`${where}: no ${variant} model (${why}); available: ${have.join(', ') || 'none'}`);
  }
  return variant;
}

/**
 * Check the loaded graph's inputs and outputs against config.json.
 * @param {{inputNames: readonly string[], outputNames: readonly string[], inputMetadata?: any[]}} session
 */
export function checkGraph(contract, session, where) {
  const inputs = new Set(session.inputNames);
  const outputs = new Set(session.outputNames);
  const wantIn = ['input_ids', ...contract.state.map((s) => s.input), ...extraInputNames(contract)];
  const wantOut = ['logits', ...contract.state.map((s) => s.output)];
  const missing = [...wantIn.filter((n) => !inputs.has(n)), ...wantOut.filter((n) => !outputs.has(n))];
  const extra = [...inputs].filter((n) => !wantIn.includes(n));
  if (missing.length || extra.length) {
    throw new HybridError(`${where}: graph does not match config.json (missing ${show(missing.slice(0, 3))}, unexpected inputs ${show(extra.slice(0, 3))})`);
  }
  for (const meta of session.inputMetadata ?? []) {
    const spec = contract.state.find((s) => s.input === meta.name);
    if (!spec || !meta.isTensor || !Array.isArray(meta.shape)) continue;
    const fixed = meta.shape.slice(1);
    if (fixed.length !== spec.shape.length || fixed.some((g, i) => typeof g === 'number' && g !== spec.shape[i])) {
      throw new HybridError(`${where}: state ${show(spec.input)} is ${show(['batch', ...fixed])} in the graph but ${show(['batch', ...spec.shape])} in config.json`);
    }
  }
}
