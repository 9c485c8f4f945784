"""Deterministic initialisation, one parameter at a time, identical on any number of ranks.

A model built on the meta device has no values. Each parameter is then initialised on its
own: the emitted model's init_weights() runs on a meta-device probe in which only that
parameter is real, under a generator seeded by (seed, parameter name). So the rule is the
model's own (normal matrices, unit norm scales, zero biases, muP zero readouts, DeepNorm
row scaling), the value of a parameter depends only on its name and the seed, and a rank
holding a shard computes the parameter and keeps its own slice (distribute_tensor with
src_data_rank=None: no communication). Peak extra memory is one full parameter.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .errors import TrainingError


def parameter_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _swap(module: nn.Module, name: str, value: nn.Parameter) -> nn.Parameter:
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    old = owner._parameters[leaf]
    owner._parameters[leaf] = value
    return old


@contextlib.contextmanager
def _meta_init_is_free() -> Iterator[None]:
    """nn.init on a meta tensor does nothing but costs ~2 ms (it runs through Python references);
    the probe makes P*P such calls, so they return at once while the probe runs."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}

    def skipping(fn):
        return lambda tensor, *args, **kwargs: tensor if tensor.is_meta else fn(tensor, *args, **kwargs)

    try:
        for name, fn in saved.items():
            setattr(nn.init, name, skipping(fn))
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


_INIT_FUNCTIONS = ("normal_", "zeros_", "ones_", "uniform_", "constant_", "trunc_normal_")


def full_value(probe: nn.Module, name: str, shape: torch.Size, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """The value init_weights gives parameter `name` under seed (seed, name)."""
    real = nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=False)
    old = _swap(probe, name, real)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(parameter_seed(seed, name))
        with torch.no_grad(), _meta_init_is_free():
            probe.init_weights()
    finally:
        torch.random.set_rng_state(state)
        _swap(probe, name, old)
    return real.data


def materialize(model: nn.Module, build: Callable[..., nn.Module], seed: int, device: str = "cpu") -> None:
    """Allocate a meta-device (possibly sharded) model on `device` and initialise every parameter."""
    if any(True for _ in model.buffers()):
        names = [n for n, _ in model.named_buffers()][:3]
        raise TrainingError(f"the model has buffers ({', '.join(names)}), which meta-device init cannot fill")
    model.to_empty(device=device)
    probe = build(device="meta")
    if not callable(getattr(probe, "init_weights", None)):
        raise TrainingError("the emitted model has no init_weights(); recompile it with this taxonc")
    for name, param in model.named_parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        full = full_value(probe, name, param.shape, param.dtype, seed)
        if hasattr(param, "device_mesh"):
            from torch.distributed.tensor import distribute_tensor

            full = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None).to_local()
        with torch.no_grad():
            local.copy_(full.to(local.device))
