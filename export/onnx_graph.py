"""PyTorch model -> one ONNX graph with explicit state inputs and outputs, and checks on that graph.

The graph's signature is flat (ONNX has no dicts) and is onnxruntime-genai's (signature.py):
    inputs   input_ids [batch, sequence] int64, attention_mask [batch, total_sequence_length]
             int64 (models with an attention memory), then every state tensor
    outputs  logits [batch, sequence, vocab], then the new state in the same order
State inputs are named `past_key_values.<i>.<kind>`; the outputs swap the prefix for `present.`.

The QRNN recurrence becomes one ONNX `Scan`: `fo_pool` switches to torch's scan operator while
torch.export traces (see train/ops/fo_pool/scan.py), so the graph is the same whatever sequence
length it was traced with.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings

import onnx
import torch

from hybrid.runtime.errors import HybridError
from hybrid.export.fused_attention import translation_table
from hybrid.export.signature import ATTENTION_MASK, GraphSignature, io_names, output_name  # noqa: F401 (re-exported)
from hybrid.train.model import HybridLM

DEFAULT_OPSET = (
    20  # 20 has a Gelu op that onnxruntime fuses (~15% faster evaluation than 18's Erf form); onnxruntime >= 1.17
)


@contextlib.contextmanager
def _quiet():
    """torch.onnx prints progress lines and warnings meant for its developers; keep them out of ours."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def root_cause(e: BaseException) -> str:
    """The first line of the innermost exception: torch.onnx wraps the real error in several layers."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    return f"{e.__class__.__name__}: {text.splitlines()[0]}" if text else e.__class__.__name__


def export_onnx(
    model: HybridLM, opset: int = DEFAULT_OPSET, trace_len: int = 7, trace_batch: int = 2, fused_attention: bool = True
) -> onnx.ModelProto:
    """The fp32 graph of `model` (eval mode), traced with a [trace_batch, trace_len] example;
    `fused_attention`: the ring's first pass as onnxruntime's GroupQueryAttention (a com.microsoft
    op: onnxruntime only), else plain ONNX throughout.

    The example sizes must differ from 1 (torch.export specialises size-1 dimensions) and say
    nothing about the graph: batch and sequence are dynamic.
    """
    if trace_len < 2 or trace_batch < 2:
        raise ValueError("trace sizes must be at least 2 (size-1 dimensions get specialised)")
    model = model.float().eval()
    wrapped = GraphSignature(model, fused_attention).eval()
    args = wrapped.example_inputs(trace_batch, trace_len, past_len=trace_len + 3)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    inputs, outputs = io_names(model)
    # Positional inputs after input_ids (the mask, the state) arrive as forward's *rest.
    rest = [
        {0: batch} if n != ATTENTION_MASK else {0: batch, 1: torch.export.Dim("total_sequence_length")}
        for n in inputs[1:]
    ]
    dynamic = {"input_ids": {0: batch, 1: seq}}
    if rest:  # a model of only feed-forward blocks (or attention without memory) has no state
        dynamic["rest"] = tuple(rest)
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                wrapped,
                args,
                f=None,
                dynamo=True,
                dynamic_shapes=dynamic,
                input_names=inputs,
                output_names=outputs,
                opset_version=opset,
                optimize=True,
                verbose=False,
                custom_translation_table=translation_table() if fused_attention else None,
            )
    except Exception as e:  # the exporter raises many types; the user needs one line
        raise HybridError(f"torch.onnx.export failed at opset {opset}: {root_cause(e)}") from e
    proto = program.model_proto
    # Name the dynamic axes as the contract does (docs/model-directory.md), on every input/output.
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
        if value.name in ("input_ids", "logits") and len(dims) > 1:
            dims[1].dim_param = "sequence"
        if value.name == ATTENTION_MASK:
            dims[1].dim_param = "total_sequence_length"
    fold_scan_transposes(proto.graph)
    got_in, got_out = [v.name for v in proto.graph.input], [v.name for v in proto.graph.output]
    if got_in != inputs or got_out != outputs:
        raise HybridError(f"exported graph has inputs {got_in} and outputs {got_out}, expected {inputs} and {outputs}")
    return proto


def fold_scan_transposes(graph: onnx.GraphProto) -> int:
    """Let each Scan run over the time axis where it is, instead of between two Transposes.

    torch's scan runs over dim 0, so the exported QRNN block moves time first ([B, T, D] ->
    [T, B, D]) for every scanned input and back for the output. ONNX Scan can scan any axis
    (scan_input_axes / scan_output_axes): folding the three Transposes into the Scan removes nine
    nodes from a three-QRNN graph, which matters in token-by-token generation where each node
    costs about a microsecond whatever its size. Returns the number of Transposes removed."""

    consumers: dict[str, list[onnx.NodeProto]] = {}  # one entry per use: a node reading a name twice counts twice
    for n in graph.node:
        for i in [*n.input, *{x for b in _subgraphs(n) for x in _names_used(b)}]:
            consumers.setdefault(i, []).append(n)
    producer = {o: n for n in graph.node for o in n.output}
    graph_outputs = {v.name for v in graph.output}

    removed: list[onnx.NodeProto] = []
    for scan in [n for n in graph.node if n.op_type == "Scan"]:
        attrs = {a.name: a for a in scan.attribute}
        if "scan_input_axes" in attrs or "scan_output_axes" in attrs:
            continue
        n_scan_in = attrs["num_scan_inputs"].i
        n_state = len(scan.input) - n_scan_in
        in_axes = [0] * n_scan_in
        for j in range(n_scan_in):
            name = scan.input[n_state + j]
            t = producer.get(name)
            # (a Transpose already folded into an earlier Scan's output is gone: leave it)
            if _swaps_01(t) and t not in removed and len(consumers[name]) == 1 and name not in graph_outputs:
                scan.input[n_state + j] = t.input[0]
                in_axes[j], removed = 1, removed + [t]
        out_axes = [0] * (len(scan.output) - n_state)
        for j in range(len(out_axes)):
            name = scan.output[n_state + j]
            users = consumers.get(name, [])
            if len(users) == 1 and _swaps_01(users[0]) and users[0] not in removed and name not in graph_outputs:
                scan.output[n_state + j] = users[0].output[0]
                out_axes[j], removed = 1, removed + [users[0]]
        if any(in_axes):
            scan.attribute.append(onnx.helper.make_attribute("scan_input_axes", in_axes))
        if any(out_axes):
            scan.attribute.append(onnx.helper.make_attribute("scan_output_axes", out_axes))
    _drop_nodes(graph, removed)
    return len(removed)


def _names_used(g: onnx.GraphProto) -> set[str]:
    """Every name g's nodes read, those of nested bodies included (a body may read outer values)."""
    return {i for n in g.node for i in n.input} | {x for n in g.node for b in _subgraphs(n) for x in _names_used(b)}


