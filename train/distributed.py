"""Many processes, one training run: torchrun's environment, the process group, and the few
collectives the training loop needs. With one process every helper is a no-op.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR / MASTER_PORT) for each worker;
`hybrid train` joins the group when WORLD_SIZE > 1: NCCL on CUDA (one GPU per local rank), gloo on
the CPU. The global batch of B streams is fixed by the config; rank r trains on streams
[r * B / W, (r + 1) * B / W), so the data a step sees does not depend on the world size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from hybrid.runtime.errors import HybridError


def launch_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) for a plain launch."""

    def get(name: str, default: int) -> int:
        v = os.environ.get(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise HybridError(f"environment variable {name}={v!r} is not an integer") from None

    rank, world, local = get("RANK", 0), get("WORLD_SIZE", 1), get("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise HybridError(f"RANK={rank} and WORLD_SIZE={world} do not describe a process group")
    return rank, world, local


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")  # where this process computes (and NCCL communicates)
    owns_group: bool = False  # this process created the group, so it destroys it at the end

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over processes of a tensor on this process's device."""
        if self.on:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather_rows(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every process's rows of each tensor, concatenated in rank order (the carried state of
        all B streams from each rank's B / W)."""
        if not self.on:
            return tensors
        import torch.distributed as dist

        out = {}
        for k, t in tensors.items():
            t = t.contiguous()
            parts = [torch.empty_like(t) for _ in range(self.world)]
            dist.all_gather(parts, t)
            out[k] = torch.cat(parts)
        return out

    def gather_each(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{"<rank>.<name>": tensor} for every process (the random-number states); same names and
        shapes on every rank. CPU tensors in and out."""
        if not self.on:
            return {f"0.{k}": t for k, t in tensors.items()}
        import torch.distributed as dist

        out = {}
        for k, t in sorted(tensors.items()):
            t = t.to(self.device).contiguous()
            parts = [torch.empty_like(t) for _ in range(self.world)]
            dist.all_gather(parts, t)
            out.update({f"{r}.{k}": p.cpu() for r, p in enumerate(parts)})
        return out

    def any(self, flag: bool) -> bool:
        """True on every process if `flag` is true on any (a collective: all must call it)."""
        if not self.on:
            return flag
        return self.all_sum(torch.tensor([float(flag)], device=self.device)).item() > 0

    def close(self, finished: bool = True) -> None:
        """Leave the group. `finished`: every rank got here normally (not an error path, where a
        peer may still be inside a collective that a barrier would be mistaken for)."""
        if self.owns_group:
            import torch.distributed as dist

            # Leave together: a gloo rank whose peer already tore down its sockets can die in
            # std::terminate while destroying the group (seen as SIGABRT in some test runs here).
            # Bounded, and never an error of its own: a peer that failed after the last collective
            # skips the barrier, and its error is the one to report.
            if finished:
                try:
                    if dist.get_backend() == "gloo":
                        dist.monitored_barrier(timeout=timedelta(seconds=60))
                    else:
                        dist.barrier()
                except Exception:
                    pass
            dist.destroy_process_group()
            self.owns_group = False


def setup(device: torch.device) -> Dist:
    """Join torchrun's process group when WORLD_SIZE > 1; on CUDA each local rank takes its GPU."""
    rank, world, local = launch_env()
    if world == 1:
        return Dist(device=device)
    import torch.distributed as dist

    if device.type == "cuda":
        if device.index is None:  # `--device auto/cuda`: one GPU per local rank
            device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), device, owns_group=False)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend=backend)
    except Exception as e:  # rendezvous failures come as several exception types
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
        raise HybridError(
            f"could not join the process group ({backend}, rank {rank} of {world}): {first[:200]}"
        ) from None
    return Dist(dist.get_rank(), dist.get_world_size(), device, owns_group=True)
