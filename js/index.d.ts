// Types of hybrid-onnx (the JavaScript is plain ESM with no build step; these describe it).

export class HybridError extends Error {}

export type Variant = 'auto' | 'fp32' | 'int8' | 'int4';

export interface LoadOptions {
  /** auto (int8 if exported, else fp32), fp32, int8 or int4 */
  variant?: Variant;
  /** onnxruntime intra-op threads; 0 = its default */
  threads?: number;
  /** the onnxruntime module (default: onnxruntime-node in Node, onnxruntime-web in the browser) */
  ort?: unknown;
  executionProviders?: string[];
  /** Node: generation steps on onnxruntime's C API with IOBinding (default true; the stepper that
   * ran is model.stepperKind). false: onnxruntime-node's session.run, the reference. */
  ioBinding?: boolean;
}

export interface SamplingOptions {
  maxTokens?: number;       // default 200
  temperature?: number;     // default 0.8; 0 = greedy
  topK?: number;            // default 0 = off
  topP?: number;            // default 1 = off
  seed?: number | null;     // same seed, same model file: same text
  stop?: string | string[]; // generation ends before the first one
  /** no call follows: a cut-off UTF-8 character comes out as U+FFFD instead of being held */
  final?: boolean;
}

export interface EvaluateOptions {
  streams?: number;   // default 16
  segment?: number;   // default 128
  ctx?: number;       // 0 (default) or llama.cpp's protocol with chunks of ctx tokens
  maxTokens?: number; // 0 = the whole text
}

export interface EvaluateResult {
  metric: 'bpc' | 'ppl';
  bpc?: number;
  ppl?: number;
  nll: number;
  bits_per_token: number;
  tokens: number;
  protocol: 'streams' | 'ctx';
  streams: number;
  segment: number;
  ctx?: number;
  chunks?: number;
  tokens_processed: number;
  seconds: number;
  tokens_per_s: number;
  variant: string;
  model: string;
}

export interface GenerationStats {
  tokens: number;
  seconds: number;
  ms_per_token: number;
  tokens_per_s: number;
  stopped: boolean;
}

export interface Tokenizer {
  kind: 'byte' | 'word';
  vocabSize: number;
  encode(text: string, eosAtEnd?: boolean): Int32Array;
  decode(ids: ArrayLike<number>): string;
  unknownWords(text: string): string[];
}

export class Session {
  readonly nTokens: number;
  readonly lastStats: GenerationStats;
  reset(): void;
  feed(text: string): Promise<number>;
  feedTokens(ids: ArrayLike<number>): Promise<number>;
  nextTokenLogprobs(): Promise<Float64Array>;
  generate(opts?: SamplingOptions): Promise<string>;
  stream(opts?: SamplingOptions): AsyncGenerator<string, void, undefined>;
  generateTokens(opts?: Omit<SamplingOptions, 'stop' | 'final'>): Promise<number[]>;
}

export class Model {
  readonly name: string;
  readonly variant: string;
  readonly vocabSize: number;
  readonly metric: 'bpc' | 'ppl';
  readonly tokenizer: Tokenizer;
  /** 'capi' (Node, onnxruntime's C API with IOBinding) or 'binding' (the ort module's session.run) */
  readonly stepperKind: 'capi' | 'binding';
  session(opts?: { segment?: number }): Session;
  generate(prompt?: string, opts?: SamplingOptions): Promise<string>;
  stream(prompt?: string, opts?: SamplingOptions): AsyncGenerator<string, void, undefined>;
  evaluate(text: string, opts?: EvaluateOptions): Promise<EvaluateResult>;
  /** Frees the sessions, and the bindings of every C API stepper (a later step is one error line). */
  release(): Promise<void>;
}

/** Node: a directory path; browser: the directory's URL. */
export function loadModel(source: string | URL, opts?: LoadOptions): Promise<Model>;
