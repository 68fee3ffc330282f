"""tools/bench_peers.py: the smoke run end to end with whatever backends are installed (ours
always), the table it writes between its markers, and the pieces it is built from (no timing is
asserted: speed goes in the table, never in a test)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import bench_peers  # noqa: E402
import peers_build  # noqa: E402

# backend -> (its rows' variants, the modules it needs)
BACKENDS = {
    "onnxruntime-genai": (("int8", "int4", "fp32"), ("onnxruntime_genai", "transformers", "torch")),
    "llama.cpp": (("Q8_0", "Q4_0"), ("llama_cpp", "gguf", "transformers", "torch")),
    "transformers eager": (("fp32",), ("transformers", "torch")),
}


def installed(modules) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]  # after header and rule


def test_smoke_run_writes_a_full_table(tmp_path):
    # $BENCH_PEERS_WORK: a work folder whose models an earlier smoke run built (reused, not rebuilt).
    work = Path(os.environ.get("BENCH_PEERS_WORK") or tmp_path / "w")
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\nkept before\n")
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "bench_peers.py"),
            "--smoke",
            "--work",
            str(work),
            "--benchmarks",
            str(bench),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    text = bench.read_text()
    assert text.startswith("# Benchmarks\n\nkept before\n")
    block = text.split(bench_peers.BEGIN, 1)[1].split(bench_peers.END, 1)[0]
    assert re.search(r" on .+ \(\d+ cores\); .*onnxruntime \d", block)  # the machine and versions named
    assert "`python tools/bench_peers.py --smoke" in block
    got = {(c[0], c[1]): c for c in rows(block)}
    cols = len(rows(block)[0])
    assert all(len(c) == cols for c in rows(block))
    for preset in bench_peers.SMOKE["ours"]:  # ours: always measured
        for v in ("int8", "int4", "fp32"):
            c = got[(preset, v)]
            assert c[4] == "1" and not c[-1], c  # one thread, no note
            assert all(re.fullmatch(r"[\d,.]+", x) for x in c[5:-1]), c  # RSS, ms/token per context, pp tokens/s
    for name, (variants, modules) in BACKENDS.items():
        for v in variants:
            c = got[(name, v)]
            if installed(modules):
                assert not c[-1].startswith(("skipped", "failed")) and re.fullmatch(r"[\d.]+", c[6]), c
            else:  # named, with the reason
                assert c[-1].startswith("skipped: ") and "not installed" in c[-1], c
    # A second run replaces the block, and reuses every model it built.
    r2 = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "bench_peers.py"),
            "--smoke",
            "--work",
            str(work),
            "--benchmarks",
            str(bench),
            "--only",
            "ours",
            "--contexts",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "building" not in r2.stdout
    text2 = bench.read_text()
    assert text2.count(bench_peers.BEGIN) == 1 and "ms/token @8 |" in text2 and "@64" not in text2


def test_write_block_replaces_only_between_markers(tmp_path):
    f = tmp_path / "B.md"
    f.write_text("a\n" + bench_peers.BEGIN + "\nold\n" + bench_peers.END + "\nz\n")
    bench_peers.write_block(f, "new\n")
    assert f.read_text() == "a\n" + bench_peers.BEGIN + "\nnew\n" + bench_peers.END + "\nz\n"


def test_bad_options_are_one_line():
    for argv in (
        ["--contexts", "4096"],
        ["--contexts", "x"],
        ["--threads", "0"],
        ["--rounds", "0"],
        ["--only", "ollama"],
    ):
        with pytest.raises(SystemExit) as e:
            bench_peers.main(["--smoke", *argv])
        assert str(e.value).startswith("error: ") and "\n" not in str(e.value)


def test_byte_tokenizer_has_one_token_per_byte():
    vocab = peers_build.byte_tokenizer_json()["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(256)) and len(vocab) == 256
    if installed(("tokenizers",)):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(json.dumps(peers_build.byte_tokenizer_json()))
        data = "héllo\n\x00".encode()
        assert tok.encode(data.decode()).ids == list(data)


def test_gguf_names_cover_a_llama_layer():
    for hf, want in (
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.layers.3.self_attn.q_proj.weight", "blk.3.attn_q.weight"),
        ("model.layers.11.mlp.down_proj.weight", "blk.11.ffn_down.weight"),
        ("model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ):
        assert peers_build._gguf_name(hf) == want


@pytest.mark.skipif(not installed(("gguf", "transformers", "torch", "safetensors")), reason="needs the peers extra")
def test_gguf_file_holds_every_llama_tensor(tmp_path):
    import gguf

    sizes = dict(bench_peers.SMOKE["llama"])
    hf, params = peers_build.build_llama(tmp_path / "hf", sizes, seed=0)
    assert peers_build.build_llama(tmp_path / "hf", sizes, seed=0) == (hf, params)  # reused
    peers_build.write_gguf_f32(hf, tmp_path / "m.gguf")
    r = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    names = {t.name for t in r.tensors}
    per_layer = {f"blk.{i}.{n}.weight" for i in range(sizes["layers"]) for n in peers_build.GGUF_NAMES.values()}
    assert names == per_layer | {"token_embd.weight", "output_norm.weight", "output.weight"}
    assert sum(int(t.n_elements) for t in r.tensors) == params
    model = r.fields["tokenizer.ggml.model"]
    assert bytes(model.parts[model.data[0]]).decode() == "none"


def test_our_export_is_rebuilt_when_the_model_or_exporter_code_changes(tmp_path):
    (tmp_path / "train" / "ops").mkdir(parents=True)
    (tmp_path / "export").mkdir()
    (tmp_path / "train" / "model.py").write_text("x = 1\n")
    (tmp_path / "train" / "ops" / "kernel.c").write_text("int f;\n")
    (tmp_path / "export" / "exporter.py").write_text("y = 2\n")
    before = peers_build.exporter_digest(tmp_path)
    (tmp_path / "export" / "notes.md").write_text("docs do not change the graph\n")
    assert peers_build.exporter_digest(tmp_path) == before
    (tmp_path / "train" / "ops" / "kernel.c").write_text("int g;\n")
    assert peers_build.exporter_digest(tmp_path) != before
    assert peers_build.exporter_digest() == peers_build.exporter_digest()  # this repository's, stable
