"""tools/bench_int8_gemm.py: int8 (onnxruntime) vs fp32 (torch) weight products at a preset's shapes."""

import importlib.util
from pathlib import Path

import numpy as np

from hybrid.train.config import preset

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_int8_gemm", ROOT / "tools" / "bench_int8_gemm.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def test_shapes_are_the_models_weight_products():
    cfg = preset("hybrid-tiny")  # QFAFQFQF, d 128, d_inner 512, window 2
    assert tool.weight_shapes(cfg) == {(256, 384): 3, (128, 512): 4, (512, 128): 4, (128, 384): 1, (128, 128): 1}
    # Every parameter of a weight product is counted once: the blocks' matrices, nothing else.
    n = sum(k * m * c for (k, m), c in tool.weight_shapes(cfg).items())
    from hybrid.train.model import HybridLM

    mats = sum(p.numel() for name, p in HybridLM(cfg).named_parameters() if p.ndim == 2 and "blocks" in name)
    assert n == mats


def test_the_int8_session_computes_the_product():
    sess = tool.int8_session(64, 32, threads=1)
    a = np.random.default_rng(2).standard_normal((8, 64), dtype=np.float32)
    y = sess.run(None, {"a": a})[0]
    w = np.random.default_rng(0).integers(-127, 128, (64, 32), dtype=np.int8).astype(np.float32) * 0.01
    assert y.shape == (8, 32)
    np.testing.assert_allclose(y, a @ w, rtol=0.05, atol=0.05 * np.abs(a @ w).max())


def test_the_int4_session_computes_the_product():
    """MatMulNBits' layout: per output column, blocks of 32 inputs, two per byte (low nibble first),
    value (nibble - 8) x the block's scale."""
    sess = tool.nbits_session(64, 32, threads=1, bits=4)
    a = np.random.default_rng(2).standard_normal((8, 64), dtype=np.float32)
    y = sess.run(None, {"a": a})[0]
    packed = np.random.default_rng(0).integers(0, 256, (32, 2, 16), dtype=np.uint8)
    nibbles = np.stack([packed & 15, packed >> 4], axis=-1).reshape(32, 64)  # [n, k]
    w = (nibbles.astype(np.float32) - 8) * 0.01
    np.testing.assert_allclose(y, a @ w.T, rtol=0.05, atol=0.05 * np.abs(a @ w.T).max())


def test_the_8_bit_nbits_session_computes_the_product():
    """At 8 bits: one byte a weight, value (byte - 128) x the block's scale."""
    sess = tool.nbits_session(64, 32, threads=1, bits=8)
    a = np.random.default_rng(2).standard_normal((8, 64), dtype=np.float32)
    y = sess.run(None, {"a": a})[0]
    w = (np.random.default_rng(0).integers(0, 256, (32, 2, 32), dtype=np.uint8).reshape(32, 64) - 128.0) * 0.01
    np.testing.assert_allclose(y, a @ w.T, rtol=0.05, atol=0.05 * np.abs(a @ w.T).max())


def test_runs_and_prints_the_weighted_total(capsys):
    rows = tool.main(["--preset", "hybrid-tiny", "--rows", "16", "--reps", "1"])
    assert {(r["k"], r["n"]) for r in rows} == set(tool.weight_shapes(preset("hybrid-tiny")))
    assert all(r["int8_s"] > 0 and r["fp32_s"] > 0 and r["int4_s"] > 0 and r["nbits8_s"] > 0 for r in rows)
    assert "all, weighted by count" in capsys.readouterr().out
