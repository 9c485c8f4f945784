"""Many processes: torchrun's environment and FSDP2, one fully_shard unit per block.

Nothing here moves tensors between ranks by hand: sharding is torch.distributed.fsdp's
fully_shard, checkpoints are torch.distributed.checkpoint, and the one reduction the loop
needs (the logged loss) is torch.distributed.all_reduce. Tensor parallelism (--tp) is not
implemented: the emitted attention splits heads by the configured count, which a
column-sharded projection would silently break.
"""

from __future__ import annotations

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


def shard(model: nn.Module, world: World) -> None:
    """FSDP2 over all ranks: each block is its own fully_shard unit, and the root holds the
    embeddings, final norm and head. Call on a meta-device model, before materialize()."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (world.size,), mesh_dim_names=("dp",))
    for block in blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


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
