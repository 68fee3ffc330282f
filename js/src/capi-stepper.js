// Node's token-by-token stepper on onnxruntime's C API (ort-capi.js): the same steps as
// model.js's Stepper, which is its reference (tests/test_js.py holds the two to the same greedy
// text and state), but with IOBinding as the Python runtime's stepper has it. Every buffer is
// bound once into two bindings (one reads state A and writes state B, the other the reverse; a
// version-3 attention memory is one buffer bound as past and present, written in place); a step
// writes the token id, binds the attention_mask of the stream's length (version 3: one cached
// OrtValue per length) and runs. Nothing is copied or allocated per token.

import { HybridError } from './errors.js';
import { ATTENTION_MASK, isMemory, loadStepMask, ringMaskLength, shiftStepMask, stepMaskOccupancy } from './contract.js';
import { streamLength } from './model.js';
import { bind, createBinding, runBinding, sharedArray, tensorValue } from './ort-capi.js';

/** The native objects of one stepper, released once: by release(), the model's release() or the GC. */
class Handles {
  constructor(capi) {
    this.capi = capi;
    this.values = [];
    this.bindings = [];
  }

  value(array, dims) {
    const v = tensorValue(this.capi, array, dims);
    this.values.push(v);
    return v;
  }

  binding(session) {
    const b = createBinding(this.capi, session);
    this.bindings.push(b);
    return b;
  }

  free() {
    const { fns } = this.capi;
    for (const b of this.bindings.splice(0)) fns.ReleaseIoBinding(b);
    for (const v of this.values.splice(0)) fns.ReleaseValue(v);
  }
}

// A stepper the program dropped without release(): its bindings and values go with it. The held
// value keeps the buffers alive until then, so onnxruntime never points at freed memory.
const dropped = new FinalizationRegistry(({ handles, model }) => {
  handles.free();
  model.nativeHandles.delete(handles);
});

export class CapiStepper {
  constructor(model, state) {
    const { capi, contract } = model;
    this.model = model;
    this.vocabSize = model.vocabSize;
    const handles = new Handles(capi);
    this.handles = handles;
    model.nativeHandles.add(handles);
    this.ids = sharedArray(BigInt64Array, 1);
    this.logits = sharedArray(Float32Array, this.vocabSize);
    this.ringLen = contract.ringLen ?? 0;
    this.maskLen = contract.maskLen ?? 0;
    const make = () => contract.state.map((s) => sharedArray(Float32Array, s.size));
    const first = make(), second = make();
    if (this.ringLen) contract.state.forEach((s, i) => { if (isMemory(s)) second[i] = first[i]; });
    this.buffers = [first, second];
    const values = new Map(); // one OrtValue an array: a shared buffer is bound twice
    const ov = (a, dims) => values.get(a) ?? values.set(a, handles.value(a, dims)).get(a);
    const idsValue = ov(this.ids, [1, 1]), logitsValue = ov(this.logits, [1, 1, this.vocabSize]);
    // Version 2: [1, maskLen + 1], [occupancy, 1], shifted in place while the memory fills.
    // Version 3: views of one buffer of ones, [1, length + 1], one OrtValue per length.
    this.mask = sharedArray(BigInt64Array, this.ringLen ? 2 * this.ringLen : this.maskLen + 1).fill(1n);
    this.maskValues = [];
    this.bindings = [[0, 1], [1, 0]].map(([src, dst]) => {
      const b = handles.binding(model.capiSession);
      bind(capi, b, 'input', 'input_ids', idsValue);
      bind(capi, b, 'output', 'logits', logitsValue);
      if (this.maskLen) bind(capi, b, 'input', ATTENTION_MASK, ov(this.mask, [1, this.maskLen + 1]));
      contract.state.forEach((s, i) => {
        bind(capi, b, 'input', s.input, ov(this.buffers[src][i], [1, ...s.shape]));
        bind(capi, b, 'output', s.output, ov(this.buffers[dst][i], [1, ...s.shape]));
      });
      return b;
    });
    dropped.register(this, { handles, model, keep: [this.buffers, this.ids, this.logits, this.mask] }, handles);
    this.turn = 0; // buffers[turn] holds the current state
    this.length = 0;
    this.load(state);
  }

  /** Continue from `state` (copied into the stepper's own buffers). */
  load(state) {
    this.live();
    const cur = this.buffers[this.turn];
    state.tensors.forEach((t, i) => {
      if (t.data.length !== cur[i].length) throw new HybridError(`state ${this.model.contract.state[i].input} has ${t.data.length} values, the stepper holds ${cur[i].length} (batch must be 1)`);
      if (t.data !== cur[i]) cur[i].set(t.data);
    });
    if (this.maskLen) this.maskFull = loadStepMask(this.mask, this.maskLen, state.mask);
    this.length = streamLength(state);
  }

  live() {
    if (!this.handles.bindings.length) throw new HybridError(`${this.model.name}: this stepper was released (or its model was)`);
  }

  /** Feed one token; returns the next-token logits (a view, valid until the next step). */
  step(token) {
    this.live();
    if (!Number.isInteger(token) || token < 0 || token >= this.vocabSize) throw new HybridError(`token ids must be in [0, ${this.vocabSize}), got ${token}`);
    this.ids[0] = BigInt(token);
    const binding = this.bindings[this.turn];
    const { capi, capiSession, name } = this.model;
    try {
      if (this.ringLen) bind(capi, binding, 'input', ATTENTION_MASK, this.maskValue(ringMaskLength(this.length, this.ringLen) + 1));
      runBinding(capi, capiSession, binding);
    } catch (e) {
      throw new HybridError(`${name}: ${e.message}`);
    }
    this.length += 1;
    if (this.maskLen && !this.maskFull) this.maskFull = shiftStepMask(this.mask);
    this.turn ^= 1;
    return this.logits;
  }

  maskValue(L) {
    return (this.maskValues[L] ??= this.handles.value(this.mask.subarray(0, L), [1, L]));
  }

  /** The current state, copied (the stepper's buffers are onnxruntime's). */
  get state() {
    return this.snapshot();
  }

  occupancy() {
    return this.maskLen ? stepMaskOccupancy(this.mask, this.maskLen) : null;
  }

  /** A copy of the current state that later steps leave alone. */
  snapshot() {
    const { ort, contract } = this.model;
    const tensors = this.buffers[this.turn].map((a, i) => new ort.Tensor('float32', a.slice(), [1, ...contract.state[i].shape]));
    return { tensors, length: this.length, mask: this.occupancy() };
  }

  /** Free the native bindings now (later steps fail with one line). */
  release() {
    dropped.unregister(this.handles);
    this.handles.free();
    this.model.nativeHandles.delete(this.handles);
  }
}
