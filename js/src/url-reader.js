// A model directory served over HTTP(S): files fetched by URL, each one resolved against the
// directory's URL and refused unless it stays below it.

import { HybridError, show } from './errors.js';
import { checkFileName } from './contract.js';

/** @param {string|URL} url  the model directory's URL (relative to the page, or absolute) */
export function urlReader(url, fetchFn = globalThis.fetch) {
  if (!(typeof url === 'string' || url instanceof URL) || String(url) === '') throw new HybridError(`a model directory URL is needed, got ${show(url)}`);
  let base;
  try {
    const s = String(url);
    base = new URL(s.endsWith('/') ? s : `${s}/`, globalThis.location?.href);
  } catch {
    throw new HybridError(`${url}: not a valid URL`);
  }
  const name = String(url);
  const resolve = (file) => {
    checkFileName(file, `${base.href}config.json`);
    const u = new URL(file, base);
    if (!u.href.startsWith(base.href)) throw new HybridError(`${base.href}config.json: refusing file name ${show(file)}: it resolves outside the model directory`);
    return u;
  };
  const get = async (file) => {
    const u = resolve(file);
    let res;
    try {
      res = await fetchFn(u);
    } catch (e) {
      throw new HybridError(`${u.href}: cannot fetch (${String(e?.message ?? e).split('\n')[0]})`);
    }
    return res;
  };
  return {
    name,
    where: (file) => new URL(file, base).href,
    async config() {
      const res = await get('config.json');
      if (res.status === 404) throw new HybridError(`${name}: model directory not found (no config.json at ${resolve('config.json').href}, HTTP 404)`);
      if (!res.ok) throw new HybridError(`${resolve('config.json').href}: HTTP ${res.status}`);
      return res.text();
    },
    // Listed files are taken to exist; a missing one fails when fetched, in one line.
    exists: async (file) => (resolve(file), true),
    async bytes(file) {
      const res = await get(file);
      if (!res.ok) throw new HybridError(`${resolve(file).href}: ${res.status === 404 ? 'file not found' : `HTTP ${res.status}`} (named by config.json)`);
      return new Uint8Array(await res.arrayBuffer());
    },
  };
}
