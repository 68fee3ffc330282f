"""Memory a request needs, estimated before anything is allocated, and refused when it cannot fit.

An out-of-memory kill prints nothing; a request far larger than the machine (a huge --segment,
--streams, --prompt-len, batch or model width) is refused here in one line that names the
option and the estimate. The estimates are lower bounds of what onnxruntime or torch allocate
(the largest tensors only), so a refused request would certainly not have fit, and one that
passes may still be tight. Torch-free.
"""

from __future__ import annotations

from hybrid.runtime.errors import HybridError

GiB = 1 << 30
MAX_THREADS = 1024  # onnxruntime takes an int32; more threads than this help no machine


def available_bytes() -> int | None:
    """Memory this process may still allocate: MemAvailable, or the cgroup's remaining limit if
    lower (a container), None where neither can be read (then nothing is refused)."""
    found = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current") as fh:
            used = int(fh.read().strip())
        if limit.isdigit():
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_fits(need: int, what: str) -> None:
    """Refuse `what` (an option and its value, as the user wrote them) when `need` bytes exceed the
    memory available now."""
    have = available_bytes()
    if have is not None and need > have:
        raise HybridError(
            f"{what} needs about {need / GiB:,.1f} GiB of memory, more than the "
            f"{have / GiB:,.1f} GiB available; use a smaller value"
        )


def forward_bytes(model: dict, batch: int, tokens: int) -> int:
    """A lower bound of the memory one graph call on [batch, tokens] ids takes: the logits, the
    widest activation and, with attention, one block's scores (from a model directory's
    config.json `model` section)."""
    d_model, d_inner = int(model.get("d_model", 0)), int(model.get("d_inner", 0))
    width = max(int(model["vocab_size"]), d_inner, 3 * d_model)
    need = 4 * batch * tokens * (int(model["vocab_size"]) + width)
    if "A" in str(model.get("pattern", "")):
        need += 4 * batch * int(model.get("n_heads", 1)) * tokens * (tokens + int(model.get("mem_len", 0)))
    return need
