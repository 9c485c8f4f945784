"""Optimizers from the recipe: AdamW (no decay on norms and biases), Adafactor, SGD; gradient clipping."""

from __future__ import annotations

import torch

from .recipe import OptimizerConfig, OptimizerKind


def decays(param: torch.Tensor) -> bool:
    """Weight decay applies to matrices and embeddings, never to norm scales, biases or gates.

    Told apart by rank, not by name: every emitted model keeps those as 1-D parameters (its own
    init_weights uses the same test), and a rank survives FSDP and DTensor wrapping, which
    rename nothing but hide shapes behind shards. Stacked MoE expert weights are 3-D and decay.
    """
    return param.dim() >= 2


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for _, p in named if decays(p)]
    keep = [p for _, p in named if not decays(p)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, config: OptimizerConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer at learning rate `lr`; the loop sets each group's lr every step."""
    groups = param_groups(model, config.weight_decay)
    if config.kind is OptimizerKind.ADAMW:
        # foreach=False: one code path whether or not parameters are DTensors, so sharded and
        # single-process runs do the same arithmetic
        return torch.optim.AdamW(groups, lr=lr, betas=config.betas, eps=config.eps, foreach=False)
    if config.kind is OptimizerKind.ADAFACTOR:
        return torch.optim.Adafactor(groups, lr=lr, foreach=False)
    return torch.optim.SGD(groups, lr=lr, foreach=False)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_gradients(model: torch.nn.Module, max_norm: float | None) -> float:
    """Clip the global gradient norm (across shards, through DTensor); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None:
        max_norm = float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)
