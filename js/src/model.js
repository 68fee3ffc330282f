// An exported model on onnxruntime (Node or web): the graph, its state, and a buffer-reusing
// stepper for generation. The `ort` module is injected (onnxruntime-node or onnxruntime-web);
// everything else is the same code in both.

import { HybridError } from './errors.js';
import { ATTENTION_MASK, attentionMaskFeed, isMemory, loadStepMask, ringMaskLength, shiftStepMask, stepMaskOccupancy } from './contract.js';
import { Session } from './session.js';
import { evaluateTokens } from './evaluate.js';

/** @typedef {{tensors: any[], length: number, mask: Uint8Array|null}} State  tensors in config.json's state order;
 * length: tokens seen; mask: the attention memory's occupancy [batch, maskLen] (version 2 graphs) */

/** A state's stream length, which places a version-3 call in the attention memory's ring. */
export function streamLength(state) {
  if (!Number.isSafeInteger(state.length) || state.length < 0) throw new HybridError(`state.length must be the stream's token count (an integer >= 0), got ${state.length}`);
  return state.length;
}

/** One line for an onnxruntime failure. */
export function ortError(e, where) {
  const first = String(e?.message ?? e).trim().split('\n')[0] || e?.name || 'error';
  return new HybridError(`${where}: onnxruntime failed (${first.slice(0, 200)})`);
}

export class Model {
  /**
   * @param {{ort: any, session: any, contract: any, tokenizer: any, variant: string, name: string}} parts
   */
  constructor({ ort, session, contract, tokenizer, variant, name }) {
    this.ort = ort;
    this.session_ = session;
    this.contract = contract;
    this.tokenizer = tokenizer;
    this.variant = variant;
    this.name = name; // the directory or URL, for messages
    this.outputNames = ['logits', ...contract.state.map((s) => s.output)];
    // Node (node.js) attaches a stepper on onnxruntime's C API with IOBinding; elsewhere, and
    // with ioBinding: false, generation runs on the binding's session.run (Stepper below).
    this.makeStepper = null;
    this.stepperKind = 'binding';
  }

  get vocabSize() {
    return this.contract.model.vocab_size;
  }

  get metric() {
    return this.contract.metric;
  }

  /** Zeros for every state tensor: a fresh stream (an all-zero past_mask is an empty memory). */
  initialState(batch = 1) {
    const tensors = this.contract.state.map((s) => new this.ort.Tensor('float32', new Float32Array(batch * s.size), [batch, ...s.shape]));
    const mask = this.contract.maskLen ? new Uint8Array(batch * this.contract.maskLen) : null;
    return { tensors, length: 0, mask };
  }

  /**
   * logits [batch, T, vocab] (flat Float32Array) and the state after these tokens.
   * @param {ArrayLike<number>|BigInt64Array} ids  batch * T token ids, row-major
   * @param {number} batch @param {State} state
   */
  async forward(ids, batch, state) {
    const T = ids.length / batch;
    const data = ids instanceof BigInt64Array ? ids : BigInt64Array.from(ids, (i) => BigInt(i));
    const feeds = { input_ids: new this.ort.Tensor('int64', data, [batch, T]) };
    this.contract.state.forEach((s, i) => { feeds[s.input] = state.tensors[i]; });
    let mask = null;
    if (this.contract.ringLen) {
      const L = ringMaskLength(streamLength(state), this.contract.ringLen) + T;
      feeds[ATTENTION_MASK] = new this.ort.Tensor('int64', new BigInt64Array(batch * L).fill(1n), [batch, L]);
    } else if (this.contract.maskLen) {
      const m = attentionMaskFeed(state.mask, batch, this.contract.maskLen, T);
      feeds[ATTENTION_MASK] = new this.ort.Tensor('int64', m.full, m.dims);
      mask = m.next;
    }
    let out;
    try {
      out = await this.session_.run(feeds, this.outputNames);
    } catch (e) {
      throw ortError(e, this.name);
    }
    const tensors = this.contract.state.map((s) => out[s.output]);
    return { logits: out.logits.data, state: { tensors, length: state.length + T, mask } };
  }

  /** A stepper for token-by-token generation from `state` (copied in). */
  stepper(state) {
    state ??= this.initialState(1);
    return this.makeStepper ? this.makeStepper(this, state) : new Stepper(this, state);
  }

  /** A stateful stream: feed text, read next-token log-probabilities, generate. */
  session(opts = {}) {
    return new Session(this, opts);
  }

  /** Bits per character (byte models) or perplexity (word models) of `text`, as `hybrid eval`. */
  async evaluate(text, opts = {}) {
    if (typeof text !== 'string') throw new HybridError(`evaluate() takes a string, got ${typeof text}`);
    return evaluateTokens(this, this.tokenizer.encode(text), opts);
  }

  /** The continuation of `prompt` as one string; options as Session.stream. */
  async generate(prompt = '', opts = {}) {
    let out = '';
    for await (const piece of this.stream(prompt, opts)) out += piece;
    return out;
  }

  /** The continuation of `prompt`, piece by piece as it is generated. */
  stream(prompt = '', opts = {}) {
    if (typeof prompt !== 'string') throw new HybridError(`prompt must be a string, got ${typeof prompt}`);
    const s = this.session();
    const pieces = s.stream({ ...opts, final: true }, { feedFirst: prompt });
    return pieces;
  }

  async release() {
    this.releaseNative?.();
    await this.session_.release();
  }
}

