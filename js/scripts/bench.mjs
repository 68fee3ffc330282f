// Generation timing rounds for tools/bench_js.py, which interleaves them with the Python
// runtime's: `node scripts/bench.mjs JOB_JSON`, then one command per stdin line:
//   node -> one round in Node with the default stepper (onnxruntime's C API, IOBinding);
//   node-binding -> the same on onnxruntime-node's session.run (ioBinding: false);
//   wasm -> one round in the page (onnxruntime-web)
// each answered by one JSON line {"ms_per_token", "cpu_ms_per_token" (Node only)}. JOB: {"dir", "variant", "threads",
// "prompt", "tokens", "pageUrl" and "modelUrl" (the wasm side; omit for Node only), "chromium"}.
// A round: a fresh session, the prompt fed, `tokens` greedy tokens through the stepper.
import readline from 'node:readline';
import { loadModel } from '../src/node.js';

const job = JSON.parse(process.argv[2]);
const model = await loadModel(job.dir, { variant: job.variant, threads: job.threads });
const viaBinding = await loadModel(job.dir, { variant: job.variant, threads: job.threads, ioBinding: false });
if (model.stepperKind !== 'capi') throw new Error(`the C API stepper did not load (stepper: ${model.stepperKind})`);
const round = async (m, prompt, tokens) => {
  const s = m.session();
  await s.feed(prompt);
  const cpu0 = globalThis.process?.cpuUsage(); // Node: CPU time of the whole process, threads included
  await s.generateTokens({ maxTokens: tokens, temperature: 0 });
  const cpu = cpu0 ? globalThis.process.cpuUsage(cpu0) : null;
  return { ms: s.lastStats.ms_per_token, cpu: cpu ? (cpu.user + cpu.system) / 1e3 / tokens : null };
};

let browser = null, page = null;
if (job.pageUrl) {
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: job.chromium ?? '/usr/bin/chromium', headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] });
  page = await browser.newPage();
  await page.goto(job.pageUrl, { waitUntil: 'load' });
  await page.evaluate(async ({ modelUrl, variant, round }) => {
    const { loadModel: load } = await import('../src/browser.js');
    window.benchModel = await load(modelUrl, { variant });
    window.benchRound = new Function('m', 'prompt', 'tokens', `return (${round})(m, prompt, tokens);`);
  }, { modelUrl: job.modelUrl, variant: job.variant, round: round.toString() });
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const cmd = line.trim();
  if (cmd === 'quit') break;
  let r = { ms: null, cpu: null };
  if (cmd === 'node') r = await round(model, job.prompt, job.tokens);
  else if (cmd === 'node-binding') r = await round(viaBinding, job.prompt, job.tokens);
  else if (cmd === 'wasm' && page) r = await page.evaluate(({ prompt, tokens }) => window.benchRound(window.benchModel, prompt, tokens), { prompt: job.prompt, tokens: job.tokens });
  console.log(JSON.stringify({ backend: cmd, ms_per_token: r.ms, cpu_ms_per_token: r.cpu }));
}
rl.close();
if (browser) await browser.close();
process.exit(0); // stdin and the session would keep the process alive
