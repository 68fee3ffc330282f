"""One backend of tools/bench_peers.py in a process of its own: the model is loaded once, with
its thread count fixed, and the process's peak resident memory is that backend's alone.

    python tools/peers_worker.py '{"kind": "ours", "path": "...", "variant": "int8", "threads": 2}'

Speaks JSON lines: one request on stdin, one answer on stdout (the real stdout is kept for the
answers; anything a library prints goes to stderr). Requests:
  {"op": "pp", "ids": [...]}            seconds to process these tokens as one prompt, fresh state
  {"op": "tg", "prompt": [...], "n": N} seconds for N greedy steps after the prompt (the prompt
                                        itself is not timed); each step picks the argmax token
                                        and runs the model on it
  {"op": "quit"}                        answers the peak RSS in MiB and exits
Every answer is {"s": seconds} or {"peak_rss_mib": ...}; a failure is {"error": "one line"}.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from hybrid.runtime.machine import peak_rss_mib


class Ours:
    """Our export through the runtime's public API: a Session fed token ids, greedy generation."""

    def __init__(self, spec: dict):
        from hybrid.runtime import Session, load_model

        model = load_model(spec["path"], variant=spec["variant"], threads=spec["threads"])
        # Prompts go in as 512-token graph calls, the size of the pp test.
        self.session = Session(model, segment=512)

    def pp(self, ids: list[int]) -> float:
        s = self.session
        s.reset()
        t = time.perf_counter()
        s.feed_tokens(ids)
        return time.perf_counter() - t

    def tg(self, prompt: list[int], n: int) -> float:
        s = self.session
        s.reset()
        s.feed_tokens(prompt)
        t = time.perf_counter()
        s.generate_tokens(max_tokens=n, temperature=0)
        return time.perf_counter() - t


class Genai:
    """onnxruntime-genai: its Generator with greedy search; threads through the session options."""

    def __init__(self, spec: dict):
        import onnxruntime_genai as og

        self.og = og
        cfg = og.Config(spec["path"])
        cfg.clear_providers()  # the CPU
        cfg.overlay(
            json.dumps(
                {
                    "model": {
                        "decoder": {
                            "session_options": {"intra_op_num_threads": spec["threads"], "inter_op_num_threads": 1}
                        }
                    }
                }
            )
        )
        self.model = og.Model(cfg)
        self.max_length = json.loads(open(os.path.join(spec["path"], "genai_config.json")).read())["model"][
            "context_length"
        ]

    def _generator(self):
        params = self.og.GeneratorParams(self.model)
        # min_length = max_length: the end-of-text token never stops generation early.
        params.set_search_options(do_sample=False, max_length=self.max_length, min_length=self.max_length)
        return self.og.Generator(self.model, params)

    def pp(self, ids: list[int]) -> float:
        g = self._generator()
        ids = np.asarray(ids, dtype=np.int32)
        t = time.perf_counter()
        g.append_tokens(ids)
        return time.perf_counter() - t

    def tg(self, prompt: list[int], n: int) -> float:
        g = self._generator()
        g.append_tokens(np.asarray(prompt, dtype=np.int32))  # runs the prompt: logits for the next token
        g.generate_next_token()  # picks the first token from those logits (no model run)
        t = time.perf_counter()
        for _ in range(n):  # each: run the model on the last token, pick the next
            g.generate_next_token()
        dt = time.perf_counter() - t
        if g.is_done():
            raise RuntimeError("genai stopped generating early")
        return dt


class LlamaCpp:
    """llama.cpp through llama-cpp-python's Llama: eval() token ids, argmax of the last logits."""

    def __init__(self, spec: dict):
        import llama_cpp

        if not spec.get("extra_bufts", True):
            # Weights in plain CPU buffers: no AMX kernels, no repacking (see bench_peers --llama-extra-bufts).
            lib = llama_cpp.llama_cpp  # the module Llama() takes its default parameters from
            default = lib.llama_model_default_params

            def plain():
                p = default()
                p.use_extra_bufts = False
                return p

            lib.llama_model_default_params = plain
        self.llm = llama_cpp.Llama(
            model_path=spec["path"],
            n_ctx=spec["context"],
            n_batch=spec["batch"],
            n_ubatch=spec["batch"],
            n_threads=spec["threads"],
            n_threads_batch=spec["threads"],
            verbose=bool(spec.get("verbose")),
        )
        self.llama_cpp, self.n_vocab = llama_cpp, self.llm.n_vocab()

    def pp(self, ids: list[int]) -> float:
        self.llm.reset()
        t = time.perf_counter()
        self.llm.eval(ids)
        return time.perf_counter() - t

    def _next(self) -> int:
        # Llama.eval keeps no logits unless logits_all; read the last token's from the context.
        ptr = self.llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))))

    def tg(self, prompt: list[int], n: int) -> float:
        llm = self.llm
        llm.reset()
        llm.eval(prompt)
        t = time.perf_counter()
        for _ in range(n):
            llm.eval([self._next()])
        return time.perf_counter() - t


class Eager:
    """transformers' LlamaForCausalLM, eager fp32 PyTorch with a key/value cache (the reference)."""

    def __init__(self, spec: dict):
        import torch
        import transformers

        torch.set_num_threads(spec["threads"])
        self.torch = torch
        self.model = transformers.LlamaForCausalLM.from_pretrained(spec["path"], dtype=torch.float32).eval()

    def _run(self, ids, cache=None):
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        return out.logits[:, -1], out.past_key_values

    def pp(self, ids: list[int]) -> float:
        x = self.torch.tensor([ids])
        with self.torch.inference_mode():
            t = time.perf_counter()
            self._run(x)
            return time.perf_counter() - t

    def tg(self, prompt: list[int], n: int) -> float:
        torch = self.torch
        with torch.inference_mode():
            logits, cache = self._run(torch.tensor([prompt]))
            t = time.perf_counter()
            for _ in range(n):
                logits, cache = self._run(logits.argmax(-1, keepdim=True), cache)
            return time.perf_counter() - t


KINDS = {"ours": Ours, "genai": Genai, "llama.cpp": LlamaCpp, "eager": Eager}


def serve(spec: dict) -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library prints (llama.cpp, the builder's loggers) must not reach the answers
    sys.stdout = sys.stderr

    def answer(obj):
        answers.write(json.dumps(obj) + "\n")

    try:
        backend = KINDS[spec["kind"]](spec)
    except Exception as e:  # any library's load error, as one line
        answer({"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"})
        return
    answer({"ready": True})
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "pp":
                answer({"s": backend.pp(req["ids"])})
            elif req["op"] == "tg":
                answer({"s": backend.tg(req["prompt"], req["n"])})
            else:
                answer({"peak_rss_mib": peak_rss_mib()})
                return
        except Exception as e:
            answer({"error": f"{type(e).__name__}: {str(e).strip()[:300]}"})


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
