"""ORT-format files (`hybrid export --ort`, for onnxruntime-mobile): written for every variant,
checked by the exporter against the .onnx files through the runtime, loaded by hybrid.runtime
(its external-data check recognises the ORT format and verifies it), and generating the same
text as the .onnx files. The README's Android/iOS snippets name this file."""

import json

import pytest
import torch

from hybrid.export.exporter import export_run
from hybrid.runtime import load_model
from hybrid.runtime.errors import HybridError
from hybrid.runtime.safe_onnx import check_external_data
from hybrid.runtime.safe_ort import tensors
from hybrid.train.config import TrainConfig, preset
from hybrid.train.data import BUILTIN, Corpus, load_text_corpus
from hybrid.train.trainer import train

VARIANTS = ("fp32", "int8", "int4")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model_dir, report): a tiny hybrid (QRNN window 2, attention memory 16) exported with --ort, checked."""
    root = tmp_path_factory.mktemp("ort")
    full = load_text_corpus(BUILTIN)
    corpus = Corpus("slice", full.tokenizer, full.train[:60000], full.valid[:4000], full.test[:4000])
    cfg = TrainConfig(
        batch_size=4,
        seq_len=32,
        steps=60,
        lr=1e-2,
        warmup_steps=5,
        eval_every=10_000,
        save_every=10_000,
        eval_tokens=0,
        log_every=10,
    )
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(
            root / "run",
            preset("hybrid-tiny", d_model=32, n_heads=2, d_inner=64, mem_len=16, dropout=0.0),
            cfg,
            corpus,
            progress=False,
            log=lambda *a: None,
        )
        report = export_run(
            root / "run",
            root / "model",
            quantize=("int8", "int4"),
            probe_text=BUILTIN.read_text()[-3000:],
            progress=False,
            ort=True,
        )
    finally:
        torch.set_num_threads(n)
    return root / "model", report


def test_every_variant_has_an_ort_file_that_the_self_check_held_to_its_onnx_file(exported):
    model_dir, report = exported
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["ort"] == {"fp32": "model.ort", "int8": "model.int8.ort", "int4": "model.int4.ort"}
    assert report["ok"] and set(report["ort"]) == set(VARIANTS)
    for v, r in report["ort"].items():
        data = (model_dir / r["file"]).read_bytes()
        assert data[4:8] == b"ORTM" and r["bytes"] == len(data)
        assert r["rel_vs_onnx"] <= 1e-4 and r["tokens"] > 512


@pytest.mark.parametrize("variant", VARIANTS)
def test_runtime_loads_ort_files_and_generates_what_the_onnx_files_do(exported, variant):
    model_dir, _ = exported
    onnx_model = load_model(model_dir, variant=variant, threads=1)
    ort_model = load_model(model_dir, variant=variant, threads=1, file_format="ort")
    assert ort_model.path.suffix == ".ort" and check_external_data(ort_model.path) == []
    assert ort_model.generate("ROMEO: ", max_tokens=300, temperature=0) == onnx_model.generate(
        "ROMEO: ", max_tokens=300, temperature=0
    )  # past the 16-token memory
    text = BUILTIN.read_text(encoding="utf-8")[-4000:]
    assert ort_model.evaluate(text, streams=4)["bpc"] == pytest.approx(
        onnx_model.evaluate(text, streams=4)["bpc"], abs=1e-6
    )


def test_asking_for_ort_files_that_were_not_exported_is_one_clear_error(tmp_path):
    from pathlib import Path

    v1 = Path(__file__).parent / "data" / "v1-model"
    with pytest.raises(HybridError, match=r"has no ORT-format files \(export with --ort"):
        load_model(v1, file_format="ort")
    with pytest.raises(HybridError, match="unknown file format 'tflite'"):
        load_model(v1, file_format="tflite")


# -- the ORT-format check ----------------------------------------------------------------------


def ort_bytes(external_offset_at: str | None) -> bytes:
    """A minimal ORT-format model: one initializer in the main graph and one in a node attribute's
    subgraph (as in a Scan body); `external_offset_at` ("main" or "body") sets external_data_offset."""
    import flatbuffers
    import onnxruntime.tools.ort_format_model  # noqa: F401 (puts ort_flatbuffers_py on sys.path)
    from ort_flatbuffers_py.fbs import Attribute, Graph, InferenceSession, Model, Node, Tensor

    b = flatbuffers.Builder(1024)

    def tensor(name, external):
        n = b.CreateString(name)
        Tensor.TensorStart(b)
        Tensor.TensorAddName(b, n)
        if external:
            Tensor.TensorAddExternalDataOffset(b, 0)
        return Tensor.TensorEnd(b)

    def graph(initializers, nodes=()):
        Graph.GraphStartInitializersVector(b, len(initializers))
        for t in reversed(initializers):
            b.PrependUOffsetTRelative(t)
        inits = b.EndVector()
        node_vec = None
        if nodes:
            Graph.GraphStartNodesVector(b, len(nodes))
            for n in reversed(nodes):
                b.PrependUOffsetTRelative(n)
            node_vec = b.EndVector()
        Graph.GraphStart(b)
        Graph.GraphAddInitializers(b, inits)
        if node_vec is not None:
            Graph.GraphAddNodes(b, node_vec)
        return Graph.GraphEnd(b)

    body = graph([tensor("body_weight", external_offset_at == "body")])
    name = b.CreateString("body")
    Attribute.AttributeStart(b)
    Attribute.AttributeAddName(b, name)
    Attribute.AttributeAddG(b, body)
    attr = Attribute.AttributeEnd(b)
    Node.NodeStartAttributesVector(b, 1)
    b.PrependUOffsetTRelative(attr)
    attrs = b.EndVector()
    Node.NodeStart(b)
    Node.NodeAddAttributes(b, attrs)
    node = Node.NodeEnd(b)
    main = graph([tensor("main_weight", external_offset_at == "main")], [node])
    Model.ModelStart(b)
    Model.ModelAddGraph(b, main)
    model = Model.ModelEnd(b)
    InferenceSession.InferenceSessionStart(b)
    InferenceSession.InferenceSessionAddModel(b, model)
    b.Finish(InferenceSession.InferenceSessionEnd(b), file_identifier=b"ORTM")
    return bytes(b.Output())


def test_the_ort_walker_sees_every_tensor_of_a_real_file(exported):
    """Every initializer onnxruntime's own FlatBuffer reader finds, the walker finds too."""
    import onnxruntime.tools.ort_format_model  # noqa: F401
    from ort_flatbuffers_py.fbs import InferenceSession

    model_dir, _ = exported
    data = (model_dir / "model.int8.ort").read_bytes()
    graph = InferenceSession.InferenceSession.GetRootAs(data, 0).Model().Graph()
    names = {graph.Initializers(i).Name().decode() for i in range(graph.InitializersLength())}
    found = tensors(data)
    assert names <= {n for n, _ in found} and all(offset == -1 for _, offset in found)


@pytest.mark.parametrize("where", ["main", "body"])
def test_an_ort_file_pointing_at_external_data_is_refused(tmp_path, where):
    assert sorted(tensors(ort_bytes(None))) == [("body_weight", -1), ("main_weight", -1)]
    path = tmp_path / "model.ort"
    path.write_bytes(ort_bytes(where))
    with pytest.raises(HybridError, match=f"refusing to load: tensor '{where}_weight' points at external data"):
        check_external_data(path)


def test_damaged_ort_files_and_other_formats_are_refused(tmp_path, exported):
    model_dir, _ = exported
    data = (model_dir / "model.ort").read_bytes()
    path = tmp_path / "model.ort"
    for bad in (data[: len(data) // 3], data[:12], b"\x00\x00\x00\x00ORTM", b"\xff\xff\xff\x7fORTM" + data[8:]):
        path.write_bytes(bad)
        with pytest.raises(HybridError, match="not a valid ORT-format file"):
            check_external_data(path)
    path.write_bytes(b"TFL3" * 64)  # neither ONNX nor ORT: still refused
    with pytest.raises(HybridError, match="not a valid ONNX file"):
        check_external_data(path)
