// The demo page: load a model directory by URL, stream generated text with ms/token, score text.
// The page's state is in #status[data-state] (idle, loading, ready, generating, scoring, error),
// which the headless-browser test waits on.
import { loadModel } from '../src/browser.js';

const $ = (id) => document.getElementById(id);
const status = (state, text = '') => {
  $('status').dataset.state = state;
  $('status').textContent = text;
  $('status').className = state === 'error' ? 'error' : 'stats';
};
let model = null;
let stopRequested = false;

const params = new URLSearchParams(location.search);
if (params.has('model')) $('model-url').value = params.get('model');
if (params.has('variant')) $('variant').value = params.get('variant');

function numberField(id, { allowEmpty = false } = {}) {
  const raw = $(id).value.trim();
  if (raw === '' && allowEmpty) return null;
  return Number(raw); // the package checks the value and names it when it is wrong
}

async function load() {
  status('loading', 'loading…');
  for (const b of ['generate', 'score']) $(b).disabled = true;
  try {
    const t0 = performance.now();
    model = await loadModel($('model-url').value, { variant: $('variant').value });
    const ms = performance.now() - t0;
    $('model-info').textContent = `${model.name}: ${model.contract.model.pattern ?? ''} ${model.variant}, `
      + `${model.tokenizer.kind} tokenizer (${model.vocabSize} tokens), metric ${model.metric}; loaded in ${ms.toFixed(0)} ms`;
    for (const b of ['generate', 'score']) $(b).disabled = false;
    status('ready', 'ready');
  } catch (e) {
    model = null;
    $('model-info').textContent = 'not loaded';
    status('error', `error: ${e.message}`);
  }
}

async function generate() {
  $('output').textContent = '';
  $('gen-stats').textContent = '';
  $('generate').disabled = true;
  $('stop').disabled = false;
  stopRequested = false;
  status('generating', 'generating…');
  try {
    const opts = { maxTokens: numberField('max-tokens'), temperature: numberField('temperature'), topK: numberField('top-k'),
      topP: numberField('top-p'), seed: numberField('seed', { allowEmpty: true }) };
    const session = model.session();
    const prompt = $('prompt').value;
    const t0 = performance.now();
    let text = '';
    for await (const piece of session.stream({ ...opts, final: true }, { feedFirst: prompt })) {
      text += piece;
      $('output').textContent = text;
      if (stopRequested) break;
    }
    const st = session.lastStats;
    $('gen-stats').textContent = `${st.tokens} tokens, ${st.ms_per_token.toFixed(2)} ms/token `
      + `(${st.tokens_per_s.toFixed(0)} tokens/s) after a ${session.nTokens - st.tokens}-token prompt; ${(performance.now() - t0).toFixed(0)} ms in all`;
    $('gen-stats').dataset.msPerToken = String(st.ms_per_token);
    status('ready', 'ready');
  } catch (e) {
    status('error', `error: ${e.message}`);
  } finally {
    $('generate').disabled = false;
    $('stop').disabled = true;
  }
}

async function score() {
  $('score').disabled = true;
  status('scoring', 'scoring…');
  try {
    const r = await model.evaluate($('score-text').value);
    const value = r.metric === 'bpc' ? `${r.bpc.toFixed(4)} bits per character` : `perplexity ${r.ppl.toFixed(2)}`;
    $('score-result').textContent = `${value} over ${r.tokens} tokens (${r.streams} streams × ${r.segment}-token segments, ${r.tokens_per_s.toFixed(0)} tokens/s)`;
    $('score-result').dataset.result = JSON.stringify(r);
    status('ready', 'ready');
  } catch (e) {
    status('error', `error: ${e.message}`);
  } finally {
    $('score').disabled = false;
  }
}

$('load').addEventListener('click', load);
$('generate').addEventListener('click', generate);
$('stop').addEventListener('click', () => { stopRequested = true; });
$('score').addEventListener('click', score);
if (params.has('autoload')) load();
