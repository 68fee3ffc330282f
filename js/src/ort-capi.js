// onnxruntime's C API, called through koffi (FFI) on the libonnxruntime that onnxruntime-node
// ships: the few functions a token-by-token stepper needs, IOBinding among them. The 1.30
// binding has no IOBinding and copies every output into a fresh ArrayBuffer on every run (its
// preallocated ones too), which made a Node step ~1.75x the Python runtime's (BENCHMARKS.md,
// "Where Node's time goes"); bound buffers written in place remove that copy. Node only.
//
// OrtApi is a table of function pointers that only ever grows (entries are never moved), so an
// entry's index is fixed: the indices below are those of onnxruntime_c_api.h, and API version 13
// (onnxruntime 1.13) already has all of them. Every buffer given to onnxruntime lives in a
// SharedArrayBuffer: off the JS heap, never moved by the garbage collector and never detached
// (an ArrayBuffer can be transferred away; a SharedArrayBuffer cannot), so the pointers that
// onnxruntime keeps stay valid for as long as the JS objects that hold the buffers.

import { createRequire } from 'node:module';
import path from 'node:path';
import { HybridError } from './errors.js';

const API_VERSION = 13;
// Indices into struct OrtApi (onnxruntime_c_api.h), with each function's C signature.
const FUNCTIONS = {
  GetErrorMessage: [2, 'const char *(void *status)'],
  CreateEnv: [3, 'void *(int level, const char *logid, _Out_ void **out)'],
  CreateSessionFromArray: [8, 'void *(void *env, const uint8_t *data, size_t len, void *options, _Out_ void **out)'],
  CreateSessionOptions: [10, 'void *(_Out_ void **out)'],
  SetSessionExecutionMode: [13, 'void *(void *options, int mode)'],
  SetSessionLogSeverityLevel: [22, 'void *(void *options, int level)'],
  SetSessionGraphOptimizationLevel: [23, 'void *(void *options, int level)'],
  SetIntraOpNumThreads: [24, 'void *(void *options, int n)'],
  SetInterOpNumThreads: [25, 'void *(void *options, int n)'],
  CreateTensorWithDataAsOrtValue: [49, 'void *(void *info, void *data, size_t len, const int64_t *shape, size_t rank, int type, _Out_ void **out)'],
  CreateCpuMemoryInfo: [69, 'void *(int allocator, int memType, _Out_ void **out)'],
  ReleaseStatus: [93, 'void (void *status)'],
  ReleaseSession: [95, 'void (void *session)'],
  ReleaseValue: [96, 'void (void *value)'],
  ReleaseSessionOptions: [100, 'void (void *options)'],
  AddSessionConfigEntry: [130, 'void *(void *options, const char *key, const char *value)'],
  RunWithBinding: [133, 'void *(void *session, void *runOptions, void *binding)'],
  CreateIoBinding: [134, 'void *(void *session, _Out_ void **out)'],
  ReleaseIoBinding: [135, 'void (void *binding)'],
  BindInput: [136, 'void *(void *binding, const char *name, void *value)'],
  BindOutput: [137, 'void *(void *binding, const char *name, void *value)'],
};
const ELEMENT_TYPE = { float32: 1, int64: 7 };
const ORT_LOGGING_LEVEL_ERROR = 3;
const ORT_ENABLE_ALL = 99;
const ORT_SEQUENTIAL = 0;
const OrtArenaAllocator = 1;
const OrtMemTypeDefault = 0;

const SYNC_STACK = 16 * 1024 * 1024;

let loaded = null; // the bound API, once per process

/** The library onnxruntime-node loads: bin/napi-v6/<platform>/<arch>/ beside its package.json. */
function libraryPath(require) {
  const root = path.dirname(require.resolve('onnxruntime-node/package.json'));
  const name = { linux: 'libonnxruntime.so.1', darwin: 'libonnxruntime.1.dylib', win32: 'onnxruntime.dll' }[process.platform];
  if (!name) throw new Error(`no onnxruntime library name for ${process.platform}`);
  return path.join(root, 'bin', 'napi-v6', process.platform, process.arch, name);
}

/**
 * The C API, bound once; throws (a plain Error, which the caller turns into "use the binding")
 * where koffi or the library cannot be loaded.
 */
