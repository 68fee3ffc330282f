"""The ONNX form of `hybrid::kv_attention` (train/ops/kv_attention): one com.microsoft
GroupQueryAttention node, which reads the filled slots of the key/value buffer where they lie and
writes this call's keys and values after them, in place when a reader binds one buffer as both
past and present (tools/probe_gqa.py measures it). The op's default scale is 1/sqrt(d_head), the
model's; ALiBi and the causal mask arrive as its attention_bias."""

from __future__ import annotations

import onnxscript
import torch
from onnx.defs import OpSchema

MICROSOFT = onnxscript.values.Opset("com.microsoft", 1)

# onnx registers no schema for onnxruntime's contrib ops, and onnxscript builds a node only from
# one: this states the inputs, outputs and attributes this export uses (onnxruntime's
# contrib_defs.cc has the op's full definition).
_INPUTS = (
    ("query", "T"),
    ("key", "T"),
    ("value", "T"),
    ("past_key", "T"),
    ("past_value", "T"),
    ("seqlens_k", "M"),
    ("total_sequence_length", "M"),
    ("cos_cache", "T"),
    ("sin_cache", "T"),
    ("position_ids", "P"),
    ("attention_bias", "T"),
)
_REQUIRED = {"query", "seqlens_k", "total_sequence_length"}
_OPTION = OpSchema.FormalParameterOption
_SCHEMA = OpSchema(
    "GroupQueryAttention",
    "com.microsoft",
    1,
    inputs=[
        OpSchema.FormalParameter(name, kind, param_option=_OPTION.Single if name in _REQUIRED else _OPTION.Optional)
        for name, kind in _INPUTS
    ],
    outputs=[OpSchema.FormalParameter(name, "T") for name in ("output", "present_key", "present_value")],
    type_constraints=[
        ("T", ["tensor(float)"], "activations"),
        ("M", ["tensor(int32)"], "lengths"),
        ("P", ["tensor(int64)"], "positions"),
    ],
    attributes=[OpSchema.Attribute(name, OpSchema.AttrType.INT, "") for name in ("num_heads", "kv_num_heads")],
)
GROUP_QUERY_ATTENTION = onnxscript.values.Op(MICROSOFT, "GroupQueryAttention", _SCHEMA)


def kv_attention_onnx(qkv, past_key, past_value, bias, seqlens_k, total_len, n_heads: int):
    return GROUP_QUERY_ATTENTION(
        qkv,
        None,
        None,
        past_key,
        past_value,
        seqlens_k,
        total_len,
        None,
        None,
        None,
        bias,
        num_heads=n_heads,
        kv_num_heads=n_heads,
    )


def translation_table() -> dict:
    """torch.onnx.export's custom_translation_table for the fused graph."""
    return {torch.ops.hybrid.kv_attention.default: kv_attention_onnx}
