// Unit tests of the parts that need no model: sampling, the seeded generator, stop strings,
// option checks and the contract's checks. Run: node --test test/ (tests/test_js.py runs them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, StopFilter, checkSampling, filteredProbs, sample, readConfig, HybridError, WordTokenizer } from '../src/index.js';
import { attentionMaskFeed, checkFileName, ringMaskLength } from '../src/contract.js';
import { externalLocations } from '../src/onnxfile.js';

const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i * 1.7) * 3);

test('a seed reproduces the same draws; another seed gives others', () => {
  const draw = (seed) => { const r = new Rng(seed); return Array.from({ length: 200 }, () => sample(logits, 0.9, 20, 0.95, r)); };
  assert.deepEqual(draw(7), draw(7));
  assert.notDeepEqual(draw(7), draw(8));
  assert.deepEqual(draw(2 ** 40 + 3), draw(2 ** 40 + 3));
  assert.notDeepEqual(draw(2 ** 40 + 3), draw(3));
});

test('random() is in [0, 1) and roughly uniform', () => {
  const r = new Rng(1);
  let sum = 0;
  for (let i = 0; i < 20000; i++) { const u = r.random(); assert.ok(u >= 0 && u < 1); sum += u; }
  assert.ok(Math.abs(sum / 20000 - 0.5) < 0.01);
});

test('greedy is argmax (first on ties), also with top_k 1', () => {
  const x = Float32Array.of(1, 3, 3, 2);
  assert.equal(sample(x, 0, 0, 1, new Rng(1)), 1);
  assert.equal(sample(x, 1.0, 1, 1, new Rng(1)), 1);
});

test('filteredProbs: top-k keeps ties at the k-th value, top-p keeps the smallest head reaching p', () => {
  const p = filteredProbs(Float32Array.of(0, 1, 1, 2), 1.0, 2, 1.0);
  assert.equal(p[0], 0);
  assert.ok(p[1] > 0 && p[2] > 0 && p[3] > 0);
  assert.ok(Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-12);
  const q = filteredProbs(Float64Array.of(Math.log(0.5), Math.log(0.3), Math.log(0.2)), 1.0, 0, 0.6);
  assert.ok(Math.abs(q[0] - 0.5 / 0.8) < 1e-12 && Math.abs(q[1] - 0.3 / 0.8) < 1e-12 && q[2] === 0);
  const top = filteredProbs(Float32Array.of(0, 5, 1), 1.0, 0, 1e-9);
  assert.deepEqual(Array.from(top), [0, 1, 0]);
  const cold = filteredProbs(Float32Array.of(0, 1), 1e-300, 0, 1); // no NaN at tiny temperatures
  assert.deepEqual(Array.from(cold), [0, 1]);
});

test('StopFilter holds back a possible stop string and cuts at the first one', () => {
  const f = new StopFilter(['\n\n', 'END']);
  assert.equal(f.push('abc\n'), 'abc');
  assert.equal(f.push('x'), '\nx');
  assert.equal(f.push('EN'), '');
  assert.equal(f.push('D tail'), '');
  assert.ok(f.stopped);
  assert.equal(f.flush(), '');
  const g = new StopFilter(['zz']);
  assert.equal(g.push('az'), 'a');
  assert.equal(g.flush(), 'z');
});

test('bad sampling options give one clear error each', () => {
  const cases = [[{ maxTokens: 0 }, /maxTokens must be a positive integer, got 0/], [{ maxTokens: 1.5 }, /maxTokens/],
    [{ temperature: -1 }, /temperature must be >= 0/], [{ temperature: NaN }, /temperature/], [{ temperature: Infinity }, /temperature/],
    [{ topK: -1 }, /topK must be an integer >= 0/], [{ topP: 0 }, /topP must be in \(0, 1\]/], [{ topP: 1.5 }, /topP/],
    [{ seed: -3 }, /seed must be a non-negative integer/], [{ seed: '1' }, /seed/], [{ stop: [''] }, /stop strings must be non-empty/],
    [{ stop: 5 }, /stop must be a string or a list/], [{ max_tokens: 5 }, /unknown option "max_tokens"/]];
  for (const [opts, re] of cases) assert.throws(() => checkSampling(opts), (e) => e instanceof HybridError && re.test(e.message) && !e.message.includes('\n'));
  assert.deepEqual(checkSampling({ stop: 'x' }).stop, ['x']);
});

const CONFIG = { format: 'hybrid-onnx', format_version: 1, model: { vocab_size: 256 }, metric: 'bpc', files: { fp32: 'model.onnx' },
  tokenizer: 'tokenizer.json', state: [{ input: 'past_mask', output: 'present_mask', dtype: 'float32', shape: ['batch', 4] }] };

