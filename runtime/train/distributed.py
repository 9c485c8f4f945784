"""Many processes: torchrun's environment, FSDP2 (one fully_shard unit per block) and tensor
parallelism (DTensor parallelize_module on attention and MLP projections).

Nothing here moves tensors between ranks by hand: sharding is torch.distributed.fsdp's
fully_shard and DTensor's parallel styles, checkpoints are torch.distributed.checkpoint, and
the reductions the loop needs (the logged loss, failures) are all_reduce and all_gather_object.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from .errors import TrainingError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def start() -> World:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPUs); one process needs none."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def stop(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def sum_across(world: World, value: torch.Tensor) -> torch.Tensor:
    if world.distributed:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
    return value


def blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks: every module held in a ModuleList attribute of the model or its stacks."""
    found = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            found.extend(module)
    return found


def shard(model: nn.Module, world: World, tp: int = 1) -> None:
    """Tensor parallelism over groups of `tp` ranks (tp > 1), then FSDP2 over the data-parallel
    ranks (size / tp > 1): each block is its own fully_shard unit, and the root holds the
    embeddings, final norm and head. Call on a meta-device model, before materialize()."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if world.size % tp:
        raise TrainingError(f"--tp {tp} does not divide the {world.size} processes")
    device, dp = ("cuda" if torch.cuda.is_available() else "cpu"), world.size // tp
    mesh = init_device_mesh(device, (dp, tp), mesh_dim_names=("dp", "tp"))
    if tp > 1:
        _tensor_parallel(model, mesh["tp"])
    if dp > 1:
        for block in blocks(model):
            fully_shard(block, mesh=mesh["dp"])
        fully_shard(model, mesh=mesh["dp"])


COLUMNWISE = ("q", "k", "v", "mlp_in", "mlp_gate", "mlp_up")  # input projections: split by output
ROWWISE = ("attn_out", "mlp_out")  # output projections: split by input, summed across ranks
FUSED = ("qkv", "mlp_gate_up", "attn_mlp_in")


def _tensor_parallel(model: nn.Module, mesh) -> None:
    """Megatron's split of each block with DTensor's parallelize_module: input projections
    column-wise (their outputs stay DTensors sharded by head, so the emitted code's head split
    keeps whole heads), output projections row-wise. Fused projections cannot be split this way:
    the model is compiled without fusion passes for tensor parallelism."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    for block in blocks(model):
        names = {name for name, _ in block.named_children()}
        if names & set(FUSED):
            raise TrainingError(f"tensor parallelism needs unfused projections; this model has {sorted(names & set(FUSED))}")
        plan = {n: ColwiseParallel(use_local_output=False) for n in COLUMNWISE if n in names}
        plan.update({n: RowwiseParallel() for n in ROWWISE if n in names})
        if plan:
            parallelize_module(block, mesh, plan)


def sharded_compute(tp: int):
    """The context a tensor-parallel forward and backward run in: plain tensors (rotary tables,
    masks) act as replicated DTensors, and attention uses the math kernel, which DTensor can
    split by head (the CPU flash kernel has no sharding rule)."""
    if tp <= 1:
        return contextlib.nullcontext()
    from torch.distributed.tensor.experimental import implicit_replication
    from torch.nn.attention import SDPBackend, sdpa_kernel

    stack = contextlib.ExitStack()
    stack.enter_context(implicit_replication())
    stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
    return stack


def together(world: World, work: Callable[[], T]) -> T:
    """Run `work` on every rank (it may do nothing off rank 0), then compare outcomes: if any rank
    failed, every rank fails, the failing one with its own exception, the others with its message.

    This is where a barrier would otherwise stand: a rank that raised before a barrier would
    leave the others waiting in it for ever. Outcomes travel with all_gather_object."""
    result, failure = None, None
    try:
        result = work()
    except Exception as exc:  # re-raised below, unchanged, on the rank that raised it
        failure = exc
    if world.distributed:
        import torch.distributed as dist

        messages: list[str | None] = [None] * world.size
        dist.all_gather_object(messages, None if failure is None else str(failure))
        if failure is None:
            rank, message = next(((r, m) for r, m in enumerate(messages) if m is not None), (None, None))
            if message is not None:
                raise TrainingError(f"rank {rank} failed: {message}")
    if failure is not None:
        raise failure
    return result


def on_main(world: World, work: Callable[[], T]) -> T | None:
    """`work` on rank 0 only, with `together`'s failure handling; None on the other ranks."""
    return together(world, lambda: work() if world.main else None)
