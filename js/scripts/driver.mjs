// Test driver: `node scripts/driver.mjs JOB_JSON` runs one job with the Node package and prints
// one JSON line; tests/test_js.py gives it jobs and compares with the Python runtime.
//   {"op": "generate", "dir": ..., "variant": "int8", "prompt": ..., "maxTokens": 300, "temperature": 0, ...}
//   {"op": "evaluate", "dir": ..., "variant": ..., "text": ..., "streams": 16, "segment": 128, "ctx": 0}
//   {"op": "session", "dir": ..., "steps": [["feed", "text"], ["generate", {...}], ["logprobs"], ...]}
//   {"op": "load", "dir": ..., ...options}: loads and reports, or prints the error line
//   {"op": "forward", "dir": ..., "length": n}: one token on a fresh state claiming n tokens seen
//   {"op": "released", "dir": ..., "what": "stepper"|"model"}: a step after that was released
//   {"op": "dropped", "dir": ...}: steppers dropped unreleased and collected (node --expose-gc),
//     then greedy text from a fresh one; the model released with a stepper still alive
// "options" are loadModel's; "generate" and "session" report the stepper that ran (model.stepperKind).
import { loadModel, HybridError } from '../src/node.js';

const job = JSON.parse(process.argv[2]);
const { op, dir, variant = 'auto', threads = 1, ...rest } = job;
try {
  const model = await loadModel(dir, { variant, threads, ...(rest.options ?? {}) });
  let out;
  if (op === 'load') out = { variant: model.variant, metric: model.metric, vocab: model.vocabSize };
  else if (op === 'generate') {
    const pieces = [];
    const { prompt = '', ...opts } = rest.generate;
    for await (const piece of model.stream(prompt, opts)) pieces.push(piece);
    out = { text: pieces.join(''), pieces, stepper: model.stepperKind };
  } else if (op === 'evaluate') out = await model.evaluate(rest.text, rest.evaluate ?? {});
  else if (op === 'forward') out = (await model.forward([10], 1, { ...model.initialState(1), length: rest.length })).state.length;
  else if (op === 'released') {
    const stepper = model.stepper();
    stepper.step(10);
    if (rest.what === 'model') await model.release();
    else stepper.release();
    out = await stepper.step(10);
  } else if (op === 'dropped') {
    const wait = () => new Promise((resolve) => setTimeout(resolve, 20));
    for (let i = 0; i < 50; i++) model.stepper().step(10); // never released
    for (let i = 0; i < 3; i++) { globalThis.gc?.(); await wait(); } // their finalizers free them
    const left = model.nativeHandles?.size ?? 0;
    const text = await model.generate('ROMEO:', { maxTokens: 40, temperature: 0 });
    const alive = model.stepper();
    alive.step(10);
    await model.release(); // frees the live stepper's bindings before the session
    globalThis.gc?.();
    await wait();
    out = { left, text, gc: typeof globalThis.gc === 'function' };
  } else if (op === 'session') {
    const s = model.session(rest.sessionOptions ?? {});
    out = [];
    for (const [what, arg] of rest.steps) {
      if (what === 'feed') out.push(await s.feed(arg));
      else if (what === 'feedTokens') out.push(await s.feedTokens(arg));
      else if (what === 'generate') out.push(await s.generate(arg));
      else if (what === 'generateTokens') out.push(await s.generateTokens(arg));
      else if (what === 'logprobs') out.push(Array.from(await s.nextTokenLogprobs()));
      else if (what === 'reset') out.push(s.reset() ?? null);
      else if (what === 'nTokens') out.push(s.nTokens);
      else if (what === 'stepper') out.push(model.stepperKind);
      else if (what === 'partialStream') { // read n pieces, then stop early
        const got = [];
        for await (const p of s.stream(arg.opts)) { got.push(p); if (got.length >= arg.n) break; }
        out.push(got.join(''));
      }
    }
  }
  console.log(JSON.stringify({ ok: true, out }));
} catch (e) {
  if (!(e instanceof HybridError)) throw e;
  console.log(JSON.stringify({ ok: false, error: e.message }));
}
