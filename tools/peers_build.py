"""The models tools/bench_peers.py measures, built once into its work folder (reused while their
inputs are unchanged; every build lands atomically: written beside, renamed into place).

- the equal-size Llama: a transformers LlamaConfig with random weights from a fixed seed, saved
  as a Hugging Face folder with a 256-entry byte-level tokenizer (the genai model builder needs
  one; the bench itself feeds token ids and never tokenizes);
- onnxruntime-genai models from it with genai's own model builder (fp32, int8, int4 for the
  CPU: int8 and int4 are weight-only MatMulNBits at block 32, accuracy level 4, the builder's
  CPU defaults);
- GGUF files for llama.cpp: fp32 written with the `gguf` package (no vocabulary:
  tokenizer.ggml.model "none", token ids go in directly), then Q8_0 and Q4_0 by llama.cpp's own
  llama_model_quantize;
- our exports: `hybrid train` for one step on a small generated corpus (speed does not depend
  on the weights' values), then `hybrid export --no-check`; rebuilt whenever the model's or the
  exporter's sources change.

Run as a script only for the quantize step (`peers_build.py quantize IN OUT FTYPE`), which
loads llama.cpp in a process of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

PY = sys.executable
announce = print  # told what is being built (not what is reused); bench_peers sets its own
GENAI_PRECISIONS = ("fp32", "int8", "int4")
GGUF_TYPES = {"Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}


def _fresh(out: Path, stamp: dict) -> bool:
    """True when `out` was built from exactly these inputs."""
    try:
        return json.loads((out / "built.json").read_text()) == stamp
    except (OSError, ValueError):
        return False


def _install(tmp: Path, out: Path, stamp: dict) -> Path:
    (tmp / "built.json").write_text(json.dumps(stamp, sort_keys=True))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _tmp(out: Path) -> Path:
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _run(cmd: list[str], log: Path, what: str, env: dict | None = None) -> None:
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"{what} failed (exit {r.returncode}; {log}): {tail[0][:200]}")


# -- the equal-size Llama ------------------------------------------------------------------------


def byte_tokenizer_json() -> dict:
    """A Hugging Face byte-level tokenizer with exactly 256 tokens, id = byte value: the one the
    exporter writes for onnxruntime-genai (genai's builder refuses to run without one)."""
    from hybrid.export.genai import byte_tokenizer_json as exported

    return exported()


def build_llama(out: Path, sizes: dict, seed: int) -> tuple[Path, int]:
    """The Hugging Face folder of the Llama; returns (folder, parameter count)."""
    stamp = {"sizes": sizes, "seed": seed}
    if _fresh(out, stamp):
        return out, llama_params(out)
    announce("building the equal-size Llama (transformers LlamaConfig, random weights)")
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    cfg = transformers.LlamaConfig(
        vocab_size=sizes["vocab"],
        hidden_size=sizes["hidden"],
        intermediate_size=sizes["intermediate"],
        num_hidden_layers=sizes["layers"],
        num_attention_heads=sizes["heads"],
        num_key_value_heads=sizes["heads"],
        max_position_embeddings=sizes["context"],
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    tmp = _tmp(out)
    model.save_pretrained(tmp)
    (tmp / "tokenizer.json").write_text(json.dumps(byte_tokenizer_json()))
    (tmp / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": sizes["context"]})
    )
    (tmp / "params.json").write_text(json.dumps({"params": params}))
    return _install(tmp, out, stamp), params


def llama_params(hf_dir: Path) -> int:
    return json.loads((hf_dir / "params.json").read_text())["params"]


# -- onnxruntime-genai ----------------------------------------------------------------------------


def build_genai(hf_dir: Path, out: Path, precision: str, log: Path) -> Path:
    stamp = {"from": str(hf_dir), "hf": json.loads((hf_dir / "built.json").read_text()), "precision": precision}
    if _fresh(out, stamp):
        return out
    announce(f"building onnxruntime-genai {precision} (genai's model builder)")
    tmp = _tmp(out)
    _run(
        [
            PY,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(hf_dir),
            "-o",
            str(tmp),
            "-p",
            precision,
            "-e",
            "cpu",
            "-c",
            str(out.parent / "genai-cache"),
            "--extra_options",
            "hf_token=false",
        ],
        log,
        f"onnxruntime-genai's model builder ({precision})",
    )
    return _install(tmp, out, stamp)


# -- GGUF for llama.cpp ----------------------------------------------------------------------------


def _permute_rope(w, n_head: int):
    """Hugging Face's rotary halves -> llama.cpp's interleaved pairs (as convert_hf_to_gguf.py)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _gguf_name(hf: str) -> str:
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf in fixed:
        return fixed[hf]
    _, _, i, rest = hf.split(".", 3)  # model.layers.<i>.<module>.weight
    return f"blk.{i}.{GGUF_NAMES[rest.rsplit('.', 1)[0]]}.weight"


def write_gguf_f32(hf_dir: Path, path: Path) -> None:
    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((hf_dir / "config.json").read_text())
    rope = cfg.get("rope_parameters") or {}
    theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    heads, hidden = cfg["num_attention_heads"], cfg["hidden_size"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_dimension_count(hidden // heads)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_tokenizer_model("none")  # no vocabulary: llama.cpp takes token ids only
    for name, t in sorted(load_file(str(hf_dir / "model.safetensors")).items()):
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            t = _permute_rope(t, heads)
        w.add_tensor(_gguf_name(name), t.astype("float32"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def build_gguf(hf_dir: Path, out: Path, log: Path) -> dict[str, Path]:
    """{"Q8_0": path, "Q4_0": path} in folder `out`."""
    stamp = {"from": str(hf_dir), "hf": json.loads((hf_dir / "built.json").read_text()), "types": sorted(GGUF_TYPES)}
    files = {q: out / f"llama.{q}.gguf" for q in GGUF_TYPES}
    if _fresh(out, stamp):
        return files
    announce("building GGUF files for llama.cpp (f32 by the gguf writer, then llama_model_quantize)")
    tmp = _tmp(out)
    write_gguf_f32(hf_dir, tmp / "llama.f32.gguf")
    for q in GGUF_TYPES:
        _run(
            [PY, __file__, "quantize", str(tmp / "llama.f32.gguf"), str(tmp / f"llama.{q}.gguf"), q],
            log,
            f"llama.cpp quantize ({q})",
        )
    (tmp / "llama.f32.gguf").unlink()
    _install(tmp, out, stamp)
    return files


def quantize(src: str, dst: str, qtype: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, GGUF_TYPES[qtype])
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize returned {rc}")


# -- ours --------------------------------------------------------------------------------------------


def write_corpus(path: Path, n_words: int = 12000, seed: int = 0) -> None:
    """A small text to train one step on: its validation split (scored after the step) stays tiny."""
    words = "the of and to in is was for on that with as by at from his her it be not".split()
    r = random.Random(seed)
    path.write_text(" ".join(r.choice(words) for _ in range(n_words)) + "\n")


def exporter_digest(root: Path = Path(__file__).resolve().parents[1]) -> str:
    """sha256 of the sources that decide what our exported graph is (the model, its ops, the
    exporter): an export built by other code is rebuilt, not timed as if it were this one's."""
    h = hashlib.sha256()
    for f in sorted(p for d in ("train", "export") for p in (root / d).rglob("*") if p.suffix in (".py", ".c")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def build_ours(preset: str, out: Path, work: Path, log: Path) -> Path:
    """Model directory `out` (fp32, int8, int4) of `preset` after one training step."""
    stamp = {"preset": preset, "exporter": exporter_digest()}
    if _fresh(out, stamp):
        return out
    announce(f"building ours: {preset} (one training step, then hybrid export)")
    corpus = work / "corpus.txt"
    if not corpus.exists():
        write_corpus(corpus)
    hybrid = [PY, "-m", "hybrid"]
    run = out.with_name(out.name + ".run")
    if run.exists():
        shutil.rmtree(run)
    env = dict(os.environ, HYBRID_CACHE=str(work / "hybrid-cache"))
    _run(
        hybrid
        + [
            "train",
            "--preset",
            preset,
            "--corpus",
            str(corpus),
            "--steps",
            "1",
            "--batch-size",
            "1",
            "--seq-len",
            "64",
            "--device",
            "cpu",
            "--out",
            str(run),
            "--no-progress",
            "--no-tensorboard",
        ],
        log,
        f"hybrid train --preset {preset}",
        env,
    )
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    _run(
        hybrid + ["export", str(run), "--out", str(tmp), "--quantize", "int8,int4", "--no-check", "--no-progress"],
        log,
        f"hybrid export ({preset})",
        env,
    )
    (tmp / "params.json").write_text(json.dumps({"params": _safetensors_params(run / "model.safetensors")}))
    shutil.rmtree(run)
    return _install(tmp, out, stamp)


def _safetensors_params(path: Path) -> int:
    """Parameters in a safetensors file, from its header alone (no tensor is loaded)."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    total = 0
    for k, v in header.items():
        if k != "__metadata__":
            size = 1
            for d in v["shape"]:
                size *= d
            total += size
    return total


def ours_params(model_dir: Path) -> int:
    return json.loads((model_dir / "params.json").read_text())["params"]


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "quantize":
        quantize(*sys.argv[2:])
    else:
        raise SystemExit("usage: peers_build.py quantize IN.gguf OUT.gguf Q8_0|Q4_0")
