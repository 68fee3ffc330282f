// `node scripts/tokenize.mjs JOB_JSON`: the JavaScript tokenizers on the texts of a job, for
// tests/test_js.py to compare with runtime/tokenizer.py. JOB: {"tokenizer": tokenizer.json's
// content, "texts": [...], "byteStreams": [[byte, ...], ...]}. Lone surrogates travel as
// {"escaped": [code units]} since JSON text cannot hold them portably.
import { tokenizerFromJson, ByteTokenizer, HybridError } from '../src/index.js';

const job = JSON.parse(process.argv[2]);
const tok = tokenizerFromJson(job.tokenizer);
const text = (t) => (typeof t === 'string' ? t : String.fromCharCode(...t.escaped));
const attempt = (fn) => {
  try {
    return fn();
  } catch (e) {
    if (e instanceof HybridError) return { error: e.message };
    throw e;
  }
};
const out = {
  encode: job.texts.map((t) => attempt(() => Array.from(tok.encode(text(t))))),
  encodeOpen: job.texts.map((t) => attempt(() => Array.from(tok.encode(text(t), false)))),
  unknown: job.texts.map((t) => attempt(() => tok.unknownWords(text(t)))),
  decodeStreams: (job.byteStreams ?? []).map((ids) => {
    const d = new ByteTokenizer().decoder();
    return { pieces: ids.map((i) => d.push(i)), flush: d.flush(), whole: new ByteTokenizer().decode(ids) };
  }),
};
if (tok.kind === 'word') out.decode = job.texts.map((t) => attempt(() => tok.decode(tok.encode(text(t)))));
console.log(JSON.stringify(out));
