// Refuse ONNX files that keep tensor data in external files. The JavaScript runtime hands
// onnxruntime the model's bytes, so a `location` in the file would be opened relative to the
// process's working directory (Node) or fail (browser): either way outside the model directory's
// control. The walk follows runtime/safe_onnx.py (initializers, sparse initializers, tensor
// attributes, every subgraph such as a Scan body, functions, training graphs); weights are
// skipped, not parsed. Exports of `hybrid export` never have external data.

import { HybridError, show } from './errors.js';

const MODEL = 0, GRAPH = 1, NODE = 2, ATTR = 3, TENSOR = 4, SPARSE = 5, FUNC = 6, TRAIN = 7, ENTRY = 8;
const CHILDREN = {
  [MODEL]: { 7: GRAPH, 20: TRAIN, 25: FUNC },
  [TRAIN]: { 1: GRAPH, 2: GRAPH },
  [GRAPH]: { 1: NODE, 5: TENSOR, 15: SPARSE },
  [FUNC]: { 7: NODE },
  [NODE]: { 5: ATTR },
  [ATTR]: { 5: TENSOR, 6: GRAPH, 10: TENSOR, 11: GRAPH, 22: SPARSE, 23: SPARSE },
  [SPARSE]: { 1: TENSOR, 2: TENSOR },
  [TENSOR]: { 13: ENTRY },
  [ENTRY]: {},
};
const MAX_DEPTH = 64;

class Malformed extends Error {}

function varint(buf, pos, end) {
  let result = 0, scale = 1;
  for (;;) {
    if (pos >= end || scale > 2 ** 63) throw new Malformed('truncated varint');
    const b = buf[pos++];
    result += (b & 0x7f) * scale; // exact below 2^53, which covers every length in a real file
    if (b < 0x80) return [result, pos];
    scale *= 128;
  }
}

function* fields(buf, start, end) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = varint(buf, pos, end);
    const field = Math.floor(key / 8), wire = key % 8;
    if (field === 0) throw new Malformed('field number 0');
    let value = null;
    if (wire === 0) [value, pos] = varint(buf, pos, end);
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      let n;
      [n, pos] = varint(buf, pos, end);
      value = [pos, pos + n];
      pos += n;
    } else throw new Malformed(`unsupported wire type ${wire}`);
    if (pos > end) throw new Malformed('field runs past the end of its message');
    yield [field, wire, value];
  }
}

const text = (buf, [a, b]) => {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(a, b));
  } catch {
    throw new Malformed('a string field is not UTF-8');
  }
};

/** (tensor name, location) of every tensor in a serialized ModelProto that keeps its data outside. */
export function externalLocations(buf) {
  const found = [];
  const stack = [[MODEL, 0, buf.length, 0]];
  while (stack.length) {
    const [kind, start, end, depth] = stack.pop();
    if (depth > MAX_DEPTH) throw new Malformed(`messages nested deeper than ${MAX_DEPTH}`);
    let name = '';
    const entries = [];
    for (const [field, wire, value] of fields(buf, start, end)) {
      if (wire !== 2) continue;
      const child = CHILDREN[kind][field];
      if (kind === TENSOR && field === 8) name = text(buf, value);
      else if (kind === TENSOR && child === ENTRY) {
        let key = null, val = null;
        for (const [f2, w2, v2] of fields(buf, ...value)) {
          if (w2 === 2 && f2 === 1) key = text(buf, v2);
          else if (w2 === 2 && f2 === 2) val = text(buf, v2);
        }
        if (key === 'location') entries.push(val ?? '');
      } else if (child !== undefined) stack.push([child, value[0], value[1], depth + 1]);
    }
    for (const loc of entries) found.push([name, loc]);
  }
  return found;
}

/** Throw a HybridError unless `bytes` is a well-formed ONNX file without external data. */
export function checkModelBytes(bytes, where) {
  let entries;
  try {
    entries = externalLocations(bytes);
  } catch (e) {
    if (e instanceof Malformed) throw new HybridError(`${where}: not a valid ONNX file (${e.message})`);
    throw e;
  }
  if (entries.length) {
    const [tensor, loc] = entries[0];
    throw new HybridError(`${where}: refusing to load: tensor ${show(tensor)} keeps its data in an external file (${show(loc)}); this runtime loads a model from its own bytes only`);
  }
}
