"""The one list of graph op kinds, with the arity each must have."""

from __future__ import annotations

from enum import Enum


class Op(str, Enum):
    TOKEN_EMBED = "token_embed"        # ids -> x; params weight[V, D]
    POS_EMBED = "pos_embed"            # x -> x + positions (learned table or sinusoid)
    NORM = "norm"                      # x -> normed x
    LINEAR = "linear"                  # x -> x W^T (+ b), optional fused activation epilogue
    SPLIT = "split"                    # one tensor -> several along the last dim
    ROTARY = "rotary"                  # (q, k) -> rotated (q, k)
    ATTENTION = "attention"            # (q, k, v) -> heads merged; mask/bias/positions as attributes
    ACTIVATION = "activation"          # elementwise (relu, gelu, solu)
    GLU = "glu"                        # (gate, up) -> act(gate) * up
    ADD = "add"                        # residual sum of 2 or 3 inputs, optional scale on the first
    ADD_NORM = "add_norm"              # fused residual add then norm: outputs (sum, normed)
    MOE = "moe"                        # x -> mixture-of-experts MLP
    GATE = "gate"                      # tanh-gated branch (Flamingo)
    RESAMPLER = "resampler"            # media -> latent tokens (Flamingo)
    NEIGHBOUR_ENCODER = "neighbour_encoder"  # (neighbour ids, chunk states) -> encoded neighbours (RETRO)
    CHUNKED_XATTN = "chunked_xattn"    # (x, encoded neighbours) -> chunked cross-attention (RETRO)
    LM_HEAD = "lm_head"                # x -> logits


# (min inputs, max inputs, outputs); None means "any number >= min"
ARITY: dict[Op, tuple[int, int | None, int | None]] = {
    Op.TOKEN_EMBED: (1, 1, 1),
    Op.POS_EMBED: (1, 1, 1),
    Op.NORM: (1, 1, 1),
    Op.LINEAR: (1, 1, 1),
    Op.SPLIT: (1, 1, None),
    Op.ROTARY: (2, 2, 2),
    Op.ATTENTION: (3, 4, 1),  # q, k, v and an optional shared position table
    Op.ACTIVATION: (1, 1, 1),
    Op.GLU: (2, 2, 1),
    Op.ADD: (2, 3, 1),
    Op.ADD_NORM: (2, 3, 2),
    Op.MOE: (1, 1, 1),
    Op.GATE: (1, 1, 1),
    Op.RESAMPLER: (1, 1, 1),
    Op.NEIGHBOUR_ENCODER: (2, 2, 1),
    Op.CHUNKED_XATTN: (2, 2, 1),
    Op.LM_HEAD: (1, 1, 1),
}
