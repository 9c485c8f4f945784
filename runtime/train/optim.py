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


def param_groups(model: torch.nn.Module, weight_decay: float, lr_mult: dict[str, float] | None = None) -> list[dict]:
    """Groups by (decays, learning-rate multiplier): decayed first, then the rest; each group keeps
    its multiplier under "lr_mult" (muP; 1.0 otherwise) for set_lr."""
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((decays(p), (lr_mult or {}).get(name, 1.0)), []).append(p)
    order = sorted(groups, key=lambda k: (not k[0], -k[1]))
    return [{"params": groups[k], "weight_decay": weight_decay if k[0] else 0.0, "lr_mult": k[1]} for k in order]


def build_optimizer(model: torch.nn.Module, config: OptimizerConfig, lr: float,
                    lr_mult: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """The optimizer at learning rate `lr`; the loop sets each group's lr every step."""
    groups = param_groups(model, config.weight_decay, lr_mult)
    if config.kind is OptimizerKind.ADAMW:
        # foreach=False: one code path whether or not parameters are DTensors, so sharded and
        # single-process runs do the same arithmetic
        return torch.optim.AdamW(groups, lr=lr, betas=config.betas, eps=config.eps, foreach=False)
    if config.kind is OptimizerKind.ADAFACTOR:
        return torch.optim.Adafactor(groups, lr=lr, foreach=False)
    return torch.optim.SGD(groups, lr=lr, foreach=False)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def clip_gradients(model: torch.nn.Module, max_norm: float | None) -> float:
    """Scale gradients so their global norm is at most `max_norm`; returns the norm before.

    The norm of a sharded gradient (FSDP, tensor parallelism) is its DTensor norm made whole
    with full_tensor(), so plain and sharded parameters can be mixed, as tensor parallelism
    mixes them; the scale is torch's clip_grad_norm_ rule, max_norm / (norm + 1e-6) capped at 1.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    norms = []
    for g in grads:
        n = torch.linalg.vector_norm(g, dtype=torch.float32)
        norms.append(n.full_tensor() if hasattr(n, "full_tensor") else n)
    total = float(torch.linalg.vector_norm(torch.stack(norms)))
    if max_norm is not None:
        scale = min(1.0, max_norm / (total + 1e-6))
        if scale < 1.0:
            with torch.no_grad():
                for g in grads:
                    g.mul_(scale)
    return total
