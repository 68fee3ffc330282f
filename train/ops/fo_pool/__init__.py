"""fo-pooling, the QRNN's only sequential part, as one op:

    fo_pool(z, f, o=None, initial_state=None, output_final_state=False) -> (h, final_state)

    c_t = f_t * c_{t-1} + (1 - f_t) * z_t,   h_t = o_t * c_t (c_t when o is None),   final_state = c_T

and, from gate pre-activations with the activations fused into the kernel (what the model uses):

    fo_pool_preact(z, f, o=None, initial_state=None, output_final_state=False, zoneout=0.0, training=False)
      = fo_pool(tanh(z), 1 - k * (1 - sigmoid(f)), sigmoid(o), ...)
        k: zoneout keep-mask ~ Bernoulli(1 - zoneout) in training, 1 - zoneout in evaluation

The gate convention is the paper's (Bradbury et al. 2016): f weighs the previous state
(pytorch-qrnn's ForgetMult uses the reverse). Layout [B, T, D] for z, f, o and [B, D] for the
state; float16/bfloat16/float32 inputs accumulate in float32 (float64 in float64). Side by side:
  naive.py   the plain sequential loop (the reference),
  cpu.py     the CPU path: the C kernel (cpu_kernel.c, compiled on first use by cpu_kernel.py)
             when a C compiler is at hand, else a chunked scan in vectorised PyTorch (which is
             also the fallback on any device),
  triton.py  Triton kernels (CUDA): tiled associative scans, time-chunked when B x D is small,
  op.py      the custom ops `hybrid::fo_pool_fwd` / `hybrid::fo_pool_bwd` with autograd and fake
             kernels, so that eager mode, torch.compile and torch.export see one opaque op;
             dispatch by device (CUDA -> Triton, anything else -> cpu.py),
  scan.py    torch's scan operator, used only while torch.export traces (one ONNX Scan node).
tools/bench_fo_pool.py measures them all against the device's copy bandwidth (BENCHMARKS.md).
"""

from hybrid.train.ops.fo_pool.naive import fo_pool_naive
from hybrid.train.ops.fo_pool.op import fo_pool, fo_pool_preact

__all__ = ["fo_pool", "fo_pool_naive", "fo_pool_preact"]