def _swaps_01(n: onnx.NodeProto | None) -> bool:
    """Whether n is Transpose(perm=[1, 0, 2]): the swap of batch and time around a Scan."""
    return (
        n is not None
        and n.op_type == "Transpose"
        and any(a.name == "perm" and list(a.ints) == [1, 0, 2] for a in n.attribute)
    )


def _drop_nodes(graph: onnx.GraphProto, removed: list[onnx.NodeProto]) -> None:
    """Remove the given nodes and the shape annotations of the values they read or wrote."""
    gone = {id(n) for n in removed}
    keep = [n for n in graph.node if id(n) not in gone]
    stale = {o for n in removed for o in n.output} | {i for n in removed for i in n.input}
    keep_vi = [v for v in graph.value_info if v.name not in stale]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)


# -- checks on a graph ------------------------------------------------------------------------


def _subgraphs(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def count_ops(graph: onnx.GraphProto, nested: bool = False) -> dict[str, int]:
    """Op type -> count, at the top level of the graph (`nested`: subgraph bodies included)."""
    out: dict[str, int] = {}
    for n in graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
        for body in _subgraphs(n) if nested else ():
            for op, c in count_ops(body, True).items():
                out[op] = out.get(op, 0) + c
    return out


def count_nodes(graph: onnx.GraphProto) -> int:
    """Every node, subgraph bodies included."""
    return sum(1 + sum(count_nodes(g) for g in _subgraphs(n)) for n in graph.node)


# Ops that multiply by a weight matrix: onnxruntime's quantizers skip them inside a Scan body.
MATMUL_OPS = {
    "MatMul",
    "Gemm",
    "MatMulInteger",
    "MatMulNBits",
    "DynamicQuantizeMatMul",
    "FusedMatMul",
    "QLinearMatMul",
    "Conv",
    "ConvInteger",
}


def weight_matmuls_in_loops(model: onnx.ModelProto) -> list[str]:
    """Names of matrix-product nodes inside a Scan/Loop/If body that read a constant (a weight).

    A weight is an initializer (of the main graph or a body) or a Constant node's output.
    """
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    found: list[str] = []

    def visit(graph: onnx.GraphProto, inside: bool, outer_consts: set[str]):
        local = outer_consts | {i.name for i in graph.initializer}
        local |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
        for n in graph.node:
            if inside and n.op_type in MATMUL_OPS and any(i in local for i in n.input):
                found.append(n.name or n.op_type)
            for g in _subgraphs(n):
                visit(g, True, local)

    visit(model.graph, False, consts)
    return found


def assert_no_weight_matmul_in_loops(model: onnx.ModelProto, what: str) -> None:
    bad = weight_matmuls_in_loops(model)
    if bad:
        raise HybridError(
            f"{what}: weight matrix products inside a Scan body ({', '.join(bad[:3])}); "
            "onnxruntime's quantizers would leave them in fp32"
        )
