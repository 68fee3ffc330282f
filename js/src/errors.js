// One error type for every user-facing failure: a problem with a file, a directory or a value,
// explained in one line that names it (as hybrid.runtime.HybridError in the Python runtime).

export class HybridError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'HybridError';
  }
}

/** A count, a size or a seed: a JavaScript integer (not a bool, not a string, within 2^53). */
export function isInteger(x) {
  return typeof x === 'number' && Number.isSafeInteger(x);
}

/** A number (NaN and the infinities included, as Python's is_number; the checks say what is allowed). */
export function isNumber(x) {
  return typeof x === 'number';
}

/** Python's repr-like rendering of a user value for error messages. */
export function show(x) {
  if (typeof x === 'string') return JSON.stringify(x);
  if (typeof x === 'number') return String(x);
  if (typeof x === 'bigint') return `${x}n`;
  if (x === undefined) return 'undefined';
  try {
    return JSON.stringify(x) ?? String(x);
  } catch {
    return String(x);
  }
}
