"""Per-token training losses and the auxiliary terms the recipe adds."""

from __future__ import annotations

import torch


def token_losses(logits: torch.Tensor, targets: torch.Tensor, z_loss: float = 0.0) -> torch.Tensor:
    """Cross-entropy per token (in fp32), plus PaLM's z-loss z_loss * log(Z)^2 (Chowdhery et al.
    2022, section 5), which pulls the softmax normaliser log(Z) towards 0."""
    logits = logits.float()
    log_z = torch.logsumexp(logits, dim=-1)
    ce = log_z - logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return ce + z_loss * log_z.square() if z_loss else ce


def micro_batch_loss(model: torch.nn.Module, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None,
                     counted: int, z_loss: float, load_balance_weight: float, micro_batches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss to backpropagate, the summed cross-entropy to log) of one micro-batch.

    The token term is this micro-batch's share of the whole step's mean over `counted` tokens
    (masked tokens do not count), so summing over micro-batches and ranks gives the mean. The
    MoE load-balancing term (Shazeer et al. 2017; Fedus et al. 2021, eq. 4), which the model
    computes in its forward pass, is averaged over the step's `micro_batches`.
    """
    ce = token_losses(logits, targets)
    per_token = ce + z_loss * torch.logsumexp(logits.float(), dim=-1).square() if z_loss else ce
    if mask is not None:
        per_token, ce = per_token * mask, ce * mask
    loss = per_token.sum() / max(counted, 1)
    if load_balance_weight and callable(getattr(model, "aux_loss", None)):
        loss = loss + load_balance_weight * model.aux_loss() / micro_batches
    return loss, ce.detach().sum()
