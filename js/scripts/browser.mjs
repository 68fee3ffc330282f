// Drives the demo page in headless Chromium (Debian's /usr/bin/chromium through playwright-core):
//   node scripts/browser.mjs JOB_JSON
// JOB: {"url": page URL, "chromium": path (default /usr/bin/chromium), "screenshot": PNG path,
//       "runs": [{"model": model URL, "variant", "prompt", "maxTokens", "temperature", "topK",
//                 "topP", "seed", "score": text to score}, ...]}
// All runs use one page, as a person would: load, generate, score, then the next run.
// Prints one JSON line: what the page showed for each run (text, ms/token, score, status).
import { chromium } from 'playwright-core';

const job = JSON.parse(process.argv[2]);
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];
const FIELDS = [['#max-tokens', 'maxTokens'], ['#temperature', 'temperature'], ['#top-k', 'topK'], ['#top-p', 'topP'], ['#seed', 'seed']];
const browser = await chromium.launch({ executablePath: job.chromium ?? '/usr/bin/chromium', args: FLAGS, headless: true });
const result = { console: [], runs: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  page.on('console', (m) => { if (m.type() === 'error') result.console.push(m.text()); });
  page.on('pageerror', (e) => result.console.push(String(e)));
  await page.goto(job.url, { waitUntil: 'load' });
  const settle = async () => {
    await page.waitForFunction(() => !['loading', 'generating', 'scoring'].includes(document.getElementById('status').dataset.state),
      null, { timeout: job.timeoutMs ?? 240000 });
    return page.$eval('#status', (e) => ({ state: e.dataset.state, text: e.textContent }));
  };
  for (const run of job.runs) {
    const r = {};
    await page.fill('#model-url', run.model);
    await page.selectOption('#variant', run.variant ?? 'auto');
    await page.click('#load');
    r.load = await settle();
    r.info = await page.textContent('#model-info');
    if (r.load.state === 'ready' && run.prompt !== undefined) {
      await page.fill('#prompt', run.prompt);
      for (const [field, key] of FIELDS) if (run[key] !== undefined) await page.fill(field, String(run[key]));
      await page.click('#generate');
      r.generate = await settle();
      r.text = await page.$eval('#output', (e) => e.textContent);
      r.stats = await page.textContent('#gen-stats');
      r.msPerToken = Number(await page.$eval('#gen-stats', (e) => e.dataset.msPerToken ?? 'NaN'));
    }
    if (r.load.state === 'ready' && run.score !== undefined) {
      await page.fill('#score-text', run.score);
      await page.click('#score');
      r.scoreStatus = await settle();
      r.score = JSON.parse(await page.$eval('#score-result', (e) => e.dataset.result ?? 'null'));
      r.scoreLine = await page.textContent('#score-result');
    }
    result.runs.push(r);
  }
  if (job.screenshot) await page.screenshot({ path: job.screenshot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
