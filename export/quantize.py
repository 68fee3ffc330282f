"""Weight quantization of the exported graph with onnxruntime's own tools.

    prepare   onnxruntime's graph optimisation (basic level: constant folding, redundant-node
              elimination; only standard ops) and shape inference: `quant_pre_process`. Constant
              folding matters here: the tied output head reads `Transpose(embedding)`, which
              becomes a constant only after folding, and only a MatMul with a constant weight
              is quantized.
    int8      dynamic quantization (`quantize_dynamic`): int8 weights for every weight MatMul
              (MatMulInteger, activations quantized per call) and for the embedding Gather.
    int4      block-wise 4-bit weights (`MatMulNBits`, blocks of 32 along the input dimension,
              symmetric); the embedding Gather gets int8 as above (4-bit Gather would need
              opset 21).

The fp32 model stays as exported. optimum's ORTQuantizer wraps these same calls for
transformers-style model folders, so it adds nothing here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import logging
from pathlib import Path

import onnx

from hybrid.runtime.errors import HybridError, first_line

INT4_BLOCK = 32
INT4_ACCURACY_LEVEL = 4  # MatMulNBits may compute with int8 activations (fast path on CPUs)


@contextlib.contextmanager
def _quiet():
    """The quantizers log every node at INFO and nag about pre-processing at WARNING."""
    root = logging.getLogger()
    names = ["onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer"]
    saved = [(lg, lg.level) for lg in [root, *(logging.getLogger(n) for n in names)]]
    for lg, _ in saved:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in saved:
            lg.setLevel(lv)


@contextlib.contextmanager
def _scratch_cwd(beside: Path):
    """Run in a fresh directory beside `beside` (the export's own temporary area), removed after."""
    scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=beside))
    before = os.getcwd()
    os.chdir(scratch)
    try:
        yield
    finally:
        os.chdir(before)
        shutil.rmtree(scratch, ignore_errors=True)


def _fail(what: str, e: Exception):
    return HybridError(f"{what} failed: {first_line(e)}")


def load_session(path: Path, level=None, optimized_path: Path | None = None):
    """An onnxruntime CPU session; a graph onnxruntime cannot load is a one-line HybridError."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if level is not None:
        opts.graph_optimization_level = level
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise _fail(f"loading {Path(path).name} in onnxruntime", e) from e


def prepare(fp32_path: Path, out_path: Path) -> None:
    """onnxruntime's graph optimisation + shape inference, the input every quantizer expects.

    The optimisation runs here rather than inside `quant_pre_process`, which logs a failed
    optimisation and carries on with the unoptimised graph.
    """
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    optimized = out_path.with_name(out_path.name + ".opt.onnx")
    try:
        load_session(fp32_path, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, optimized)
        with _quiet():
            try:
                # A failed symbolic inference saves its partial model (and external data under
                # random names) into the working directory: give it a scratch one.
                with _scratch_cwd(out_path.parent):
                    quant_pre_process(str(optimized.resolve()), str(out_path.resolve()), skip_optimization=True)
            except Exception:
                try:  # symbolic shape inference does not know every op; ONNX's own inference suffices
                    quant_pre_process(str(optimized), str(out_path), skip_optimization=True, skip_symbolic_shape=True)
                except Exception as e:
                    raise _fail("shape inference before quantization", e) from e
    finally:
        optimized.unlink(missing_ok=True)


def _int8_gather(model_in: str | onnx.ModelProto, out_path: Path, op_types: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model_in, str(out_path), op_types_to_quantize=op_types, per_channel=False, weight_type=QuantType.QInt8
    )


def quantize_int8(prepared: Path, out_path: Path) -> None:
    with _quiet():
        try:
            _int8_gather(str(prepared), out_path, ["MatMul", "Gather"])
        except Exception as e:
            raise _fail("int8 quantization", e) from e
    drop_unused_opsets(out_path)


def quantize_int4(prepared: Path, out_path: Path) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet():
        try:
            q = MatMulNBitsQuantizer(
                onnx.load(str(prepared)),
                bits=4,
                block_size=INT4_BLOCK,
                is_symmetric=True,
                accuracy_level=INT4_ACCURACY_LEVEL,
                op_types_to_quantize=("MatMul",),
            )
            q.process()
            _int8_gather(q.model.model, out_path, ["Gather"])
        except Exception as e:
            raise _fail("int4 quantization", e) from e
    drop_unused_opsets(out_path)


def _domains(graph: onnx.GraphProto) -> set[str]:
    out = set()
    for n in graph.node:
        out.add(n.domain)
        for a in n.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                out |= _domains(g)
    return out


def drop_unused_opsets(path: Path) -> None:
    """onnxruntime's optimised-model writer imports every domain it knows (training, aten, nchwc...);
    keep only those the graph uses, so other ONNX tools see a plain model."""
    model = onnx.load(str(path))
    used = _domains(model.graph) | {""}
    keep = [o for o in model.opset_import if o.domain in used or (o.domain == "ai.onnx" and "" in used)]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    onnx.save_model(model, str(path))


QUANTIZERS = {"int8": quantize_int8, "int4": quantize_int4}
FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "int4": "model.int4.onnx"}


def fp32_weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul/Gemm nodes of the main graph that still multiply by an fp32 weight initializer."""
    weights = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2}
    return [
        n.name or n.op_type
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and any(i in weights for i in n.input)
    ]