/**
 * Token-by-token runs with every buffer allocated once: the token id, the logits and two copies
 * of the state are tensors made here, given to onnxruntime as feeds and preallocated fetches:
 * one run reads state A and writes state B, the next the reverse. onnxruntime writes the outputs
 * into those buffers (onnxruntime-node does), so this code never copies the state between
 * tokens. A version-3 graph's attention memory is one tensor, fed as past and fetched as present:
 * the graph writes the new token's key and value into it in place. A backend that does not write
 * preallocated outputs (onnxruntime-web copies them into its heap and back out never; seen on the
 * first step, as the logits buffer starts as NaN) runs that step again without them, and from
 * then on the returned tensors are passed straight back as the next call's inputs (no copy by
 * this code either).
 */
export class Stepper {
  constructor(model, state) {
    const { ort, contract } = model;
    this.model = model;
    this.ids = new BigInt64Array(1);
    this.logits = new ort.Tensor('float32', new Float32Array(model.vocabSize).fill(NaN), [1, 1, model.vocabSize]);
    this.ringLen = contract.ringLen ?? 0;
    const make = () => contract.state.map((s) => new ort.Tensor('float32', new Float32Array(s.size), [1, ...s.shape]));
    const first = make(), second = make();
    // Version 3: the memory's key/value tensors are shared by both copies (written in place).
    if (this.ringLen) contract.state.forEach((s, i) => { if (isMemory(s)) second[i] = first[i]; });
    this.buffers = [first, second];
    const idsTensor = new ort.Tensor('int64', this.ids, [1, 1]);
    // Version 2: one [1, maskLen + 1] attention_mask, [occupancy, 1], shifted after each step
    // while the memory fills; once full it stays all ones and a step touches nothing.
    // Version 3: a [1, length + 1] view of one buffer of ones (ringMaskLength), made per step.
    this.maskLen = contract.maskLen ?? 0;
    this.mask = new BigInt64Array(this.ringLen ? 2 * this.ringLen : this.maskLen + 1).fill(1n);
    const maskTensor = new ort.Tensor('int64', this.mask.subarray(0, this.maskLen + 1), [1, this.maskLen + 1]);
    this.runs = [[0, 1], [1, 0]].map(([src, dst]) => {
      const feeds = { input_ids: idsTensor }, fetches = { logits: this.logits };
      if (this.maskLen) feeds[ATTENTION_MASK] = maskTensor;
      contract.state.forEach((s, i) => {
        feeds[s.input] = this.buffers[src][i];
        fetches[s.output] = this.buffers[dst][i];
      });
      return { feeds, fetches };
    });
    this.turn = 0; // buffers[turn] holds the current state
    this.inPlace = null; // does the backend write preallocated outputs? known after the first step
    this.length = 0;
    this.load(state);
  }

  /** Continue from `state` (copied into the stepper's own buffers). */
  load(state) {
    const cur = this.buffers[this.turn];
    state.tensors.forEach((t, i) => {
      if (t.data.length !== cur[i].data.length) throw new HybridError(`state ${this.model.contract.state[i].input} has ${t.data.length} values, the stepper holds ${cur[i].data.length} (batch must be 1)`);
      if (t !== cur[i]) cur[i].data.set(t.data);
    });
    if (this.maskLen) this.maskFull = loadStepMask(this.mask, this.maskLen, state.mask);
    this.length = this.ringLen ? streamLength(state) : state.length;
  }

  async run(feeds, fetches) {
    try {
      return await this.model.session_.run(feeds, fetches);
    } catch (e) {
      throw ortError(e, this.model.name);
    }
  }

  /** Feed one token; returns the next-token logits (a view, valid until the next step). */
  async step(token) {
    this.ids[0] = BigInt(token);
    const { feeds, fetches } = this.runs[this.turn];
    if (this.ringLen) {
      const L = ringMaskLength(this.length, this.ringLen) + 1;
      feeds[ATTENTION_MASK] = new this.model.ort.Tensor('int64', this.mask.subarray(0, L), [1, L]);
    }
    let out = await this.run(feeds, fetches);
    if (this.inPlace === null) {
      this.inPlace = !Number.isNaN(this.logits.data[0]);
      if (!this.inPlace) {
        for (const r of this.runs) r.fetches = this.model.outputNames;
        out = await this.run(feeds, this.model.outputNames); // the inputs are untouched: the same step again
      }
    }
    this.length += 1;
    if (this.maskLen && !this.maskFull) this.maskFull = shiftStepMask(this.mask);
    const next = this.turn ^ 1;
    if (!this.inPlace) {
      this.model.contract.state.forEach((s, i) => {
        this.buffers[next][i] = out[s.output];
        this.runs[next].feeds[s.input] = out[s.output];
      });
    }
    this.turn = next;
    return this.inPlace ? this.logits.data : out.logits.data;
  }

  /** The current state (the stepper's buffers; copy to keep). */
  get state() {
    return { tensors: this.buffers[this.turn], length: this.length, mask: this.occupancy() };
  }

  occupancy() {
    return this.maskLen ? stepMaskOccupancy(this.mask, this.maskLen) : null;
  }

  /** A copy of the current state that later steps leave alone. */
  snapshot() {
    const tensors = this.buffers[this.turn].map((t) => new this.model.ort.Tensor('float32', t.data.slice(), t.dims));
    return { tensors, length: this.length, mask: this.occupancy() };
  }
}
