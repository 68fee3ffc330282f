"""`hybrid export`: the model directory contract, Scan recurrence, carried state, dynamic batch,
quantized sizes, the self-check, and clean failures. One tiny run, exported once per module."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import typer
from onnx import TensorProto, helper
from typer.testing import CliRunner

from hybrid.export import commands, exporter
from hybrid.export.signature import graph_state_shapes
from hybrid.runtime.modeldir import open_model_dir
from hybrid.export.onnx_graph import (
    DEFAULT_OPSET,
    count_nodes,
    count_ops,
    export_onnx,
    fold_scan_transposes,
    output_name,
    weight_matmuls_in_loops,
)
from hybrid.runtime.errors import HybridError
from hybrid.train.config import ModelConfig, TrainConfig
from hybrid.train.data import Corpus, load_text_corpus
from hybrid.train.ops.fo_pool import fo_pool_naive
from hybrid.train.ops.fo_pool.scan import fo_pool_scan
from hybrid.train.trainer import load_run_model, train

# Big enough that weights, not graph bookkeeping, dominate the file sizes; all three block kinds,
# a conv window (conv_state) and an attention memory longer than the carried-state test.
SMALL = dict(
    vocab_size=256, d_model=64, n_heads=2, d_inner=256, pattern="QFAQF", qrnn_window=2, dropout=0.0, mem_len=48
)


@pytest.fixture(scope="module")
def corpus():
    full = load_text_corpus()
    return Corpus("slice", full.tokenizer, full.train[:40000], full.valid[:4000], full.test[:4000])


@pytest.fixture(scope="module")
def probe_file(tmp_path_factory):
    text, _ = exporter.default_probe_text()
    path = tmp_path_factory.mktemp("probe") / "probe.txt"
    path.write_text(text[:2400])  # > 2048 tokens: parity at lengths 1, 7, 512 and 2048
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    tcfg = TrainConfig(
        batch_size=4,
        seq_len=32,
        steps=40,
        lr=3e-3,
        warmup_steps=5,
        eval_every=1000,
        save_every=1000,
        eval_tokens=0,
        log_every=10,
    )
    train(out, ModelConfig(**SMALL), tcfg, corpus, progress=False, log=lambda *a: None)
    return out


def cli_app():
    app = typer.Typer()
    commands.register(app)

    @app.command()
    def _noop():  # a second command keeps `export` a named subcommand, as in the real CLI
        pass

    return app


@pytest.fixture(scope="module")
def exported(tmp_path_factory, run_dir, probe_file):
    out = tmp_path_factory.mktemp("models") / "tiny-model"
    result = CliRunner().invoke(
        cli_app(),
        [
            "export",
            str(run_dir),
            "--out",
            str(out),
            "--quantize",
            "int8,int4",
            "--probe",
            str(probe_file),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "int4" in result.output and "parity" in result.output
    return out, json.loads((out / "export_report.json").read_text())


def load_torch(run_dir):
    model, _ = load_run_model(run_dir)
    return model


def ort_run(session, model, ids, state, past_len=0):
    """The graph fed as onnxruntime-genai feeds it: attention_mask all ones over the stream so far."""
    names = list(graph_state_shapes(model, 1))
    mask = {"attention_mask": np.ones((ids.shape[0], past_len + ids.shape[1]), np.int64)} if model.uses_memory else {}
    outs = session.run(None, {"input_ids": ids, **mask, **state})
    return outs[0], dict(zip(names, outs[1:]))


def zero_state(model, batch):
    return {k: np.zeros(s, np.float32) for k, s in graph_state_shapes(model, batch).items()}


def defined(name, value, past_len):
    """The part of a state tensor the contract defines after `past_len` tokens: a ring's slots the
    stream has reached (with past and present apart, GroupQueryAttention leaves later ones unset)."""
    return value[:, :, :past_len] if name.endswith((".key", ".value")) else value


# -- the recurrence as a scan ------------------------------------------------------------------


@pytest.mark.parametrize("with_o,with_c0", [(True, True), (False, False)])
def test_scan_fo_pool_matches_the_reference(with_o, with_c0):
    g = torch.Generator().manual_seed(0)
    B, T, D = 2, 9, 5
    z = torch.randn(B, T, D, generator=g)
    f = torch.rand(B, T, D, generator=g)
    o = torch.rand(B, T, D, generator=g) if with_o else None
    c0 = torch.randn(B, D, generator=g) if with_c0 else None
    h, c = fo_pool_scan(z, f, o, c0, True)
    h_ref, c_ref = fo_pool_naive(z, f, o, c0, True)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)


def test_graph_has_one_scan_per_qrnn_and_does_not_grow_with_trace_length(exported, run_dir):
    out, _ = exported
    graph = onnx.load(str(out / "model.onnx"))
    assert count_ops(graph.graph).get("Scan") == SMALL["pattern"].count("Q")
    assert not any(n.domain not in ("", "ai.onnx") for n in graph.graph.node), (
        "custom-domain op at the fp32 graph's top level (GroupQueryAttention sits inside the attention Ifs)"
    )
    other = export_onnx(load_torch(run_dir), trace_len=23, trace_batch=3)
    assert count_nodes(other.graph) == count_nodes(graph.graph)
    onnx.checker.check_model(graph, full_check=True)
    # Each Scan runs over the time axis in place: no Transpose feeds or follows it.
    producer = {o: n for n in graph.graph.node for o in n.output}
    for scan in (n for n in graph.graph.node if n.op_type == "Scan"):
        axes = {a.name: list(a.ints) for a in scan.attribute}
        assert axes["scan_input_axes"] == [1, 1] and axes["scan_output_axes"] == [1]
        assert all(producer[i].op_type != "Transpose" for i in scan.input[1:])


def test_folding_transposes_into_chained_scans_keeps_the_graph_and_its_results():
    # Scan A's output goes through two Transposes (they cancel) into Scan B: every Transpose folds
    # away, both Scans run over axis 1, and onnxruntime computes what it did before.
    B, T, D = 2, 3, 4
    body = helper.make_graph(
        [helper.make_node("Add", ["c", "x"], ["c2"]), helper.make_node("Identity", ["c2"], ["y"])],
        "body",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, D]) for n in ("c", "x")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, D]) for n in ("c2", "y")],
    )
    swap = dict(perm=[1, 0, 2])
    nodes = [
        helper.make_node("Transpose", ["X"], ["Xt"], **swap),
        helper.make_node("Scan", ["c0", "Xt"], ["cA", "YA"], body=body, num_scan_inputs=1),
        helper.make_node("Transpose", ["YA"], ["YAt"], **swap),
        helper.make_node("Transpose", ["YAt"], ["YAtt"], **swap),
        helper.make_node("Scan", ["c0", "YAtt"], ["cB", "YB"], body=body, num_scan_inputs=1),
        helper.make_node("Transpose", ["YB"], ["Y"], **swap),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("c0", TensorProto.FLOAT, [B, D]),
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [B, T, D]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [B, T, D])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)])
    feeds = {"c0": np.random.rand(B, D).astype(np.float32), "X": np.random.rand(B, T, D).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    assert fold_scan_transposes(model.graph) == 4
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Scan", "Scan"]
    np.testing.assert_array_equal(ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0], before)


def test_a_transpose_read_twice_by_one_scan_is_left_in_place():
    B, T, D = 2, 3, 4
    vi = lambda n, shape: helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)  # noqa: E731
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["c", "f"], ["cf"]),
            helper.make_node("Add", ["cf", "b"], ["c2"]),
            helper.make_node("Identity", ["c2"], ["y"]),
        ],
        "body",
        [vi("c", [B, D]), vi("f", [B, D]), vi("b", [B, D])],
        [vi("c2", [B, D]), vi("y", [B, D])],
    )
    nodes = [
        helper.make_node("Transpose", ["X"], ["Xt"], perm=[1, 0, 2]),
        helper.make_node("Scan", ["c0", "Xt", "Xt"], ["cT", "Y"], body=body, num_scan_inputs=2),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [vi("c0", [B, D]), vi("X", [B, T, D])], [vi("cT", [B, D]), vi("Y", [T, B, D])]),
        opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)],
    )
    assert fold_scan_transposes(model.graph) == 0
    onnx.checker.check_model(model, full_check=True)


def test_no_weight_matmul_inside_any_scan_body(exported):
    out, _ = exported
    for name in ("model.onnx", "model.int8.onnx", "model.int4.onnx"):
        assert weight_matmuls_in_loops(onnx.load(str(out / name))) == [], name


def test_weight_matmul_in_scan_detector_finds_one():
    # The assertion above is only as good as its detector: a Scan body that multiplies by a weight.
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 0.0, 0.0, 1.0])
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_t", "w"], ["y"], name="inner_matmul"),
            helper.make_node("Add", ["c", "y"], ["c_next"]),
            helper.make_node("Identity", ["c_next"], ["out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [1, 2]),
        ],
        [
            helper.make_tensor_value_info("c_next", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2]),
        ],
    )
    scan = helper.make_node("Scan", ["c0", "xs"], ["cT", "ys"], body=body, num_scan_inputs=1)
    graph = helper.make_graph(
        [scan],
        "g",
        [
            helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("xs", TensorProto.FLOAT, [3, 1, 2]),
        ],
        [
            helper.make_tensor_value_info("cT", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("ys", TensorProto.FLOAT, [3, 1, 2]),
        ],
        [w],
    )
    assert weight_matmuls_in_loops(helper.make_model(graph)) == ["inner_matmul"]


# -- running the graph -------------------------------------------------------------------------


def test_one_call_and_many_calls_agree_and_match_pytorch(exported, run_dir):
    out, _ = exported
    model = load_torch(run_dir)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, 256, (1, SMALL["mem_len"]), dtype=np.int64)  # within the memory
    whole, whole_state = ort_run(sess, model, ids, zero_state(model, 1))
    state, pieces, p = zero_state(model, 1), [], 0
    for n in (1, 1, 5, 2, 13, 1, 100):
        logits, state = ort_run(sess, model, ids[:, p : p + n], state, past_len=p)
        pieces.append(logits)
        p += n
    np.testing.assert_allclose(np.concatenate(pieces, 1), whole, atol=1e-5)
    for k in whole_state:
        np.testing.assert_allclose(
            defined(k, state[k], ids.shape[1]), defined(k, whole_state[k], ids.shape[1]), atol=1e-5
        )
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(ids))  # the sliding memory, as trained
        _, ref_state = model(torch.from_numpy(ids), model.initial_state(1, ring=True), past_len=0)  # the graph's ring
    np.testing.assert_allclose(whole, ref.numpy(), atol=1e-4, rtol=1e-4)
    assert set(whole_state) == set(ref_state)  # the graph takes the stream's length as attention_mask
    for k in whole_state:
        np.testing.assert_allclose(
            defined(k, whole_state[k], ids.shape[1]),
            defined(k, ref_state[k].numpy(), ids.shape[1]),
            atol=1e-4,
            rtol=1e-4,
        )


def test_one_token_steps_match_pytorch_as_the_ring_fills_and_wraps(exported, run_dir):
    """The graph reads only the ring's filled prefix while it is at most half full (an If per
    attention block) and the whole ring after that: token by token through both branches, the
    switch and two wraps, the same logits and state as the eager ring."""
    out, _ = exported
    model = load_torch(run_dir)
    graph = onnx.load(str(out / "model.onnx"))
    assert count_ops(graph.graph).get("If") == SMALL["pattern"].count("A")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    R = SMALL["mem_len"] + 1
    ids = np.random.default_rng(3).integers(0, 256, (1, 2 * R + 3), dtype=np.int64)
    state, ref_state = zero_state(model, 1), model.initial_state(1, ring=True)
    for p in range(ids.shape[1]):
        logits, state = ort_run(sess, model, ids[:, p : p + 1], state, past_len=p)
        with torch.no_grad():
            ref, ref_state = model(torch.from_numpy(ids[:, p : p + 1]), ref_state, past_len=p)
        np.testing.assert_allclose(logits, ref.numpy(), atol=1e-4, rtol=1e-4, err_msg=f"after {p} tokens")
    for k in state:  # the stream is past the ring: every slot defined
        np.testing.assert_allclose(state[k], ref_state[k].numpy(), atol=1e-4, rtol=1e-4)


def test_past_and_present_may_share_one_buffer_at_any_length(exported, run_dir):
    """As onnxruntime-genai runs the graph (and the runtime's stepper at one token): each attention
    memory bound as both past and present, written in place, chunks of 1 to 3 ring lengths."""
    out, _ = exported
    model = load_torch(run_dir)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    R = SMALL["mem_len"] + 1
    ids = np.random.default_rng(2).integers(0, 256, (1, 6 * R), dtype=np.int64)
    state, p = zero_state(model, 1), 0
    shared = {k: v.copy() for k, v in state.items()}
    memory = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in shared.items() if k.endswith((".key", ".value"))}
    names = list(graph_state_shapes(model, 1))
    for n in (1, 7, 1, 3 * R, 2, R, 1):
        chunk = ids[:, p : p + n]
        logits, state = ort_run(sess, model, chunk, state, past_len=p)
        io = sess.io_binding()
        io.bind_cpu_input("input_ids", chunk)
        io.bind_cpu_input("attention_mask", np.ones((1, p + n), np.int64))
        fresh = {k: np.empty_like(v) for k, v in shared.items() if k not in memory}
        io.bind_output("logits")
        for k in names:  # the attention memory in place (the graph writes it there), the rest anew
            if k in memory:
                io.bind_ortvalue_input(k, memory[k])
                io.bind_ortvalue_output(output_name(k), memory[k])
            else:
                io.bind_cpu_input(k, shared[k])
                io.bind_ortvalue_output(output_name(k), ort.OrtValue.ortvalue_from_numpy(fresh[k]))
        sess.run_with_iobinding(io)
        shared.update(fresh)
        np.testing.assert_array_equal(io.copy_outputs_to_cpu()[0], logits)
        p += n
        for k in names:
            np.testing.assert_array_equal(defined(k, shared[k], p), defined(k, state[k], p))


def test_dynamic_batch_one_and_four_in_one_session(exported, run_dir):
    out, _ = exported
    model = load_torch(run_dir)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(1).integers(0, 256, (4, 11), dtype=np.int64)
    four, _ = ort_run(sess, model, ids, zero_state(model, 4))
    ones = np.concatenate([ort_run(sess, model, ids[i : i + 1], zero_state(model, 1))[0] for i in range(4)])
    np.testing.assert_allclose(four, ones, atol=1e-5)
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(ids))
    np.testing.assert_allclose(four, ref.numpy(), atol=1e-4, rtol=1e-4)


# -- the directory and the report --------------------------------------------------------------


def test_directory_follows_the_contract(exported, run_dir):
    out, report = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "export_report.json",
        "genai_config.json",
        "hybrid_tokenizer.json",
        "model.int4.onnx",
        "model.int8.onnx",
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    cfg = open_model_dir(out).config
    model = load_torch(run_dir)
    assert cfg["format"] == "hybrid-onnx" and cfg["format_version"] == 3 and cfg["metric"] == "bpc"
    assert cfg["tokenizer"] == "hybrid_tokenizer.json" and cfg["genai"] == {
        "config": "genai_config.json",
        "variant": "int8",
    }
    assert cfg["inputs"]["attention_mask"] == {"dtype": "int64", "shape": ["batch", "total_sequence_length"]}
    assert cfg["files"] == {"fp32": "model.onnx", "int8": "model.int8.onnx", "int4": "model.int4.onnx"}
    assert ModelConfig.from_dict(cfg["model"]) == model.cfg
    shapes = graph_state_shapes(model, 1)
    assert [s["input"] for s in cfg["state"]] == list(shapes)
    assert [s["output"] for s in cfg["state"]] == [output_name(n) for n in shapes]
    assert [s["shape"][1:] for s in cfg["state"]] == [list(v[1:]) for v in shapes.values()]
    assert {"past_key_values.0.recurrent_state", "past_key_values.0.conv_state", "past_key_values.2.key"} <= set(shapes)
    assert "past_mask" not in shapes
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", *shapes]
    assert [o.name for o in graph.output] == ["logits", *(s["output"] for s in cfg["state"])]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    dims = [d.dim_param or d.dim_value for d in graph.input[1].type.tensor_type.shape.dim]
    assert dims == ["batch", "total_sequence_length"]
    assert json.loads((out / "hybrid_tokenizer.json").read_text())["type"] == "byte"
    assert json.loads((out / "tokenizer.json").read_text())["model"]["type"] == "BPE"  # Hugging Face's, for genai


def test_reader_refuses_an_unknown_format_version(exported, tmp_path):
    out, _ = exported
    cfg = json.loads((out / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, format_version=99)))
    with pytest.raises(HybridError, match="format_version 99 is not supported"):
        open_model_dir(tmp_path)


def test_quantized_files_are_small_and_cover_every_weight_matmul(exported):
    out, report = exported
    fp32 = (out / "model.onnx").stat().st_size
    assert (out / "model.int8.onnx").stat().st_size <= 0.30 * fp32
    assert (out / "model.int4.onnx").stat().st_size <= 0.20 * fp32
    assert "MatMulInteger" in count_ops(onnx.load(str(out / "model.int8.onnx")).graph)
    assert "MatMulNBits" in count_ops(onnx.load(str(out / "model.int4.onnx")).graph)
    assert report["files"]["int8"]["bytes"] == (out / "model.int8.onnx").stat().st_size


def test_report_shows_parity_and_quantization_within_limits(exported):
    _, report = exported
    assert report["ok"] and report["failures"] == [] and report["opset"] == DEFAULT_OPSET
    par = report["parity"]
    assert {"1", "7", "512", "2048"} <= set(par["lengths"])
    assert par["max_rel"] <= 1e-4 and par["batch"]["vs_batch1_max_abs"] <= 1e-5
    v = report["variants"]
    assert set(v) == {"pytorch", "fp32", "int8", "int4"}
    assert abs(v["pytorch"]["bpc"] - v["fp32"]["bpc"]) < 1e-4
    assert v["int8"]["vs_fp32"] <= 0.01 and v["int4"]["vs_fp32"] <= 0.03
    for q in ("int8", "int4"):
        assert 0 <= v[q]["kl_vs_fp32"] < 0.1 and 0.5 < v[q]["top1_vs_fp32"] <= 1.0
    assert report["graph"]["weight_matmuls_in_scan"] == 0


# -- failures ----------------------------------------------------------------------------------


def leftovers(parent, name):
    return [p.name for p in parent.iterdir() if name in p.name] if parent.exists() else []


def damage(run, kind):
    if kind == "missing":
        return run.parent / "no-such-run"
    bad = run.parent / f"bad-{kind}"
    bad.mkdir()
    for f in ("config.json", "tokenizer.json"):
        (bad / f).write_bytes((run / f).read_bytes())
    weights = (run / "model.safetensors").read_bytes()
    if kind == "truncated":
        (bad / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    elif kind == "directory":
        (bad / "model.safetensors").mkdir()
    else:  # a checkpoint whose tensors do not match its config
        (bad / "model.safetensors").write_bytes(weights)
        cfg = json.loads((bad / "config.json").read_text())
        cfg["model"]["d_inner"] = 128
        (bad / "config.json").write_text(json.dumps(cfg))
    return bad


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("missing", "run directory not found"),
        ("truncated", "not a valid safetensors file"),
        ("directory", "cannot read the weights file"),
        ("mismatch", "shape"),
    ],
)
def test_bad_run_gives_one_clear_line_and_no_directory(tmp_path, run_dir, kind, needle):
    bad = damage(run_dir, kind)
    out = tmp_path / "model"
    result = CliRunner().invoke(cli_app(), ["export", str(bad), "--out", str(out), "--quantize", "none"])
    assert result.exit_code != 0 and isinstance(result.exception, HybridError)
    message = str(result.exception)
    assert "\n" not in message and needle in message and str(bad.name) in message
    assert leftovers(tmp_path, "model") == []


def test_failed_self_check_keeps_the_old_directory_and_leaves_nothing_else(tmp_path, run_dir, probe_file, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"format": "hybrid-onnx"}))
    (out / "keep.txt").write_text("previous export")
    with pytest.raises(HybridError, match="exists and is not empty"):
        exporter.export_run(run_dir, out, quantize=(), progress=False)
    monkeypatch.setattr(exporter, "FP32_RTOL", -1.0)  # no graph can pass: the check must fail
    with pytest.raises(HybridError, match="self-check failed: ONNX fp32 logits differ"):
        exporter.export_run(
            run_dir, out, quantize="none", probe_text=probe_file.read_text()[:600], progress=False, overwrite=True
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "keep.txt"]


def test_quantizing_leaves_no_file_in_the_working_directory_or_beside_the_model(tmp_path, run_dir, monkeypatch):
    """onnxruntime's symbolic shape inference saves a partial model into the working directory
    when it gives up (it does on the ring memory's index arithmetic): the exporter keeps that in
    a scratch directory it removes."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    exporter.export_run(run_dir, tmp_path / "out" / "model", quantize="int8", check=False, progress=False)
    assert list(cwd.iterdir()) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model"]


def test_overwrite_replaces_only_an_earlier_export(tmp_path, run_dir):
    """--overwrite never deletes the run itself, a folder holding it, or any folder that is not
    an exported model; '.' and '/' are refused with one line, like every bad --out."""
    import shutil

    run = tmp_path / "runs" / "run"
    shutil.copytree(run_dir, run)
    other = tmp_path / "runs" / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    for out, needle in (
        (run, "is the run directory or holds it"),
        (run.parent, "is the run directory or holds it"),
        (other, "is not an exported model directory"),
        (Path("/"), "not a valid output directory"),
    ):
        with pytest.raises(HybridError, match=needle):
            exporter.export_run(run, out, quantize=(), check=False, progress=False, overwrite=True)
    assert (run / "model.safetensors").exists() and (other / "todo.txt").read_text() == "mine"
    with pytest.raises(HybridError, match="not supported"):
        exporter.export_run(run, tmp_path / "m", quantize=(), opset=999, progress=False)


def test_an_export_killed_mid_swap_is_put_back_by_the_next(tmp_path, run_dir):
    """kill -9 between _install's two renames leaves the old model aside as .NAME.old-PID: the
    next export restores it before anything else, and removes dead exports' temporaries."""
    out = tmp_path / "model"
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    aside = tmp_path / f".model.old-{dead}"
    aside.mkdir()
    (aside / "config.json").write_text(json.dumps({"format": "hybrid-onnx"}))
    (tmp_path / f".model.tmp-{dead}").mkdir()
    with pytest.raises(HybridError, match="exists and is not empty"):
        exporter.export_run(run_dir, out, quantize=(), check=False, progress=False)
    exporter.export_run(run_dir, out, quantize=(), check=False, progress=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert exporter._is_model_dir(out) and (out / "model.onnx").exists()


def test_quantize_option_parsing():
    assert exporter.parse_quantize("int8,int4") == ("int8", "int4")
    assert exporter.parse_quantize("none") == exporter.parse_quantize("") == exporter.parse_quantize(()) == ()
    assert exporter.parse_quantize(["int4"]) == ("int4",)
    with pytest.raises(HybridError, match="unknown quantization 'int2'"):
        exporter.parse_quantize("int8,int2")


def test_the_self_check_scores_the_runs_own_held_out_split(tmp_path):
    """Without --probe, a run trained on your own text is checked on that text's test split (not
    the built-in corpus), and the report names it; `hybrid eval` of the same tokens agrees."""
    from hybrid.runtime.evaluate import evaluate
    from hybrid.runtime.model import Model
    from hybrid.train.rundir import corpus_from_spec

    text = tmp_path / "mine.txt"
    text.write_text(("the quick brown fox jumps over the lazy dog. " * 30 + "\n") * 40)
    mine = corpus_from_spec({"source": "text", "path": str(text)}, "byte", 16, False, lambda m: None)
    tcfg = TrainConfig(
        batch_size=2,
        seq_len=16,
        steps=3,
        warmup_steps=1,
        eval_every=100,
        save_every=100,
        eval_tokens=0,
        tensorboard=False,
    )
    model_cfg = ModelConfig(**{**SMALL, "d_model": 32, "d_inner": 64})
    train(tmp_path / "run", model_cfg, tcfg, mine, progress=False, log=lambda *a: None)
    report = exporter.export_run(tmp_path / "run", tmp_path / "model", quantize=(), progress=False)
    assert report["probe"]["source"] == "the run's own test split (mine.txt)"
    B = report["probe"]["streams"]
    assert report["probe"]["tokens"] == (len(mine.test) - 1) // B * B  # every stream as long as the others
    r = evaluate(
        Model(tmp_path / "model", "fp32"),
        np.asarray(mine.test),
        streams=report["probe"]["streams"],
        segment=report["probe"]["segment"],
    )
    assert r["bpc"] == pytest.approx(report["variants"]["fp32"]["bpc"], abs=1e-9)
    assert "the run's own test split (mine.txt)" in commands.summary(report)
