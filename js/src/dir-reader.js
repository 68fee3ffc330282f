// A model directory on disk: every file named by config.json must be a regular file that stays
// inside the directory, also after following links (the directory's own path may be a link).

import fs from 'node:fs';
import path from 'node:path';
import { HybridError, show } from './errors.js';
import { checkFileName } from './contract.js';

/** @param {string} dir */
export function dirReader(dir) {
  if (typeof dir !== 'string' || dir === '') throw new HybridError(`a model directory path is needed, got ${show(dir)}`);
  let st;
  try {
    st = fs.statSync(dir);
  } catch (e) {
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR') throw new HybridError(`${dir}: model directory not found`);
    throw new HybridError(`${dir}: cannot read (${e.code})`);
  }
  if (!st.isDirectory()) throw new HybridError(`${dir}: not a directory (expected an exported model directory)`);
  const root = fs.realpathSync(dir);
  const where = (file) => path.join(dir, file);
  const inside = (file) => {
    checkFileName(file, where('config.json'));
    let real;
    try {
      real = fs.realpathSync(path.join(root, file));
    } catch {
      return null; // missing
    }
    if (!real.startsWith(root + path.sep)) throw new HybridError(`${where('config.json')}: refusing file name ${show(file)}: it resolves outside the model directory`);
    return fs.statSync(real).isFile() ? real : null;
  };
  return {
    name: dir,
    where,
    async config() {
      const cfg = path.join(root, 'config.json');
      if (!fs.existsSync(cfg) || !fs.statSync(cfg).isFile()) {
        const hint = fs.existsSync(path.join(root, 'model.safetensors')) ? ' (a training run? export it first: hybrid export RUN_DIR --out MODEL_DIR)' : '';
        throw new HybridError(`${dir}: no config.json; not an exported model directory${hint}`);
      }
      const bytes = fs.readFileSync(cfg);
      try {
        return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      } catch {
        throw new HybridError(`${where('config.json')}: not UTF-8 text`);
      }
    },
    exists: async (file) => inside(file) !== null,
    async bytes(file) {
      const real = inside(file);
      if (real === null) throw new HybridError(`${where(file)}: file not found (named by config.json)`);
      const buf = fs.readFileSync(real);
      return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    },
  };
}
