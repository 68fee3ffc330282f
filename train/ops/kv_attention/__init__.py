"""Attention over a key/value buffer's filled prefix, this call's keys and values appended in
place: what onnxruntime's GroupQueryAttention computes, as one op.

    kv_attention(qkv, past_key, past_value, bias, seqlens_k, total_len, n_heads)
        -> (y [B, T, H*d], present_key, present_value)

qkv [B, T, 3*H*d] is the packed product (queries, keys, values, head-major); the buffers
[B, H, S, d] hold the stream's first n = total_len - T tokens in slots 0 .. n-1, and the call's
T keys and values go to slots n .. n+T-1 (present has past's shape). Query t attends to the n
slots and the call's keys up to t, with scores q.k / sqrt(d) + bias [1, H, T, n+T] (which carries
ALiBi and -inf for the future); seqlens_k [B] int32 is n+T-1 per row, GroupQueryAttention's input.
Side by side:
  naive.py  the plain computation (the reference; eager PyTorch),
  op.py     the custom op `hybrid::kv_attention` with its fake kernel, opaque to torch.export, so
            that the exporter can write it as one com.microsoft GroupQueryAttention node
            (export/fused_attention.py), which updates a buffer bound as both past and present
            in place.
"""

from hybrid.train.ops.kv_attention.naive import kv_attention_naive
from hybrid.train.ops.kv_attention.op import kv_attention

__all__ = ["kv_attention", "kv_attention_naive"]