test('config.json checks: format, format_version, files inside the directory', () => {
  assert.equal(readConfig(CONFIG, 'c').state[0].size, 4);
  const bad = (over, re) => assert.throws(() => readConfig({ ...CONFIG, ...over }, 'dir/config.json'), (e) => e instanceof HybridError && re.test(e.message));
  bad({ format_version: 9 }, /dir\/config.json: format_version 9 is not supported \(this reader reads hybrid-onnx version 1, 2, 3\)/);
  bad({ format_version: '1' }, /format_version "1" is not supported/);
  bad({ inputs: { attention_mask: { dtype: 'int64' } } }, /"attention_mask" is an input of version 2 graphs, this is version 1/);
  bad({ format_version: 2, inputs: { attention_mask: { dtype: 'float32' } }, model: { vocab_size: 256, mem_len: 4 } }, /must be int64/);
  bad({ format_version: 2, inputs: { attention_mask: { dtype: 'int64' } } }, /needs model.mem_len > 0/);
  const v2 = readConfig({ ...CONFIG, format_version: 2, model: { vocab_size: 256, mem_len: 4 }, state: [],
    inputs: { attention_mask: { dtype: 'int64' } } }, 'c');
  assert.equal(v2.maskLen, 4);
  bad({ format_version: 2, model: { vocab_size: 256, mem_len: 4 }, inputs: { attention_mask: { dtype: 'int64' } },
    state: [{ input: 'past_key_values.2.key', output: 'present.2.key', shape: ['batch', 2, 8, 16] }] }, /must hold 4 slots \(model.mem_len = 4\)/);
  const v3 = readConfig({ ...CONFIG, format_version: 3, model: { vocab_size: 256, mem_len: 4 }, inputs: { attention_mask: { dtype: 'int64' } },
    state: [{ input: 'past_key_values.2.key', output: 'present.2.key', shape: ['batch', 2, 5, 16] }] }, 'c');
  assert.equal(v3.ringLen, 5);
  assert.equal(v3.maskLen, null);
  bad({ format_version: 3, model: { vocab_size: 256, mem_len: 4 }, inputs: { attention_mask: { dtype: 'int64' } },
    state: [{ input: 'past_key_values.2.key', output: 'present.2.key', shape: ['batch', 2, 4, 16] }] }, /must hold 5 slots \(model.mem_len = 4\)/);
  bad({ format_version: undefined }, /format_version undefined is not supported/);
  bad({ format: 'onnx' }, /unknown format "onnx"/);
  bad({ format: 'hybrid-run' }, /is a training run, not an exported model/);
  bad({ metric: 'acc' }, /'metric' must be 'bpc' or 'ppl'/);
  bad({ files: { fp16: 'm.onnx' } }, /unknown variants/);
  bad({ files: { fp32: '../elsewhere.onnx' } }, /climbs out with '\.\.'/);
  bad({ files: { fp32: '/etc/passwd' } }, /absolute path/);
  bad({ files: { fp32: 'C:\\x.onnx' } }, /absolute path/);
  bad({ tokenizer: 'https://example.invalid/t.json' }, /absolute path or URL/);
  bad({ state: [{ input: 'a', output: 'b', shape: [4] }] }, /state\[0\] must have/);
  assert.equal(checkFileName('sub/model.onnx', 'c'), 'sub/model.onnx');
});

test('the ONNX walker finds external data and refuses garbage', () => {
  // ModelProto{graph{initializer{name "w", external_data{key "location", value "../x"}}}}
  const entry = [0x0a, 8, ...Buffer.from('location'), 0x12, 4, ...Buffer.from('../x')];
  const tensor = [0x42, 1, 0x77, 0x6a, entry.length, ...entry];
  const graph = [0x2a, tensor.length, ...tensor];
  const model = Uint8Array.from([0x3a, graph.length, ...graph]);
  assert.deepEqual(externalLocations(model), [['w', '../x']]);
  assert.throws(() => externalLocations(Uint8Array.of(0x3a, 50, 1)), /past the end/);
});

test('word tokenizer: vocabulary checks', () => {
  assert.throws(() => new WordTokenizer(['a', '<eos>']), /must contain "<unk>" and "<eos>"/);
  assert.throws(() => new WordTokenizer(['<unk>', '<eos>', 'a', 'a']), /duplicate/);
});

test('version 3 attention_mask length: the stream length below the ring, then ring + length mod ring', () => {
  assert.deepEqual([0, 1, 4, 5, 6, 9, 10, 11, 1e12].map((n) => ringMaskLength(n, 5)), [0, 1, 4, 5, 6, 9, 5, 6, 5]);
});

test('version 2 attention_mask: [occupancy, ones] and the last maskLen entries after the call', () => {
  const { full, next, dims } = attentionMaskFeed(Uint8Array.of(0, 0, 1, 0, 1, 1), 2, 3, 2);
  assert.deepEqual(dims, [2, 5]);
  assert.deepEqual(Array.from(full, Number), [0, 0, 1, 1, 1, 0, 1, 1, 1, 1]);
  assert.deepEqual(Array.from(next), [1, 1, 1, 1, 1, 1]);
  assert.deepEqual(Array.from(attentionMaskFeed(new Uint8Array(4), 1, 4, 1).next), [0, 0, 0, 1]);
});

test('the C API: onnxruntime errors are one HybridError line; buffers must be shared', async () => {
  const { loadCapi, createSession, sharedArray, tensorValue } = await import('../src/ort-capi.js');
  const capi = await loadCapi();
  assert.equal(await loadCapi(), capi); // bound once per process
  assert.throws(() => createSession(capi, new Uint8Array(16).fill(7), 1), (e) => e instanceof HybridError
    && e.message.startsWith('onnxruntime failed in CreateSessionFromArray (') && !e.message.includes('\n'));
  assert.throws(() => tensorValue(capi, new Float32Array(4), [1, 4]), /SharedArrayBuffer/);
  const a = sharedArray(Float32Array, 4);
  assert.ok(a.buffer instanceof SharedArrayBuffer && a.length === 4);
  capi.fns.ReleaseValue(tensorValue(capi, a, [1, 4]));
  assert.equal(sharedArray(BigInt64Array, 0).length, 0);
});