export async function loadCapi() {
  if (loaded) return loaded;
  const koffi = (await import('koffi')).default;
  // onnxruntime recurses deeply while it loads some graphs (7,000 levels for a 6,514-word
  // vocabulary), and koffi runs a call on a stack of its own, 2 MiB unless told: give it the
  // most koffi allows, twice the 8 MiB main-thread stack on which onnxruntime-node loads.
  const config = koffi.config();
  if (config.sync_stack_size < SYNC_STACK) koffi.config({ ...config, sync_stack_size: SYNC_STACK });
  const lib = koffi.load(libraryPath(createRequire(import.meta.url)));
  const base = lib.func('void *OrtGetApiBase(void)')();
  const getApi = koffi.decode(koffi.decode(base, 'void *'), koffi.proto('void *GetApi(uint32_t version)'));
  const api = getApi(API_VERSION);
  if (!api) throw new Error(`onnxruntime does not offer C API version ${API_VERSION}`);
  const table = koffi.decode(api, koffi.array('void *', Math.max(...Object.values(FUNCTIONS).map(([i]) => i)) + 1));
  const fns = {};
  for (const [name, [index, signature]] of Object.entries(FUNCTIONS)) {
    const proto = koffi.proto(signature.replace('(', ` ${name}(`));
    fns[name] = koffi.decode(table[index], proto);
  }
  const capi = { koffi, fns };
  capi.env = out(capi, 'CreateEnv', ORT_LOGGING_LEVEL_ERROR, 'hybrid');
  capi.cpu = out(capi, 'CreateCpuMemoryInfo', OrtArenaAllocator, OrtMemTypeDefault);
  loaded = capi;
  return capi;
}

/** Throw onnxruntime's message when a call returned a status (null is success). */
function check({ fns }, status, what) {
  if (status === null) return;
  const message = fns.GetErrorMessage(status);
  fns.ReleaseStatus(status);
  throw new HybridError(`onnxruntime failed in ${what} (${String(message).split('\n')[0].slice(0, 200)})`);
}

/** Call a function whose last argument is an out-pointer; returns what it wrote. */
function out(capi, name, ...args) {
  const slot = [null];
  check(capi, capi.fns[name](...args, slot), name);
  return slot[0];
}

/**
 * An onnxruntime session over the model's bytes, with the options of load.js (threads,
 * sequential, every graph optimisation, denormals flushed).
 */
export function createSession(capi, bytes, threads) {
  const { fns } = capi;
  const options = out(capi, 'CreateSessionOptions');
  try {
    check(capi, fns.SetIntraOpNumThreads(options, threads), 'SetIntraOpNumThreads');
    check(capi, fns.SetInterOpNumThreads(options, 1), 'SetInterOpNumThreads');
    check(capi, fns.SetSessionExecutionMode(options, ORT_SEQUENTIAL), 'SetSessionExecutionMode');
    check(capi, fns.SetSessionGraphOptimizationLevel(options, ORT_ENABLE_ALL), 'SetSessionGraphOptimizationLevel');
    check(capi, fns.SetSessionLogSeverityLevel(options, ORT_LOGGING_LEVEL_ERROR), 'SetSessionLogSeverityLevel');
    check(capi, fns.AddSessionConfigEntry(options, 'session.set_denormal_as_zero', '1'), 'AddSessionConfigEntry');
    return out(capi, 'CreateSessionFromArray', capi.env, bytes, bytes.byteLength, options);
  } finally {
    fns.ReleaseSessionOptions(options);
  }
}

/** A typed array of `n` elements in a SharedArrayBuffer (see the top of this file). */
export function sharedArray(Type, n) {
  return new Type(new SharedArrayBuffer(Math.max(n, 1) * Type.BYTES_PER_ELEMENT), 0, n);
}

/** An OrtValue over `array` (float32 or int64, in a SharedArrayBuffer) with these dims. */
export function tensorValue(capi, array, dims) {
  if (!(array.buffer instanceof SharedArrayBuffer)) throw new Error('tensorValue needs a SharedArrayBuffer');
  const type = array instanceof Float32Array ? ELEMENT_TYPE.float32 : ELEMENT_TYPE.int64;
  const shape = BigInt64Array.from(dims, BigInt);
  return out(capi, 'CreateTensorWithDataAsOrtValue', capi.cpu, array, array.byteLength, shape, shape.length, type);
}

export function createBinding(capi, session) {
  return out(capi, 'CreateIoBinding', session);
}

export function bind(capi, binding, kind, name, value) {
  check(capi, capi.fns[kind === 'input' ? 'BindInput' : 'BindOutput'](binding, name, value), `Bind${kind}`);
}

export function runBinding(capi, session, binding) {
  check(capi, capi.fns.RunWithBinding(session, null, binding), 'RunWithBinding');
}
