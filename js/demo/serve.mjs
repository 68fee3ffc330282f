// A tiny static server for the demo page, on 127.0.0.1 only:
//   node demo/serve.mjs [--port 8000] [--model DIR]
// serves this package's folder (the page, src/, node_modules/onnxruntime-web) at / and, with
// --model, a model directory at /model/. Prints the page's URL. Nothing outside the two folders
// is served; only GET and HEAD.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const port = Number(opt('--port', '8000'));
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`error: --port must be an integer in 0..65535, got ${opt('--port')}`);
  process.exit(1);
}
const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const mounts = [['/model/', opt('--model', null)], ['/', pkg]].filter(([, dir]) => dir !== null).map(([at, dir]) => {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    console.error(`error: ${dir}: not a directory`);
    process.exit(1);
  }
  return [at, fs.realpathSync(dir)];
});
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json',
  '.wasm': 'application/wasm', '.css': 'text/css', '.png': 'image/png', '.onnx': 'application/octet-stream', '.map': 'application/json' };

function resolve(urlPath) {
  for (const [at, dir] of mounts) {
    if (!urlPath.startsWith(at)) continue;
    let rel;
    try {
      rel = decodeURIComponent(urlPath.slice(at.length));
    } catch {
      return null;
    }
    const file = path.resolve(dir, `.${path.sep}${rel}`);
    let real;
    try {
      real = fs.realpathSync(file);
    } catch {
      return null;
    }
    if (real !== dir && !real.startsWith(dir + path.sep)) return null;
    const st = fs.statSync(real);
    if (st.isDirectory()) return fs.existsSync(path.join(real, 'index.html')) ? path.join(real, 'index.html') : null;
    return st.isFile() ? real : null;
  }
  return null;
}

const server = http.createServer((req, res) => {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405).end();
    return;
  }
  const file = resolve(new URL(req.url, 'http://127.0.0.1').pathname);
  if (file === null) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
  if (req.method === 'HEAD') res.end();
  else fs.createReadStream(file).pipe(res);
});
server.listen(port, '127.0.0.1', () => {
  console.log(`http://127.0.0.1:${server.address().port}/demo/`);
});
